"""GodotClient against fake servers (port 0, same process) and, once it exists, the embedded simulator."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import orjson
import pytest
from aiohttp import web

from spacetime_rl.errors import (
    ConfigError,
    GodotConnectionError,
    GodotHTTPError,
    GodotTimeoutError,
    ProtocolError,
    SpecMismatchError,
)
from spacetime_rl.godot import GodotClient, Timeouts
from spacetime_rl.protocol import wire

N = 4


def spec_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "protocol": wire.PROTOCOL_VERSION,
        "num_agents": N,
        "observation_size": wire.OBSERVATION_SIZE,
        "action_size": wire.ACTION_SIZE,
        "observation_fields": [{"name": name, "size": size} for name, size in wire.OBSERVATION_FIELDS],
        "physics_hz": wire.PHYSICS_HZ,
        "action_repeat": wire.DEFAULT_ACTION_REPEAT,
    }
    return body | overrides


def observations(rows: int = N) -> list[list[float]]:
    return (np.arange(rows * wire.OBSERVATION_SIZE, dtype=np.float64).reshape(rows, -1) / 7).tolist()


def event(**overrides: Any) -> dict[str, Any]:
    return {"collisions": 0, "fell": False, "goal_reached": False, "teleports": 0} | overrides


def step_body(**overrides: Any) -> dict[str, Any]:
    body = {"observations": observations(), "done": [False] * N, "events": [event()] * N, "tick": 9}
    return body | overrides


Handler = Callable[[web.Request], Awaitable[web.Response]]


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def reply(body: Any, status: int = 200) -> Handler:
    async def handler(_request: web.Request) -> web.Response:
        return json_response(body, status)

    return handler


def raw(text: bytes | str, status: int = 200, content_type: str = "application/json") -> Handler:
    async def handler(_request: web.Request) -> web.Response:
        return web.Response(body=text, status=status, content_type=content_type)

    return handler


@pytest.fixture
def fake(serve_app):
    """Factory: serve `{(method, path): handler-or-body}`; a body is answered as JSON 200."""

    async def start(routes: dict[tuple[str, str], Any]) -> str:
        app = web.Application()
        for (method, path), answer in routes.items():
            app.router.add_route(method, path, answer if callable(answer) else reply(answer))
        return await serve_app(app)

    return start


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind((wire.DEFAULT_HOST, 0))
        port = sock.getsockname()[1]
    return f"http://{wire.DEFAULT_HOST}:{port}"


# ---------------------------------------------------------------- transport errors


async def test_server_down_names_url_key_and_check() -> None:
    url = closed_port_url()
    async with GodotClient(url, name="eval.env.url") as client:
        with pytest.raises(GodotConnectionError) as info:
            await client.health()
        assert not await client.health_check()
    message = str(info.value)
    assert f"Cannot connect to Godot HTTP API at {url} (eval.env.url)" in message
    assert f"curl {url}/health" in message
    assert info.value.endpoint == "/health" and info.value.url == url
    assert isinstance(info.value, ConnectionError)
    assert isinstance(info.value.__cause__, Exception)


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("env.url", "env.request_timeout"),
        ("eval.env.url", "eval.env.request_timeout"),
        ("train server 1 at http://127.0.0.1:8081 (env.url[1])", "env.request_timeout"),
        ("train server 0 (python -m spacetime_rl.sim, port 8081, pid 7)", "env.request_timeout"),
    ],
)
async def test_slow_answer_times_out_naming_the_key(fake, name: str, key: str) -> None:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(2)
        return json_response(spec_body())

    url = await fake({("GET", "/rl/spec"): slow})
    async with GodotClient(url, timeouts=Timeouts(connect=1, request=0.2), name=name) as client:
        with pytest.raises(GodotTimeoutError) as info:
            await client.spec()
    message = str(info.value)
    assert f"{url}/rl/spec" in message and f"({key}=0.2)" in message
    assert isinstance(info.value, TimeoutError)


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (400, ""),
        (401, "set env.token"),
        (403, "config/scene_whitelist.json"),
        (404, ""),
        (409, "load an RL scene first"),
        (413, ""),
        (500, ""),
        (503, ""),
    ],
)
async def test_error_status_carries_status_endpoint_message_and_hint(fake, status: int, hint: str) -> None:
    url = await fake({("POST", "/scene/load"): reply({"error": f"broken\nthing {status}"}, status)})
    async with GodotClient(url) as client:
        with pytest.raises(GodotHTTPError) as info:
            await client.load_scene("res://x.tscn")
    error = info.value
    assert (error.status, error.endpoint, error.url) == (status, "/scene/load", url)
    assert f"POST {url}/scene/load answered {status}: broken thing {status}" in str(error)
    assert hint in str(error) and "\n" not in str(error)


async def test_error_status_without_json_quotes_the_body_start(fake) -> None:
    url = await fake({("GET", "/health"): raw("<html>" + "x" * 1000, 502, "text/html")})
    async with GodotClient(url) as client:
        with pytest.raises(GodotHTTPError) as info:
            await client.health()
    assert info.value.status == 502 and "<html>xxx" in str(info.value) and "x" * 200 not in str(info.value)


async def test_non_json_success_is_a_protocol_error(fake) -> None:
    url = await fake({("GET", "/health"): raw("OK", content_type="text/plain")})
    async with GodotClient(url) as client:
        with pytest.raises(ProtocolError, match=r"/health: the 200 answer is not JSON"):
            await client.health()


# ---------------------------------------------------------------- malformed bodies


def bad_row(row: int, values: list[Any]) -> list[list[Any]]:
    rows: list[list[Any]] = observations()
    rows[row] = values
    return rows


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({k: v for k, v in step_body().items() if k != "done"}, "/rl/step: field 'done' is missing"),
        (
            step_body(observations=bad_row(3, [0.0] * 47)),
            "/rl/step: field 'observations' row 3 has 47 values, expected 48",
        ),
        (
            step_body(observations=bad_row(1, [0.0] * 47 + ["nan"])),
            "field 'observations' row 1 value 47 is 'nan'",
        ),
        (
            step_body(observations=bad_row(0, [0.0] * 47 + [None])),
            "row 0 value 47 is None, expected a number",
        ),
        (step_body(observations=observations(3)), "field 'observations' has 3 rows, expected 4"),
        (step_body(observations="x"), "field 'observations' is str 'x', expected list"),
        (step_body(done=[False] * 3), "field 'done' has 3 entries, expected 4"),
        (step_body(done=[0] * N), "field 'done' is [0, 0, 0, 0], expected a list of booleans"),
        (step_body(events=[event()] * 3), "field 'events' has 3 entries, expected 4"),
        (
            step_body(events=[event()] * 3 + [{"fell": False}]),
            "field 'events' entry 3 lacks collisions, goal_reached",
        ),
        (step_body(events=[event()] * 3 + [[]]), "field 'events' entry 3 is list, expected an object"),
        (step_body(events=[event(collisions=1.0)] * N), "key 'collisions' must be a non-negative integer"),
        (step_body(events=[event(teleports=-1)] * N), "key 'teleports' must be a non-negative integer"),
        (step_body(events=[event(fell=1)] * N), "key 'fell' must be a boolean"),
        (step_body(tick=-1), "field 'tick' is -1, expected a non-negative integer"),
        (step_body(tick=True), "field 'tick' is True"),
        (
            step_body(terminal_observations={"2": [0.0] * 48}),
            "key '2' is not the index of an agent done this step",
        ),
        (
            step_body(done=[False, True, False, False], terminal_observations={"1": [0.0] * 3}),
            "field 'terminal_observations' key '1' has 3 values, expected 48",
        ),
        ([1, 2], "/rl/step: the body is list, expected a JSON object"),
    ],
)
async def test_malformed_step_names_endpoint_and_field(fake, body: Any, expected: str) -> None:
    url = await fake({("GET", "/rl/spec"): spec_body(), ("POST", "/rl/step"): body})
    async with GodotClient(url) as client:
        await client.spec()
        with pytest.raises(ProtocolError) as info:
            await client.step(np.zeros((N, 3), dtype=np.float32))
    assert expected in str(info.value)
    assert info.value.endpoint == "/rl/step" and url in str(info.value)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"1e999"])
async def test_non_finite_numbers_are_rejected(fake, literal: bytes) -> None:
    rows = b",".join([b"[" + b",".join([b"0.5"] * 47 + [literal]) + b"]"] * N)
    url = await fake({("GET", "/rl/observation"): raw(b'{"observations": [' + rows + b"]}")})
    async with GodotClient(url) as client:
        with pytest.raises(ProtocolError, match="/rl/observation: the 200 answer is not JSON"):
            await client.get_observation()


@pytest.mark.parametrize(
    ("method", "path", "body", "call", "expected"),
    [
        ("GET", "/health", {"status": "ok", "engine": "godot"}, "health", "field 'version' is missing"),
        (
            "GET",
            "/scene/state",
            {"scene": None, "rl_ready": "yes", "num_agents": 0},
            "get_scene_state",
            "'rl_ready'",
        ),
        (
            "GET",
            "/scene/state",
            {"rl_ready": True, "num_agents": 1},
            "get_scene_state",
            "field 'scene' is missing",
        ),
        (
            "GET",
            "/performance",
            {"engine": {"fps": 60.0}, "memory": {"static_memory_usage": 1}},
            "get_performance_metrics",
            "field 'engine.physics_fps' is missing",
        ),
        ("POST", "/scene/load", {"scene": "res://a.tscn"}, "load_scene", "field 'loaded' is missing"),
        ("POST", "/rl/action", {"tick": 1.5}, "send_action", "/rl/action: field 'tick' is 1.5"),
        (
            "GET",
            "/rl/state",
            {"done": [False] * N, "events": [event()] * N},
            "get_state",
            "field 'tick' is missing",
        ),
        (
            "POST",
            "/rl/reset",
            {"observations": observations(N)},
            "reset",
            "field 'ignored_options' is missing",
        ),
        (
            "POST",
            "/rl/reset",
            {"observations": observations(N), "ignored_options": [1]},
            "reset",
            "field 'ignored_options' is [1], expected a list of strings",
        ),
        ("GET", "/rl/spec", spec_body(num_agents="4"), "spec", "field 'num_agents' is '4'"),
        (
            "GET",
            "/rl/spec",
            spec_body(observation_fields=[["camera", 3]]),
            "spec",
            "'observation_fields' entry 0",
        ),
    ],
)
async def test_malformed_bodies_of_other_endpoints(fake, method, path, body, call, expected) -> None:
    url = await fake({(method, path): body})
    arguments = {"send_action": (np.zeros((N, 3)),)}.get(call, ())
    async with GodotClient(url) as client:
        with pytest.raises(ProtocolError) as info:
            await getattr(client, call)(*arguments)
    assert f"{path}: {expected}" in str(info.value) or expected in str(info.value)
    assert info.value.endpoint == path


async def test_reset_rows_follow_the_agents_asked_for(fake) -> None:
    url = await fake({("POST", "/rl/reset"): {"observations": observations(3), "ignored_options": []}})
    async with GodotClient(url) as client:
        with pytest.raises(ProtocolError, match="field 'observations' has 3 rows, expected 2"):
            await client.reset(agents=[1, 2])


# ---------------------------------------------------------------- spec


async def test_spec_mismatch_shows_both_sides(fake) -> None:
    url = await fake({("GET", "/rl/spec"): spec_body(protocol=2, observation_size=47)})
    async with GodotClient(url) as client:
        with pytest.raises(SpecMismatchError) as info:
            await client.spec()
    message = str(info.value)
    assert "protocol is 2, client expects 1" in message
    assert "observation_size is 47, client expects 48" in message
    assert isinstance(info.value, ProtocolError)


async def test_spec_field_list_mismatch(fake) -> None:
    fields = spec_body()["observation_fields"][::-1]
    url = await fake({("GET", "/rl/spec"): spec_body(observation_fields=fields)})
    async with GodotClient(url) as client:
        with pytest.raises(
            SpecMismatchError, match=r"observation_fields is .*goal_direction.*client expects"
        ):
            await client.spec()


# ---------------------------------------------------------------- requests and happy paths


async def test_token_header_and_json_body_are_sent(fake) -> None:
    seen: list[tuple[str | None, str, bytes]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append((request.headers.get("Authorization"), request.content_type, await request.read()))
        return json_response(step_body())

    url = await fake({("POST", "/rl/step"): record})
    actions = np.array([[0.1, -2, 0.5]] * N, dtype=np.float32)
    async with GodotClient(url, token="s3cret") as client:
        await client.step(actions, auto_reset=True)
    async with GodotClient(url) as client:
        await client.step(actions)
    (auth, content_type, body), (no_auth, _, plain) = seen
    assert auth == "Bearer s3cret" and no_auth is None and content_type == "application/json"
    decoded = orjson.loads(body)
    assert decoded["auto_reset"] is True and orjson.loads(plain)["auto_reset"] is False
    # float64 on the wire: the server sees exactly the float32 values the policy produced.
    assert np.array_equal(np.array(decoded["actions"], dtype=np.float64), actions.astype(np.float64))


async def test_step_returns_typed_arrays(fake) -> None:
    body = step_body(
        done=[False, True, False, True],
        events=[event(), event(goal_reached=True, collisions=2), event(teleports=1), event(fell=True)],
        terminal_observations={"1": [1.0] * 48, "3": [3.0] * 48},
    )
    url = await fake({("POST", "/rl/step"): body})
    async with GodotClient(url) as client:
        result = await client.step(np.zeros((N, 3)), auto_reset=True)
    assert result.observations.dtype == np.float32 and result.observations.shape == (N, 48)
    np.testing.assert_allclose(result.observations, np.array(observations(), dtype=np.float32))
    assert result.done.dtype == bool and result.done.tolist() == [False, True, False, True]
    assert result.events.collisions.dtype == np.int32 and result.events.collisions.tolist() == [0, 2, 0, 0]
    assert result.events.teleports.tolist() == [0, 0, 1, 0]
    assert result.events.fell.tolist() == [False, False, False, True]
    assert result.events.goal_reached.tolist() == [False, True, False, False]
    assert result.tick == 9 and sorted(result.terminal_observations) == [1, 3]
    assert result.terminal_observations[3].dtype == np.float32 and result.terminal_observations[3][0] == 3.0


async def test_seed_endpoints_and_reset(fake) -> None:
    seen: list[Any] = []

    async def reset(request: web.Request) -> web.Response:
        seen.append(await request.json())
        return json_response({"observations": observations(2), "ignored_options": ["bogus"]})

    url = await fake(
        {
            ("GET", "/health"): {"status": "ok", "engine": "godot", "version": "4.5.1"},
            ("POST", "/scene/load"): {"scene": wire.DEFAULT_SCENE, "loaded": True},
            ("GET", "/scene/state"): {"scene": wire.DEFAULT_SCENE, "rl_ready": True, "num_agents": N},
            ("GET", "/performance"): {
                "engine": {"fps": 90.0, "physics_fps": 90},
                "memory": {"static_memory_usage": 7},
            },
            ("GET", "/rl/spec"): spec_body(),
            ("POST", "/rl/reset"): reset,
            ("POST", "/rl/action"): {"tick": 18},
            ("GET", "/rl/observation"): {"observations": observations()},
            ("GET", "/rl/state"): {
                "done": [True] + [False] * (N - 1),
                "events": [event(fell=True)] + [event()] * 3,
                "tick": 18,
            },
        }
    )
    async with GodotClient(url) as client:
        assert await client.health_check()
        assert (await client.load_scene())["loaded"] is True
        assert (await client.get_scene_state())["num_agents"] == N
        assert (await client.get_performance_metrics())["engine"]["physics_fps"] == 90
        spec = await client.spec()
        assert spec.num_agents == N and spec.observation_fields == wire.OBSERVATION_FIELDS
        reset = await client.reset(seed=np.int64(3), agents=[3, 1], options={"max_speed": 1.5, "bogus": 1})
        assert reset.observations.shape == (2, 48) and reset.ignored_options == ("bogus",)
        assert seen == [{"seed": 3, "agents": [3, 1], "options": {"max_speed": 1.5, "bogus": 1}}]
        assert await client.send_action(np.zeros((N, 3))) == 18
        assert (await client.get_observation()).shape == (N, 48)
        done, events, tick = await client.get_state()
        assert done.tolist() == [True, False, False, False] and events.fell[0] and tick == 18


async def test_one_keep_alive_connection_is_reused(fake) -> None:
    peers: list[Any] = []

    async def health(request: web.Request) -> web.Response:
        assert request.transport is not None
        peers.append(request.transport.get_extra_info("peername"))
        return json_response({"status": "ok", "engine": "fake", "version": "0"})

    url = await fake({("GET", "/health"): health})
    async with GodotClient(url) as client:
        for _ in range(5):
            await client.health()
    assert len(set(peers)) == 1


@pytest.mark.parametrize("shape", [(N, 2), (N,), (N + 1, 3)])
async def test_wrong_action_shape_is_refused_before_sending(fake, shape: tuple[int, ...]) -> None:
    url = await fake({("GET", "/rl/spec"): spec_body()})
    async with GodotClient(url) as client:
        await client.spec()
        with pytest.raises(ValueError, match="actions must have shape"):
            await client.step(np.zeros(shape))


async def test_non_finite_actions_are_refused(fake) -> None:
    url = await fake({})
    async with GodotClient(url) as client:
        with pytest.raises(ValueError, match="NaN or infinity"):
            await client.step(np.full((N, 3), np.nan))


@pytest.mark.parametrize("url", ["127.0.0.1:8080", "ftp://host", "http://", ""])
def test_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"env\.url must be an http"):
        GodotClient(url)


@pytest.mark.parametrize(("connect", "request_", "key"), [(0, 1, "connect"), (1, float("nan"), "request")])
def test_bad_timeouts_are_config_errors(connect: float, request_: float, key: str) -> None:
    with pytest.raises(ConfigError, match=f"env.{key}_timeout must be a positive number"):
        Timeouts(connect=connect, request=request_)


# ---------------------------------------------------------------- against the embedded simulator


async def test_full_cycle_against_the_simulator(sim_server: str) -> None:
    async with GodotClient(sim_server) as client:
        assert await client.health_check()
        spec = await client.spec()
        reset = await client.reset(seed=1)
        assert reset.observations.shape == (spec.num_agents, wire.OBSERVATION_SIZE)
        result = await client.step(np.zeros((spec.num_agents, wire.ACTION_SIZE), dtype=np.float32))
        assert result.observations.shape == (spec.num_agents, wire.OBSERVATION_SIZE)
        assert result.tick > 0


async def test_simulator_token_is_enforced(start_sim) -> None:
    url = await start_sim(num_agents=2, scene=wire.DEFAULT_SCENE, token="t0k")
    async with GodotClient(url) as client:
        with pytest.raises(GodotHTTPError) as info:
            await client.spec()
    assert info.value.status == 401 and "env.token" in str(info.value)
    async with GodotClient(url, token="t0k") as client:
        assert (await client.spec()).num_agents == 2


async def test_static_memory_may_be_null_but_not_missing(fake) -> None:
    """A Godot release build does not count static memory: null is 'unknown', not a protocol error."""
    engine = {"fps": 90.0, "physics_fps": 90.0}
    url = await fake({("GET", "/performance"): {"engine": engine, "memory": {"static_memory_usage": None}}})
    async with GodotClient(url) as client:
        assert (await client.get_performance_metrics())["memory"]["static_memory_usage"] is None
    url = await fake({("GET", "/performance"): {"engine": engine, "memory": {}}})
    async with GodotClient(url) as client:
        with pytest.raises(ProtocolError, match="static_memory_usage"):
            await client.get_performance_metrics()
