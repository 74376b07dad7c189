"""`send_step` + `receive_step`, the blocking /rl/step pair the VecEnv uses: same answers and same errors
as the async `step`, over its own keep-alive connection.

The servers run in the test's event loop, so each blocking pair runs in a worker thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from test_client import N, closed_port_url, fake, json_response, reply, spec_body, step_body

from spacetime_rl.errors import GodotConnectionError, GodotHTTPError, GodotTimeoutError, ProtocolError
from spacetime_rl.godot import GodotClient, Timeouts
from spacetime_rl.protocol import StepResult, wire

__all__ = ["fake"]  # the fake-server fixture of test_client.py, used here as well

AGENTS = 16


async def split_step(client: GodotClient, actions: np.ndarray, auto_reset: bool = False) -> StepResult:
    def send_and_receive() -> StepResult:
        client.send_step(actions, auto_reset=auto_reset)
        return client.receive_step()

    return await asyncio.to_thread(send_and_receive)


def assert_same_step(got: StepResult, expected: StepResult) -> None:
    assert got.observations.tobytes() == expected.observations.tobytes()
    np.testing.assert_array_equal(got.done, expected.done)
    for name in wire.EVENT_FIELDS:
        np.testing.assert_array_equal(getattr(got.events, name), getattr(expected.events, name))
    assert got.tick == expected.tick
    assert got.terminal_observations.keys() == expected.terminal_observations.keys()
    for agent, row in expected.terminal_observations.items():
        assert got.terminal_observations[agent].tobytes() == row.tobytes()


@pytest.mark.parametrize(("binary_step", "busy_poll"), [(True, 0.0), (False, 0.0), (True, 0.002)])
async def test_split_steps_equal_async_steps_exactly(start_sim, binary_step: bool, busy_poll: float) -> None:
    urls = [await start_sim(num_agents=AGENTS, scene=wire.DEFAULT_SCENE, seed=5) for _ in range(2)]
    rng = np.random.default_rng(2)
    async with (
        GodotClient(urls[0], binary_step=False) as reference,
        GodotClient(urls[1], binary_step=binary_step, busy_poll=busy_poll) as client,
    ):
        for each in (reference, client):
            await each.spec()
            await each.reset(seed=1, options={"max_goal_distance": 2.0, "min_goal_distance": 0.5})
        finished = 0
        for step in range(40):
            actions = rng.uniform(-1, 1, size=(AGENTS, wire.ACTION_SIZE)).astype(np.float32)
            auto_reset = step % 10 != 9
            expected = await reference.step(actions, auto_reset=auto_reset)
            assert_same_step(await split_step(client, actions, auto_reset), expected)
            finished += len(expected.terminal_observations)
    assert finished > 0, "no episode ended: terminal observations were not exercised"


async def test_one_kept_alive_connection_and_the_token_are_used(fake) -> None:
    seen: list[tuple[Any, str | None]] = []

    async def record(request: web.Request) -> web.Response:
        assert request.transport is not None
        seen.append((request.transport.get_extra_info("peername"), request.headers.get("Authorization")))
        return json_response(step_body())

    url = await fake({("POST", "/rl/step"): record})
    async with GodotClient(url, token="s3cret") as client:
        for _ in range(4):
            await split_step(client, np.zeros((N, 3)))
    assert len({peer for peer, _ in seen}) == 1
    assert {auth for _, auth in seen} == {"Bearer s3cret"}


async def test_a_connection_the_server_closed_is_replaced_before_sending(fake) -> None:
    peers: list[Any] = []

    async def close_after(request: web.Request) -> web.Response:
        transport = request.transport
        assert transport is not None
        peers.append(transport.get_extra_info("peername"))
        # closed once answered, without a `Connection: close` header: as an idle timeout would
        asyncio.get_running_loop().call_later(0.01, transport.close)
        return json_response(step_body())

    url = await fake({("POST", "/rl/step"): close_after})
    async with GodotClient(url) as client:
        for _ in range(3):
            await split_step(client, np.zeros((N, 3)))
            await asyncio.sleep(0.05)  # the close reaches the client's socket
    assert len(set(peers)) == 3


async def test_an_answer_with_connection_close_is_followed_by_a_new_connection(fake) -> None:
    peers: list[Any] = []

    async def close_after(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        response = json_response(step_body())
        response.force_close()
        return response

    url = await fake({("POST", "/rl/step"): close_after})
    async with GodotClient(url) as client:
        for _ in range(3):
            await split_step(client, np.zeros((N, 3)))
    assert len(set(peers)) == 3


async def test_an_answer_that_is_not_http_is_a_broken_connection() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)
        writer.write(b"SPAM 42\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, wire.DEFAULT_HOST, 0)
    port = server.sockets[0].getsockname()[1]
    async with server, GodotClient(f"http://{wire.DEFAULT_HOST}:{port}") as client:
        with pytest.raises(GodotConnectionError, match="broke during POST /rl/step"):
            await split_step(client, np.zeros((N, 3)))


async def test_a_malformed_answer_names_endpoint_and_field(fake) -> None:
    url = await fake({("GET", "/rl/spec"): spec_body(), ("POST", "/rl/step"): step_body(tick=-1)})
    async with GodotClient(url) as client:
        await client.spec()
        with pytest.raises(ProtocolError, match="field 'tick' is -1") as info:
            await split_step(client, np.zeros((N, 3)))
    assert info.value.endpoint == "/rl/step" and url in str(info.value)


async def test_an_error_status_carries_status_and_message(fake) -> None:
    url = await fake({("POST", "/rl/step"): reply({"error": "field 'actions' is missing"}, 400)})
    async with GodotClient(url) as client:
        with pytest.raises(GodotHTTPError) as info:
            await split_step(client, np.zeros((N, 3)))
    assert info.value.status == 400
    assert f"POST {url}/rl/step answered 400: field 'actions' is missing" in str(info.value)


async def test_an_unreachable_server_is_reported_by_receive_step() -> None:
    url = closed_port_url()
    client = GodotClient(url, name="eval.env.url")
    client.send_step(np.zeros((N, 3)))  # does not raise: the VecEnv reads every server first
    with pytest.raises(GodotConnectionError) as info:
        client.receive_step()
    assert f"Cannot connect to Godot HTTP API at {url} (eval.env.url)" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    await client.close()


async def test_a_slow_answer_times_out_and_the_next_step_starts_clean(fake) -> None:
    calls = 0

    async def slow_once(_request: web.Request) -> web.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.sleep(0.5)
            return json_response(step_body(tick=1))
        return json_response(step_body(tick=2))

    url = await fake({("POST", "/rl/step"): slow_once})
    async with GodotClient(url, timeouts=Timeouts(connect=1, request=0.1)) as client:
        with pytest.raises(GodotTimeoutError, match=r"env\.request_timeout=0\.1"):
            await split_step(client, np.zeros((N, 3)))
        await asyncio.sleep(0.6)  # the late answer arrives on the dropped connection, not the next
        assert (await split_step(client, np.zeros((N, 3)))).tick == 2


def test_receive_without_send_is_a_programming_error() -> None:
    with pytest.raises(RuntimeError, match=r"receive_step\(\) without a send_step\(\)"):
        GodotClient("http://127.0.0.1:9").receive_step()


def test_bad_actions_are_refused_before_sending() -> None:
    client = GodotClient("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="NaN or infinity"):
        client.send_step(np.full((N, 3), np.nan))
