"""Start the embedded simulator in subprocesses on free loopback ports, or attach to a running Godot."""

from __future__ import annotations

import atexit
import contextlib
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from spacetime_rl.config import EnvConfig
from spacetime_rl.errors import ConfigError, GodotConnectionError, GodotTimeoutError
from spacetime_rl.godot import wire

__all__ = ["ServerPool", "launch_servers"]

log = logging.getLogger(__name__)

READY_PREFIX: Final = "spacetime-sim listening on "
_POLL_SECONDS: Final = 0.02
_STOP_GRACE_SECONDS: Final = 5.0
_STDERR_TAIL_CHARS: Final = 2000


class ServerPool:
    """Simulator subprocesses, one per environment; `start()` returns their URLs, `stop()` ends them.

    Servers start concurrently. Each one's stdout and stderr go to files in a private temporary
    directory (a pipe nobody reads could fill up and stall the server); the ready line is read
    from the stdout file. `stop()` also runs at interpreter exit, so a crash leaves no orphans.
    """

    def __init__(
        self,
        config: EnvConfig,
        *,
        count: int | None = None,
        agents: int | None = None,
        seed: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.config = config
        self.count = config.num_environments if count is None else count
        self.agents = config.agents_per_environment if agents is None else agents
        self.seed = seed
        self.verbose = verbose
        self.urls: list[str] = []
        self._processes: list[subprocess.Popen[bytes]] = []
        self._logs: Path | None = None

    def __enter__(self) -> list[str]:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> list[str]:
        if self.config.kind == "godot":
            return self._attach()
        self._logs = Path(tempfile.mkdtemp(prefix="spacetime-sim-"))
        atexit.register(self.stop)
        try:
            for index in range(self.count):
                self._processes.append(self._spawn(index))
            self.urls = [self._wait_ready(index, process) for index, process in enumerate(self._processes)]
        except BaseException:
            self.stop()
            raise
        if self.verbose:
            log.info("started %d simulator(s) x %d agents: %s", self.count, self.agents, ", ".join(self.urls))
        return self.urls

    def stop(self) -> None:
        """Terminate every server (SIGTERM), then kill those still running after a grace period."""
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for process in self._processes:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()
        if self._logs is not None:
            shutil.rmtree(self._logs, ignore_errors=True)
            self._logs = None
        atexit.unregister(self.stop)

    def _attach(self) -> list[str]:
        if self.count != 1 or not self.config.url:
            raise ConfigError(
                f"env.num_environments={self.count} with env.kind=godot: attaching supports one running "
                "Godot at env.url for now; set env.num_environments=1"
            )
        self.urls = [self.config.url]
        return self.urls

    def _command(self, index: int) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "spacetime_rl.sim",
            "--host",
            wire.DEFAULT_HOST,
            "--port",
            "0",
            "--agents",
            str(self.agents),
            "--scene",
            self.config.scene,
            "--action-repeat",
            str(self.config.action_repeat),
        ]
        if self.seed is not None:
            command += ["--seed", str(self.seed + index)]
        if self.config.token:
            command += ["--token", self.config.token]
        return command

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        assert self._logs is not None
        with (
            open(self._logs / f"{index}.out", "wb") as stdout,
            open(self._logs / f"{index}.err", "wb") as stderr,
        ):
            return subprocess.Popen(
                self._command(index), stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr
            )

    def _wait_ready(self, index: int, process: subprocess.Popen[bytes]) -> str:
        assert self._logs is not None
        stdout = self._logs / f"{index}.out"
        timeout = self.config.connect_timeout
        deadline = time.monotonic() + timeout
        while True:
            line = stdout.read_bytes().decode(errors="replace").partition("\n")
            if line[1] and line[0].startswith(READY_PREFIX):
                return line[0][len(READY_PREFIX) :].strip()
            if line[1]:
                raise self._failure(
                    index, GodotConnectionError, f"printed {line[0]!r} instead of its ready line"
                )
            if process.poll() is not None:
                raise self._failure(index, GodotConnectionError, f"exited with code {process.returncode}")
            if time.monotonic() > deadline:
                raise self._failure(
                    index,
                    GodotTimeoutError,
                    f"was not ready within env.connect_timeout={timeout:g} s; raise env.connect_timeout "
                    "on a slow or busy machine",
                )
            time.sleep(_POLL_SECONDS)

    def _failure(self, index: int, kind: type[Exception], what: str) -> Exception:
        assert self._logs is not None
        stderr = (self._logs / f"{index}.err").read_bytes().decode(errors="replace")
        tail = stderr[-_STDERR_TAIL_CHARS:].strip() or "(empty)"
        return kind(f"Simulator {index} (python -m spacetime_rl.sim) {what}. Its stderr:\n{tail}")


@contextlib.contextmanager
def launch_servers(
    config: EnvConfig,
    *,
    count: int | None = None,
    agents: int | None = None,
    seed: int | None = None,
    verbose: bool = False,
) -> Iterator[list[str]]:
    """URLs of `count` (default env.num_environments) servers for the block; simulators stop after it."""
    with ServerPool(config, count=count, agents=agents, seed=seed, verbose=verbose) as urls:
        yield urls
