"""A simulator subprocess (`python -m spacetime_rl.sim`) for tests that attack it over real sockets."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
from typing import Final

import numpy as np

from spacetime_rl.protocol import wire

TOKEN: Final = "fuzz-token"
AGENTS: Final = 4
AUTH: Final = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


class SimProcess:
    """`python -m spacetime_rl.sim` on a free port; `request()` sends one request on a new connection."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spacetime_rl.sim", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.startswith("spacetime-sim listening on http://"), line + self.process.stderr.read()
        self.url = line.split()[-1]
        self.host, port = self.url.removeprefix("http://").rsplit(":", 1)
        self.port = int(port)
        self.requests = 0
        self.statuses: dict[int, int] = {}

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            answer = connection.getresponse()
            status, data = answer.status, answer.read()
        finally:
            connection.close()
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        return status, data

    def raw(self, data: bytes) -> bytes:
        """Send `data` as is; return the status line (b"" if the server just closed the connection)."""
        with socket.create_connection((self.host, self.port), timeout=30) as sock:
            sock.sendall(data)
            sock.settimeout(1.0)
            try:
                answer = sock.recv(65536)
            except TimeoutError:  # it waits for the rest of a body that will never come: end it
                sock.settimeout(30)
                sock.shutdown(socket.SHUT_WR)
                answer = b""
            while b"\r\n" not in answer and (chunk := sock.recv(65536)):
                answer += chunk
        self.requests += 1
        return answer.split(b"\r\n", 1)[0]

    def assert_healthy(self) -> None:
        assert self.process.poll() is None, self.process.stderr.read() if self.process.stderr else ""
        status, _ = self.request("GET", "/health")
        assert status == 200
        status, data = self.request(
            "POST", "/scene/load", json.dumps({"scene": wire.DEFAULT_SCENE}).encode(), AUTH
        )
        assert status == 200, data
        actions = {"actions": [[0.0, 1.0, 0.5]] * AGENTS, "auto_reset": True}
        status, data = self.request("POST", "/rl/step", json.dumps(actions).encode(), AUTH)
        assert status == 200, data
        observations = np.asarray(json.loads(data)["observations"])
        assert observations.shape == (AGENTS, wire.OBSERVATION_SIZE) and np.isfinite(observations).all()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
