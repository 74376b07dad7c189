"""`python -m spacetime_rl.sim`: serve the simulator until SIGINT or SIGTERM (exit code 0).

Once listening it prints exactly one line to stdout, `spacetime-sim listening on http://HOST:PORT`,
which launchers parse to learn the port (`--port 0` picks a free one).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from spacetime_rl.errors import ConfigError
from spacetime_rl.godot import wire
from spacetime_rl.sim.server import SCENES, create_app, load_whitelist, serve


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m spacetime_rl.sim",
        description="Embedded simulator of Godot's vr_locomotion_test scene, serving HTTP protocol v1.",
    )
    parser.add_argument("--host", default=wire.DEFAULT_HOST, help="address to bind (default %(default)s)")
    parser.add_argument("--port", type=_non_negative, default=wire.DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--agents", type=_positive, default=16, help="agents in the RL scene (default 16)")
    parser.add_argument(
        "--token", default=None, help="require 'Authorization: Bearer TOKEN' (except /health)"
    )
    parser.add_argument("--scene", choices=sorted(SCENES), default=None, help="scene to load at start")
    parser.add_argument("--seed", type=_non_negative, default=None, help="seed of every scene load's reset")
    parser.add_argument("--action-repeat", type=_positive, default=wire.DEFAULT_ACTION_REPEAT)
    parser.add_argument(
        "--whitelist", default=None, help='JSON list of loadable scenes (or {"scenes": [...]})'
    )
    parser.add_argument("--max-body-bytes", type=_positive, default=1 << 20, help="larger bodies get 413")
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
    )
    runner, port = await serve(app, args.host, args.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"spacetime-sim listening on http://{host}:{port}", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        asyncio.run(_run(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port} ({exc})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
