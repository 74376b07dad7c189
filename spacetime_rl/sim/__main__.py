"""`python -m spacetime_rl.sim`: serve the simulator until SIGINT or SIGTERM (exit code 0).

Once listening it prints exactly one line to stdout, `spacetime-sim listening on http://HOST:PORT`,
which launchers parse to learn the port (`--port 0` picks a free one).

The token comes from `--token` or, kept out of the process list, `SPACETIME_RL_TOKEN`. Requests
from web pages or under foreign host names are refused (protocol/access.py; `--allowed-host`,
`--allowed-origin`), and a non-loopback `--host` needs a token or `--insecure`.

It also accepts Godot's command line, so it can stand in for a headless Godot in launcher tests:
`--headless --path PROJECT -- --rl-port=0 --rl-agents=4 ...` (the addon's `--rl-*` flags after `--`);
it then prints Godot's ready line, `spacetime-rl listening on http://HOST:PORT`.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import selectors
import signal
import sys
import time
from typing import Final

from spacetime_rl.errors import ConfigError
from spacetime_rl.protocol import access, wire
from spacetime_rl.sim.server import SCENES, create_app, load_whitelist, serve

#: Godot addon flag (after `--`) -> this module's flag.
GODOT_FLAGS: Final = {
    "--rl-port": "--port",
    "--rl-host": "--host",
    "--rl-token": "--token",
    "--rl-seed": "--seed",
    "--rl-agents": "--agents",
    "--rl-action-repeat": "--action-repeat",
    "--rl-scene": "--scene",
    "--rl-max-body-bytes": "--max-body-bytes",
    "--rl-allowed-host": "--allowed-host",
    "--rl-allowed-origin": "--allowed-origin",
}
#: Godot addon switches (no value) -> this module's.
GODOT_SWITCHES: Final = {"--rl-insecure": "--insecure"}
GODOT_ONLY_FLAGS: Final = frozenset({"--rl-poll-budget-ms"})  # accepted, meaningless here
PARENT_POLL_SECONDS: Final = 0.5

#: Give the core to another runnable process, if any (`os.sched_yield` where the OS has it).
_yield = getattr(os, "sched_yield", None) or (lambda: time.sleep(0))


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _agent_count(text: str) -> int:
    value = _positive(text)
    if value > wire.MAX_AGENTS:
        raise argparse.ArgumentTypeError(f"{value} agents is more than the {wire.MAX_AGENTS} one server runs")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} is not a positive number of seconds")
    return value


def _milliseconds(text: str) -> float:
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text} is not a number of milliseconds >= 0")
    return value


def _from_godot(argv: list[str]) -> list[str] | None:
    """This module's arguments for a Godot command line (`--headless --path P -- --rl-...`), else None."""
    if "--" not in argv:
        return None
    split = argv.index("--")
    engine, user = argv[:split], argv[split + 1 :]
    if "--headless" not in engine and "--path" not in engine:
        return None
    translated = []
    for arg in user:
        flag, equals, value = arg.partition("=")
        if flag in GODOT_ONLY_FLAGS and equals:
            continue
        if arg in GODOT_SWITCHES:
            translated.append(GODOT_SWITCHES[arg])
            continue
        if flag not in GODOT_FLAGS or not equals:
            print(f"error: unknown argument {arg!r}; use {', '.join(GODOT_FLAGS)}=VALUE", file=sys.stderr)
            raise SystemExit(2)
        translated += [GODOT_FLAGS[flag], value]
    return [*translated, "--godot-ready-line"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    argv = sys.argv[1:] if argv is None else argv
    argv = _from_godot(argv) or argv
    parser = argparse.ArgumentParser(
        prog="python -m spacetime_rl.sim",
        description="Embedded simulator of Godot's vr_locomotion_test scene, serving HTTP protocol v1.",
    )
    parser.add_argument("--host", default=wire.DEFAULT_HOST, help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=_non_negative, default=wire.DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument(
        "--agents",
        type=_agent_count,
        default=wire.DEFAULT_AGENTS,
        help=f"agents in the RL scene (default %(default)s, at most {wire.MAX_AGENTS})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(wire.TOKEN_VARIABLE) or None,
        help=f"require 'Authorization: Bearer TOKEN' (except /health); default ${wire.TOKEN_VARIABLE}, which "
        "keeps it out of the process list",
    )
    parser.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests for this Host name (loopback names always are; '*' for any)",
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="answer requests from this web origin (e.g. http://localhost:3000); none by default",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="listen on a non-loopback --host without a token: anyone on the network can drive it",
    )
    parser.add_argument("--scene", choices=sorted(SCENES), default=None, help="scene to load at start")
    parser.add_argument("--seed", type=_non_negative, default=None, help="seed of every scene load's reset")
    parser.add_argument("--action-repeat", type=_positive, default=wire.DEFAULT_ACTION_REPEAT)
    parser.add_argument(
        "--whitelist", default=None, help='JSON list of loadable scenes (or {"scenes": [...]})'
    )
    parser.add_argument("--max-body-bytes", type=_positive, default=1 << 20, help="larger bodies get 413")
    parser.add_argument(
        "--max-connections",
        type=_positive,
        default=wire.MAX_CONNECTIONS,
        help="connections open at once; more are answered 503 (default %(default)s)",
    )
    parser.add_argument(
        "--header-timeout",
        type=_seconds,
        default=wire.HEADER_TIMEOUT,
        help="seconds for a request's headers to arrive, else 408 (default %(default)s); idle "
        "kept-alive connections have no deadline",
    )
    parser.add_argument(
        "--body-timeout",
        type=_seconds,
        default=wire.BODY_TIMEOUT,
        help="seconds for a request's body to arrive, else 408 (default %(default)s)",
    )
    parser.add_argument(
        "--busy-poll-us",
        type=_non_negative,
        default=0,
        help="after each answer, spin this long waiting for the next request before sleeping "
        "(default 0: sleep at once); see docs/training.md, 'Speed'",
    )
    parser.add_argument(
        "--step-delay-ms",
        type=_milliseconds,
        default=0.0,
        help="wait this long after every step before answering, standing in for Godot's physics time "
        "(waiting, not CPU; default 0); for benchmarks of many servers (docs/benchmarks.md)",
    )
    parser.add_argument(
        "--parent-pid",
        type=_positive,
        default=None,
        help="stop when this process (the launcher) is no longer the parent, e.g. killed by SIGKILL",
    )
    parser.add_argument("--godot-ready-line", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace) -> None:
    app = create_app(
        num_agents=args.agents,
        token=args.token,
        whitelist=None if args.whitelist is None else load_whitelist(args.whitelist),
        scene=args.scene,
        seed=args.seed,
        action_repeat=args.action_repeat,
        max_body_bytes=args.max_body_bytes,
        body_timeout=args.body_timeout,
        allowed_hosts=args.allowed_host,
        allowed_origins=args.allowed_origin,
        step_delay=args.step_delay_ms / 1000,
    )
    listener = await serve(
        app, args.host, args.port, max_connections=args.max_connections, header_timeout=args.header_timeout
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = f"[{args.host}]" if ":" in args.host else args.host
    prefix = wire.GODOT_READY_PREFIX if args.godot_ready_line else wire.SIM_READY_PREFIX
    print(f"{prefix}http://{host}:{listener.port}", flush=True)
    orphaned = None if args.parent_pid is None else asyncio.create_task(_watch_parent(args.parent_pid, stop))
    try:
        await stop.wait()
    finally:
        if orphaned is not None:
            orphaned.cancel()
        await listener.cleanup()


async def _watch_parent(pid: int, stop: asyncio.Event) -> None:
    """Set `stop` once the process is re-parented: its launcher died without stopping it."""
    while os.getppid() == pid:
        await asyncio.sleep(PARENT_POLL_SECONDS)
    print(f"the launcher (pid {pid}) is gone; stopping", file=sys.stderr, flush=True)
    stop.set()


class BusyPollSelector(selectors.DefaultSelector):
    """A selector that polls for up to `seconds` before it blocks, so a request arriving soon after
    the last answer finds the process awake (on a VM, waking a sleeping one costs ~50 us)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        start = time.perf_counter()
        spin = self.seconds if timeout is None else min(self.seconds, max(timeout, 0.0))
        ready = super().select(0)
        while not ready and time.perf_counter() - start < spin:
            _yield()  # a process that shares this core runs first
            ready = super().select(0)
        if ready:
            return ready
        remaining = None if timeout is None else max(timeout - (time.perf_counter() - start), 0.0)
        return super().select(remaining)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seconds = args.busy_poll_us / 1e6
    if not access.is_loopback(access.host_name(args.host)) and not args.token:
        if not args.insecure:
            print(
                f"error: --host {args.host} is reachable from other machines, and without a token anyone "
                f"there can drive the simulator: pass --token (or set {wire.TOKEN_VARIABLE}), or --insecure "
                "if the network is yours alone",
                file=sys.stderr,
            )
            return 2
        print(f"warning: serving on {args.host} without a token (--insecure)", file=sys.stderr, flush=True)

    def spinning_loop() -> asyncio.AbstractEventLoop:
        return asyncio.SelectorEventLoop(BusyPollSelector(seconds))

    try:
        with asyncio.Runner(loop_factory=spinning_loop if seconds else None) as runner:
            runner.run(_run(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port} ({exc})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
