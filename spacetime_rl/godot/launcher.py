"""The launcher: the servers training talks to, simulators or headless Godots it starts, or a Godot
it attaches to.

`ServerPool` starts `python -m spacetime_rl.sim` (env=sim) or `env.executable --headless` (env=godot
with env.executable) on free loopback ports, waits for each one's ready line and `/health` (through
`GodotClient`), restarts one that fails (bounded and rate-limited) and stops them all at exit. Before
the first Godot starts, a project whose script class cache lacks the addon is imported once
(`godot --headless --path PROJECT --import`). With
env=godot and env.url it attaches to running servers instead (env.url's list, or its first `count`
for evaluation), and recovering means waiting for the faulty one with backoff. `recovery(connect)` is what `SpaceTimeVecEnv` calls when a server faults.
With env.launcher=ray, `server_pool` gives a `RayServerPool` (godot/ray_pool.py) instead: the same
interface, its servers Ray actors on a cluster's nodes.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Final

from spacetime_rl.config import EnvConfig
from spacetime_rl.errors import ConfigError, GodotConnectionError, GodotError, GodotTimeoutError
from spacetime_rl.godot.client import GodotClient, Timeouts
from spacetime_rl.protocol import access, wire

__all__ = ["Recovery", "ServerPool", "launch_servers", "server_pool"]

log = logging.getLogger(__name__)

_POLL_SECONDS: Final = 0.02
_STOP_GRACE_SECONDS: Final = 5.0
_STDERR_TAIL_CHARS: Final = 2000
#: Headless Godots never drive a headset; an XR-enabled project would otherwise try to start OpenXR.
_GODOT_HEADLESS: Final = ("--headless", "--xr-mode", "off")
#: Where Godot's import records the project's `class_name` scripts. A headless run before the first
#: import cannot resolve them ("Identifier 'RLEnvironment' not declared", godot#75684), so a cache
#: without the addon's autoload script means: import first.
CLASS_CACHE: Final = Path(".godot") / "global_script_class_cache.cfg"
ADDON_SCRIPT: Final = "res://addons/spacetime_rl/rl_service.gd"
#: A first import converts every asset of the project; large projects take minutes.
_IMPORT_TIMEOUT_SECONDS: Final = 900.0

#: Called with a server's index and the fault; returns a fresh transport to that server's URL.
Recovery = Callable[[int, GodotError], Awaitable[Any]]


class ServerPool:
    """Server subprocesses, one per environment; `start()` returns their URLs, `stop()` ends them.

    Servers start concurrently. Each one runs in its own process group (so a terminal's Ctrl-C
    reaches only train.py, which saves before stopping them, and a Godot's children die with it);
    its stdout and stderr go to files in a private temporary directory (a pipe nobody reads could
    fill up and stall the server), and the ready line is read from the stdout file. `stop()` also
    runs at interpreter exit, so a crash leaves no orphans. `start()` runs its own event loop for the
    health checks, so it is called outside one; `restart()` is awaited inside the VecEnv's.
    """

    def __init__(
        self,
        config: EnvConfig,
        *,
        count: int | None = None,
        agents: int | None = None,
        seed: int | None = None,
        verbose: bool = False,
        role: str = "",
        host: str = wire.DEFAULT_HOST,
        cores: frozenset[int] | None = None,
    ) -> None:
        self.config = config
        self.role = role  # "train" or "eval": which servers these are, in messages
        self.count = config.servers if count is None else count
        self.agents = config.agents if agents is None else agents
        self.seed = seed
        self.verbose = verbose
        self.host = host  # the address servers listen on (a Ray node's, to be reached from others)
        self.cores = cores  # the CPU cores every launched server runs on now (None: wherever the OS puts it)
        # The cores they were started on, which `place` may move them off and back to (the record's).
        self.pinned_cores = cores
        # Where an unplaced server may run: this process's cores, taken before any rollout pins its thread.
        self._usable = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        self.urls: list[str] = []
        self.restarts = 0  # servers restarted after a fault, over the pool's life
        self._processes: list[subprocess.Popen[bytes]] = []
        self._recent_restarts: collections.deque[float] = collections.deque()
        self._logs: Path | None = None

    def __enter__(self) -> list[str]:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def launched(self) -> bool:
        return not self.config.attached

    @property
    def name(self) -> str:
        """What the servers are, for messages."""
        if self.config.kind == "sim":
            return "python -m spacetime_rl.sim"
        return f"{self.config.executable} (env.executable)" if self.launched else "env.url"

    def describe(self, url: str) -> str:
        """The server at `url` for messages: its role, index, port and process (`train server 0 ...`),
        or attached, its index, URL and key (`train server 1 at http://... (env.url[1])`)."""
        role = f"{self.role} " if self.role else ""
        if url not in self.urls:
            return f"{role}server {url} ({self.name})"
        index = self.urls.index(url)
        if not self.launched:
            return f"{role}server {index} at {url} ({self.config.url_name(index)})"
        port = url.rsplit(":", 1)[-1]
        return f"{role}server {index} ({self.name}, port {port}, pid {self._processes[index].pid})"

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes]

    def start(self) -> list[str]:
        if not self.launched:
            return self._attach()
        if self.config.kind == "godot":
            self._import_project()
        self._logs = Path(tempfile.mkdtemp(prefix="spacetime-servers-"))
        atexit.register(self.stop)
        try:
            self._processes = [self._spawn(index) for index in range(self.count)]
            self.urls = asyncio.run(self._wait_all_ready())
        except BaseException:
            self.stop()
            raise
        if self.verbose:
            log.info("started %d server(s) x %d agents: %s", self.count, self.agents, ", ".join(self.urls))
        return self.urls

    def stop(self) -> None:
        """Terminate every server's process group (SIGTERM), then kill what still runs after a grace period."""
        for process in self._processes:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_SECONDS
        for process in self._processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=max(deadline - time.monotonic(), 0.0))
            _signal_group(process, signal.SIGKILL)  # the group may outlive its leader
            process.wait()
        self._processes.clear()
        if self._logs is not None:
            shutil.rmtree(self._logs, ignore_errors=True)
            self._logs = None
        atexit.unregister(self.stop)

    async def restart(self, index: int, fault: GodotError | None = None) -> str:
        """Kill server `index` and start it again; returns its new URL.

        Raises `GodotConnectionError` once env.max_restarts restarts happened within
        env.restart_window seconds: a server that keeps failing is broken, not unlucky.
        """
        self._count_restart(index, fault)
        process = self._processes[index]
        _signal_group(process, signal.SIGKILL)  # it failed: nothing of its state is worth a grace period
        process.wait()
        self._processes[index] = self._spawn(index)
        self.urls[index] = await self._wait_ready(index)
        log.warning(
            "restarted %s after a fault; its agents' episodes were truncated", self.describe(self.urls[index])
        )
        return self.urls[index]

    def record(self) -> dict[str, Any]:
        """What ran, for metrics.json: the launcher and each server's URL and process (attached: URLs)."""
        if not self.launched:
            return {"launcher": None, "servers": [{"url": url} for url in self.urls]}
        servers = [{"url": url, "pid": pid} for url, pid in zip(self.urls, self.pids, strict=True)]
        cores = sorted(self.pinned_cores) if self.pinned_cores else None
        return {"launcher": "local", "cores": cores, "servers": servers}

    def _count_restart(self, index: int, fault: GodotError | None) -> None:
        """Count a restart of server `index`, or raise once env.max_restarts are used up (`restart`)."""
        now = time.monotonic()
        while self._recent_restarts and now - self._recent_restarts[0] > self.config.restart_window:
            self._recent_restarts.popleft()
        if len(self._recent_restarts) >= self.config.max_restarts:
            raise GodotConnectionError(
                f"Gave up on {self.role + ' ' if self.role else ''}server {index} ({self.name}): "
                f"{len(self._recent_restarts)} restarts within "
                f"env.restart_window={self.config.restart_window:g} s already (env.max_restarts="
                f"{self.config.max_restarts}). Last fault: {fault}. Check the server's log, or raise "
                "env.max_restarts",
                url=self.urls[index] if index < len(self.urls) else "",
            )
        self._recent_restarts.append(now)
        self.restarts += 1

    def place(self, cores: frozenset[int] | None) -> None:
        """Run the launched servers on `cores` from now on, restarted ones too (None: on any core
        this process may use); `training.cpu_affinity` moves them between rollouts (Linux)."""
        self.cores = cores
        for process in self._processes:
            self._place(process.pid)

    def recovery(self, connect: Callable[[str], Any]) -> Recovery:
        """The VecEnv's fault handler: `connect(url)` makes a transport for a (re)started server."""

        async def restart(index: int, fault: GodotError) -> Any:
            return connect(await self.restart(index, fault))

        async def wait_for_server(index: int, fault: GodotError) -> Any:
            delay, waited = self.config.retry_backoff, 0.0
            for attempt in range(1, self.config.retries + 1):
                log.warning(
                    "%s faulted (%s); retry %d/%d in %g s",
                    self.describe(self.urls[index]),
                    fault,
                    attempt,
                    self.config.retries,
                    delay,
                )
                await asyncio.sleep(delay)
                waited += delay
                delay *= 2
                transport = connect(self.urls[index])
                if await transport.health_check():
                    return transport
                await transport.close()
            raise GodotConnectionError(
                f"{self.describe(self.urls[index])} did not recover: no healthy answer after "
                f"env.retries={self.config.retries} retries over {waited:g} s "
                f"(env.retry_backoff={self.config.retry_backoff:g}). Last fault: {fault}. Check that "
                f"server is running (curl {self.urls[index]}/health), then resume training",
                url=self.urls[index],
            )

        return restart if self.launched else wait_for_server

    # ---------------------------------------------------------------- internals

    def _attach(self) -> list[str]:
        """The first `count` URLs of env.url: all of them for training, the first for evaluation."""
        urls = self.config.urls
        if not 1 <= self.count <= len(urls):
            raise ConfigError(
                f"{self.count} attached servers asked for, but env.url lists {len(urls)}: add URLs to "
                "env.url, or set env.executable and env.project to let training start them"
            )
        self.urls = urls[: self.count]
        return self.urls

    def _import_project(self) -> None:
        """Run Godot's import once when env.project's script class cache does not list the addon yet."""
        assert self.config.executable and self.config.project
        cache = Path(self.config.project) / CLASS_CACHE
        if _lists_addon(cache):
            return
        command = [self.config.executable, *_GODOT_HEADLESS, "--path", self.config.project, "--import"]
        log.info("%s lacks %s: importing the project once (%s)", cache, ADDON_SCRIPT, " ".join(command))
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        except OSError as exc:
            raise ConfigError(
                f"env.executable={command[0]!r} cannot be started ({exc}): set it to the Godot binary"
            ) from exc
        try:
            output, _ = process.communicate(timeout=_IMPORT_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired as exc:
            _signal_group(process, signal.SIGKILL)
            process.wait()
            raise GodotTimeoutError(
                f"`{' '.join(command)}` did not finish within {_IMPORT_TIMEOUT_SECONDS:g} s; run it by hand once"
            ) from exc
        if not _lists_addon(cache):
            tail = output.decode(errors="replace")[-_STDERR_TAIL_CHARS:].strip() or "(empty)"
            raise ConfigError(
                f"env.project={self.config.project!r}: `{' '.join(command)}` exited with code "
                f"{process.returncode} and {cache} still does not list {ADDON_SCRIPT}. Copy the addon to "
                f"{Path(self.config.project) / 'addons' / 'spacetime_rl'} (docs/godot.md). Its output:\n{tail}"
            )

    def _command(self, index: int) -> list[str]:
        seed = None if self.seed is None else self.seed + index
        if self.config.kind == "godot":
            assert self.config.executable and self.config.project
            return [
                self.config.executable,
                *_GODOT_HEADLESS,
                "--path",
                self.config.project,
                "--",
                f"--rl-host={self.host}",
                *([] if access.is_loopback(self.host) else [f"--rl-allowed-host={self.host}"]),
                "--rl-port=0",
                f"--rl-agents={self.agents}",
                f"--rl-action-repeat={self.config.action_repeat}",
                f"--rl-scene={self.config.scene}",
                *([] if seed is None else [f"--rl-seed={seed}"]),
            ]
        command = [
            sys.executable,
            "-m",
            "spacetime_rl.sim",
            "--host",
            self.host,
            *([] if access.is_loopback(self.host) else ["--allowed-host", self.host]),
            "--port",
            "0",
            "--agents",
            str(self.agents),
            "--scene",
            self.config.scene,
            "--action-repeat",
            str(self.config.action_repeat),
            "--parent-pid",  # stops by itself if this process is killed before it can stop it
            str(os.getpid()),
        ]
        if seed is not None:
            command += ["--seed", str(seed)]
        if self.config.step_delay_ms:
            command += ["--step-delay-ms", f"{self.config.step_delay_ms:g}"]
        if spin := self.config.server_busy_poll():
            command += ["--busy-poll-us", str(round(spin * 1e6))]
        return command

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        assert self._logs is not None
        environment = dict(os.environ)
        if self.config.token:  # in the environment, not the command line: `ps` shows the latter
            environment[wire.TOKEN_VARIABLE] = self.config.token
        command = self._command(index)
        with (
            open(self._logs / f"{index}.out", "wb") as stdout,
            open(self._logs / f"{index}.err", "wb") as stderr,
        ):
            try:
                process = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=stdout,
                    stderr=stderr,
                    env=environment,
                    process_group=0,
                )
            except OSError as exc:
                raise ConfigError(
                    f"env.executable={command[0]!r} cannot be started ({exc}): set it to the Godot binary"
                ) from exc
        # before it starts threads, which inherit it (_wait_ready places any earlier ones)
        self._place(process.pid)
        return process

    def _place(self, pid: int) -> None:
        """Put every thread of server `pid` on `cores`, or unplaced on every core this process may use
        (not the spawning thread's: a restart during a pinned rollout spawns from the trainer's core)."""
        if self._usable is not None:
            _pin(pid, self.cores or self._usable)

    async def _wait_all_ready(self) -> list[str]:
        return [await self._wait_ready(index) for index in range(self.count)]

    async def _wait_ready(self, index: int) -> str:
        assert self._logs is not None
        process = self._processes[index]
        # A release export does not flush stdout on print, so the addon also writes the line to stderr.
        outputs = (self._logs / f"{index}.out", self._logs / f"{index}.err")
        timeout = self.config.connect_timeout
        deadline = time.monotonic() + timeout
        while True:
            lines = [
                line
                for output in outputs
                for line in output.read_bytes().decode(errors="replace").split("\n")[:-1]  # complete lines
            ]
            for line in lines:
                for prefix in (wire.SIM_READY_PREFIX, wire.GODOT_READY_PREFIX):
                    if line.startswith(prefix):
                        url = line[len(prefix) :].strip()
                        await self._wait_healthy(index, url, deadline)
                        self._place(process.pid)
                        return url
            if process.poll() is not None:
                raise self._failure(index, GodotConnectionError, f"exited with code {process.returncode}")
            if time.monotonic() > deadline:
                seen = f"; its output so far: {lines[-3:]!r}" if lines else ""
                raise self._failure(
                    index,
                    GodotTimeoutError,
                    f"was not ready within env.connect_timeout={timeout:g} s{seen}; raise "
                    "env.connect_timeout on a slow or busy machine",
                )
            await asyncio.sleep(_POLL_SECONDS)

    async def _wait_healthy(self, index: int, url: str, deadline: float) -> None:
        """Poll `/health` until it answers: a Godot may print its line before it serves."""
        while True:
            remaining = max(deadline - time.monotonic(), 0.1)
            # named as make_clients names the clients that talk to these servers next
            client = GodotClient(url, timeouts=Timeouts(connect=remaining, request=remaining), name="env.url")
            try:
                async with client:
                    await client.health()
                return
            except GodotError as exc:
                if time.monotonic() > deadline:
                    raise self._failure(
                        index, GodotTimeoutError, f"printed its ready line but {url}/health fails ({exc})"
                    ) from exc
            await asyncio.sleep(_POLL_SECONDS)

    def _failure(self, index: int, kind: type[Exception], what: str) -> Exception:
        assert self._logs is not None
        stderr = (self._logs / f"{index}.err").read_bytes().decode(errors="replace")
        tail = stderr[-_STDERR_TAIL_CHARS:].strip() or "(empty)"
        return kind(f"Server {index} ({self.name}) {what}. Its stderr:\n{tail}")


def _lists_addon(cache: Path) -> bool:
    try:
        return ADDON_SCRIPT in cache.read_text(errors="replace")
    except OSError:
        return False


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _pin(pid: int, cores: frozenset[int]) -> None:
    """Run every thread process `pid` has (threads it starts later inherit it) on `cores` (Linux)."""
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):  # it exited: its wait reports that
        for thread in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(thread), cores)


def server_pool(config: EnvConfig, **options: Any) -> ServerPool:
    """The pool env.launcher names: `ServerPool` (local subprocesses, or attached) or `RayServerPool`.

    Its clients must be made with the pool's `config`: a Ray pool's carries the token it generated.
    """
    if config.launcher == "ray":
        from spacetime_rl.godot.ray_pool import RayServerPool  # Ray loads only when asked for

        return RayServerPool(config, **options)
    return ServerPool(config, **options)


@contextlib.contextmanager
def launch_servers(
    config: EnvConfig,
    *,
    count: int | None = None,
    agents: int | None = None,
    seed: int | None = None,
    verbose: bool = False,
    cores: frozenset[int] | None = None,
) -> Iterator[list[str]]:
    """URLs of `count` (default env.servers) servers for the block; launched ones stop after it.

    Local subprocesses whatever env.launcher says (benchmarks, tests): `server_pool` honours it.
    """
    with ServerPool(config, count=count, agents=agents, seed=seed, verbose=verbose, cores=cores) as urls:
        yield urls
