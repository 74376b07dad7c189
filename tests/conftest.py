"""Shared fixtures: aiohttp apps served on 127.0.0.1 port 0 in the test's own event loop.

`--server-url` points the conformance suite at a running server (a real Godot) instead of the
embedded simulator; `--server-token` is that server's token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from spacetime_rl.protocol import wire

ServeApp = Callable[[web.Application], Awaitable[str]]
StartSim = Callable[..., Awaitable[str]]

SIM_AGENTS = 4


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("spacetime_rl")
    group.addoption(
        "--server-url",
        default=None,
        help="base URL of a running protocol v1 server (e.g. Godot at http://127.0.0.1:8080) for the "
        "conformance suite; default: start the embedded simulator in-process",
    )
    group.addoption("--server-token", default=None, help="bearer token of the --server-url server")


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """Factory: serve an aiohttp app on 127.0.0.1 port 0 and return its base URL; stopped after the test."""
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, wire.DEFAULT_HOST, 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return f"http://{host}:{port}"

    yield serve
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def start_sim() -> AsyncIterator[StartSim]:
    """Factory: start an embedded simulator with `create_app(**kwargs)` and return its base URL.

    A simulator that does not import fails the test: it is part of the product, not optional.
    """
    from spacetime_rl.sim.server import create_app, serve

    listeners = []

    async def start(**kwargs: Any) -> str:
        listener = await serve(create_app(**kwargs), wire.DEFAULT_HOST, 0)
        listeners.append(listener)
        return f"http://{wire.DEFAULT_HOST}:{listener.port}"

    yield start
    for listener in reversed(listeners):
        await listener.cleanup()


@pytest.fixture
async def sim_server(start_sim: StartSim) -> str:
    """Base URL of a fresh in-process simulator with SIM_AGENTS agents and the default scene loaded."""
    return await start_sim(num_agents=SIM_AGENTS, scene=wire.DEFAULT_SCENE, seed=0)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL server started for this test session (tests/postgres.py) and stopped after it."""
    from postgres import postgres_server

    with postgres_server() as url:
        yield url
