"""The binary /rl/step body over real HTTP: equal to the JSON body bit for bit, and JSON by default."""

from __future__ import annotations

import aiohttp
import numpy as np
import orjson
import pytest
from aiohttp import web

from spacetime_rl.errors import GodotHTTPError, ProtocolError
from spacetime_rl.godot import GodotClient
from spacetime_rl.protocol import wire

AGENTS = 32
STEPS = 60


async def test_binary_answers_equal_json_answers_exactly(start_sim) -> None:
    """Same seed, same actions on two simulators: one read as JSON, one as binary, with auto-resets."""
    urls = [await start_sim(num_agents=AGENTS, scene=wire.DEFAULT_SCENE, seed=7) for _ in range(2)]
    rng = np.random.default_rng(1)
    async with (
        GodotClient(urls[0], binary_step=False) as json_client,
        GodotClient(urls[1], binary_step=True) as binary_client,
    ):
        for client in (json_client, binary_client):
            await client.spec()
            # short goals and fast players, so episodes end (and auto-reset) within the test
            await client.reset(
                seed=3, options={"max_goal_distance": 2.0, "min_goal_distance": 0.5, "max_speed": 6}
            )
        finished = 0
        for step in range(STEPS):
            actions = rng.uniform(-1.2, 1.2, size=(AGENTS, wire.ACTION_SIZE)).astype(np.float32)
            auto_reset = step % 10 != 9  # some steps without auto_reset leave done agents frozen
            expected = await json_client.step(actions, auto_reset=auto_reset)
            got = await binary_client.step(actions, auto_reset=auto_reset)
            assert got.observations.dtype == expected.observations.dtype == np.float32
            assert got.observations.tobytes() == expected.observations.tobytes()
            np.testing.assert_array_equal(got.done, expected.done)
            for name in wire.EVENT_FIELDS:
                np.testing.assert_array_equal(getattr(got.events, name), getattr(expected.events, name))
                assert getattr(got.events, name).dtype == getattr(expected.events, name).dtype
            assert got.tick == expected.tick
            assert got.terminal_observations.keys() == expected.terminal_observations.keys()
            for agent, row in expected.terminal_observations.items():
                assert got.terminal_observations[agent].tobytes() == row.tobytes()
            finished += len(expected.terminal_observations)
        assert finished > 0, "no episode ended: the test did not exercise terminal observations"


@pytest.mark.parametrize("accept", [None, "application/json", "*/*"])
async def test_json_stays_the_default(sim_server: str, accept: str | None) -> None:
    headers = {"Accept": accept} if accept else {}
    body = orjson.dumps({"actions": [[0.0, 1.0, 0.0]] * 4, "auto_reset": True})
    async with (
        aiohttp.ClientSession(skip_auto_headers=["Accept"]) as session,
        session.post(f"{sim_server}/rl/step", data=body, headers=headers) as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        assert len(orjson.loads(await response.read())["observations"]) == 4


async def test_errors_stay_json_when_binary_is_asked(sim_server: str) -> None:
    async with GodotClient(sim_server) as client:
        await client.spec()
        client._num_agents = None  # let the bad shape reach the server
        with pytest.raises(GodotHTTPError, match="has 3 rows") as info:
            await client.step(np.zeros((3, 3)))
        assert info.value.status == 400


async def test_client_reads_json_from_a_server_without_the_extension(serve_app) -> None:
    seen_accept = []

    async def step(request: web.Request) -> web.Response:
        seen_accept.append(request.headers.get("Accept", ""))
        body = {
            "observations": [[0.5] * wire.OBSERVATION_SIZE],
            "done": [False],
            "events": [{"collisions": 0, "fell": False, "goal_reached": False, "teleports": 0}],
            "tick": 9,
        }
        return web.json_response(body)

    app = web.Application()
    app.router.add_post("/rl/step", step)
    url = await serve_app(app)
    async with GodotClient(url) as client:
        result = await client.step(np.zeros((1, 3)))
    assert wire.STEP_BINARY_CONTENT_TYPE in seen_accept[0]
    assert result.observations.shape == (1, wire.OBSERVATION_SIZE) and result.tick == 9


async def test_truncated_binary_answer_is_a_protocol_error(serve_app) -> None:
    async def step(_request: web.Request) -> web.Response:
        return web.Response(body=wire.STEP_BINARY_MAGIC + b"\1\0", content_type=wire.STEP_BINARY_CONTENT_TYPE)

    app = web.Application()
    app.router.add_post("/rl/step", step)
    url = await serve_app(app)
    async with GodotClient(url) as client:
        with pytest.raises(
            ProtocolError, match=r"/rl/step: binary body is 6 bytes, shorter than its 32-byte"
        ):
            await client.step(np.zeros((1, 3)))
