"""Floods and slow clients against a simulator process: a connection cap and deadlines on requests.

Timeouts are shortened by flag so each attack resolves within seconds; the assertions are on
what the server answers, never on how long it took.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Final

import pytest
from sim_process import AGENTS, SimProcess

from spacetime_rl.protocol import wire

MAX_CONNECTIONS: Final = 8
HEADER_TIMEOUT: Final = 0.5
BODY_TIMEOUT: Final = 0.5
MAX_BODY: Final = 4096
WAIT: Final = 30.0  # seconds a test socket waits for an answer before the test fails


@pytest.fixture(scope="module")
def server() -> Iterator[SimProcess]:
    started = SimProcess(
        *("--agents", str(AGENTS), "--scene", wire.DEFAULT_SCENE),
        *("--max-connections", str(MAX_CONNECTIONS), "--header-timeout", str(HEADER_TIMEOUT)),
        *("--body-timeout", str(BODY_TIMEOUT), "--max-body-bytes", str(MAX_BODY)),
    )
    yield started
    started.stop()


def connect(server: SimProcess) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=WAIT)


def answer(sock: socket.socket) -> tuple[int, dict[str, str]]:
    """Read one whole answer that closes the connection: (status, JSON body)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def health(sock: socket.socket) -> bytes:
    """GET /health on a kept-alive connection; the status line of the answer."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < length(data):
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionResetError(f"closed after {data!r}")
        data += chunk
    return data.split(b"\r\n", 1)[0]


def length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_headers_dripping_past_the_deadline_get_408_and_the_connection_closes(server: SimProcess) -> None:
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")
        status, body = answer(sock)
    assert status == 408
    assert "--header-timeout" in body["error"]
    server.assert_healthy()


def test_a_kept_alive_connection_s_next_request_dripping_past_the_deadline_gets_408(
    server: SimProcess,
) -> None:
    """The clock starts at a later request's first byte too, not only at the connection's opening."""
    with connect(server) as sock:
        assert health(sock) == b"HTTP/1.1 200 OK"
        time.sleep(2 * HEADER_TIMEOUT)  # idle between requests: no clock
        sock.sendall(b"GET /health HTTP/1.1\r\nHo")
        status, body = answer(sock)
    assert status == 408
    assert "--header-timeout" in body["error"]


def test_a_partial_request_pipelined_behind_a_whole_one_gets_408_after_its_answer(server: SimProcess) -> None:
    """Bytes that end one request and begin the next: the clock runs for the unfinished one."""
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGET /health HTTP/1.1\r\nHo")
        data = b""
        while b"HTTP/1.1 408" not in data:
            chunk = sock.recv(1 << 16)
            assert chunk, f"closed without a 408 after {data!r}"
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK")
    assert b"--header-timeout" in data


def test_a_silent_new_connection_is_closed_with_408(server: SimProcess) -> None:
    with connect(server) as sock:
        status, _ = answer(sock)
    assert status == 408


def test_an_idle_kept_alive_connection_stays_open_between_requests(server: SimProcess) -> None:
    """A trainer says nothing during a PPO update: only a request under way is on the clock."""
    with connect(server) as sock:
        assert health(sock) == b"HTTP/1.1 200 OK"
        time.sleep(4 * HEADER_TIMEOUT)
        assert health(sock) == b"HTTP/1.1 200 OK"


def test_pipelined_requests_are_all_answered_in_order(server: SimProcess) -> None:
    count = 500
    with connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * count)
        data = b""
        while data.count(b'"status":"ok"') < count:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {data.count(b'HTTP/1.1 200')} answers"
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == count
    server.assert_healthy()


def test_a_body_that_never_arrives_gets_408(server: SimProcess) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /scene/load HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        status, body = answer(sock)
    assert status == 408
    assert "--body-timeout" in body["error"]


def test_a_huge_content_length_is_answered_413_at_once(server: SimProcess) -> None:
    with connect(server) as sock:
        sock.sendall(
            b"POST /scene/load HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000000\r\n\r\n"
        )
        data = sock.recv(65536)
    status_line, _, body = data.partition(b"\r\n\r\n")
    assert status_line.split()[1] == b"413"
    assert f"{MAX_BODY} bytes" in json.loads(body)["error"]


def test_connections_past_the_cap_get_503_and_a_freed_slot_serves_again(server: SimProcess) -> None:
    with ExitStack() as stack:
        held = [stack.enter_context(connect(server)) for _ in range(MAX_CONNECTIONS)]
        for sock in held:  # each has been accepted and answered, so all of them count
            assert health(sock) == b"HTTP/1.1 200 OK"
        with connect(server) as extra:
            status, body = answer(extra)
        assert status == 503
        assert "--max-connections" in body["error"]
        held.pop().close()
        for _ in range(100):  # the server sees the close a moment later
            with connect(server) as sock:
                if health(sock) == b"HTTP/1.1 200 OK":
                    break
            time.sleep(0.05)
        else:
            pytest.fail("a freed slot was never served")


def test_sigterm_stops_the_server_while_a_request_waits_for_its_body() -> None:
    """aiohttp waits 60 s for requests under way at shutdown; the simulator waits 2 (SHUTDOWN_TIMEOUT)."""
    server = SimProcess()
    with connect(server) as sock:
        sock.sendall(
            b"POST /scene/load HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000000000000\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")
        server.process.terminate()
        assert server.process.wait(WAIT) == 0
