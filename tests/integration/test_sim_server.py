"""The simulator's HTTP server on a real socket (port 0): every endpoint's shape and every error code."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from spacetime_rl.errors import ConfigError
from spacetime_rl.protocol import wire
from spacetime_rl.sim.server import ENGINE, MAIN_SCENE, load_whitelist

AGENTS = 3
EVENT = {"collisions": int, "fell": bool, "goal_reached": bool, "teleports": int}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def url(start_sim: Any) -> str:
    return await start_sim(num_agents=AGENTS, scene=wire.DEFAULT_SCENE, seed=0)


async def call(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    *,
    data: bytes | None = None,
    **kw: Any,
) -> tuple[int, Any]:
    if body is not None:
        data = json.dumps(body).encode()
    async with http.request(method, url, data=data, **kw) as response:
        assert response.content_type == "application/json"
        return response.status, await response.json()


def zeros(n: int = AGENTS) -> list[list[float]]:
    return [[0.0, 0.0, 0.0] for _ in range(n)]


def assert_rows(rows: Any, n: int) -> None:
    assert isinstance(rows, list) and len(rows) == n
    assert all(len(row) == wire.OBSERVATION_SIZE and all(math.isfinite(v) for v in row) for row in rows)


def assert_error(status: int, body: Any, expected: int, *words: str) -> None:
    assert status == expected, body
    assert set(body) == {"error"} and isinstance(body["error"], str)
    for word in words:
        assert word in body["error"]


class TestEngineEndpoints:
    async def test_health(self, http: aiohttp.ClientSession, url: str) -> None:
        status, body = await call(http, "GET", f"{url}/health")
        assert status == 200 and body["status"] == "ok" and body["engine"] == ENGINE
        assert isinstance(body["version"], str)

    async def test_scene_state_and_load(self, http: aiohttp.ClientSession, start_sim: Any) -> None:
        url = await start_sim(num_agents=AGENTS)
        assert await call(http, "GET", f"{url}/scene/state") == (
            200,
            {"scene": None, "rl_ready": False, "num_agents": 0},
        )
        status, body = await call(http, "POST", f"{url}/scene/load", {"scene": wire.DEFAULT_SCENE})
        assert (status, body) == (200, {"scene": wire.DEFAULT_SCENE, "loaded": True})
        assert await call(http, "GET", f"{url}/scene/state") == (
            200,
            {"scene": wire.DEFAULT_SCENE, "rl_ready": True, "num_agents": AGENTS},
        )
        await call(http, "POST", f"{url}/scene/load", {"scene": MAIN_SCENE})
        assert await call(http, "GET", f"{url}/scene/state") == (
            200,
            {"scene": MAIN_SCENE, "rl_ready": False, "num_agents": 0},
        )

    async def test_performance(self, http: aiohttp.ClientSession, url: str) -> None:
        for _ in range(3):
            await call(http, "POST", f"{url}/rl/action", {"actions": zeros()})
        status, body = await call(http, "GET", f"{url}/performance")
        assert status == 200
        assert body["engine"]["physics_fps"] == wire.PHYSICS_HZ
        assert body["engine"]["fps"] > 0
        assert (
            isinstance(body["memory"]["static_memory_usage"], int)
            and body["memory"]["static_memory_usage"] > 0
        )

    async def test_reloading_resets_the_tick_and_the_episodes(
        self, http: aiohttp.ClientSession, url: str
    ) -> None:
        _, first = await call(http, "GET", f"{url}/rl/observation")
        await call(http, "POST", f"{url}/rl/action", {"actions": [[0.0, 1.0, 0.0]] * AGENTS})
        await call(http, "POST", f"{url}/scene/load", {"scene": wire.DEFAULT_SCENE})
        _, state = await call(http, "GET", f"{url}/rl/state")
        assert state["tick"] == 0
        assert (await call(http, "GET", f"{url}/rl/observation"))[1] == first  # the CLI seed again


class TestRLEndpoints:
    async def test_spec(self, http: aiohttp.ClientSession, url: str) -> None:
        status, body = await call(http, "GET", f"{url}/rl/spec")
        assert status == 200
        assert body == {
            "protocol": wire.PROTOCOL_VERSION,
            "num_agents": AGENTS,
            "observation_size": wire.OBSERVATION_SIZE,
            "action_size": wire.ACTION_SIZE,
            "observation_fields": [{"name": n, "size": s} for n, s in wire.OBSERVATION_FIELDS],
            "physics_hz": wire.PHYSICS_HZ,
            "action_repeat": wire.DEFAULT_ACTION_REPEAT,
            "scenarios": list(wire.SCENARIOS),
        }

    async def test_reset(self, http: aiohttp.ClientSession, url: str) -> None:
        status, body = await call(http, "POST", f"{url}/rl/reset", {})
        assert status == 200 and body["ignored_options"] == []
        assert_rows(body["observations"], AGENTS)
        status, body = await call(
            http,
            "POST",
            f"{url}/rl/reset",
            {"seed": 5, "agents": [2, 0], "options": {"zoom": 1, "max_speed": 1.0}},
        )
        assert status == 200 and body["ignored_options"] == ["zoom"]
        assert_rows(body["observations"], 2)
        _, current = await call(http, "GET", f"{url}/rl/observation")
        assert [current["observations"][2], current["observations"][0]] == body["observations"]

    async def test_empty_body_resets_too(self, http: aiohttp.ClientSession, url: str) -> None:
        status, body = await call(http, "POST", f"{url}/rl/reset", data=b"")
        assert status == 200 and len(body["observations"]) == AGENTS

    async def test_seeded_reset_is_reproducible(self, http: aiohttp.ClientSession, url: str) -> None:
        _, a = await call(http, "POST", f"{url}/rl/reset", {"seed": 3})
        await call(http, "POST", f"{url}/rl/step", {"actions": [[0.3, 1.0, 0.2]] * AGENTS})
        _, b = await call(http, "POST", f"{url}/rl/reset", {"seed": 3})
        assert a == b

    async def test_action_observation_state_match_step(
        self, http: aiohttp.ClientSession, start_sim: Any
    ) -> None:
        actions = [[0.5, 1.0, -0.3], [0.0, 1.0, 0.0], [-1.0, 0.2, 1.0]]
        one = await start_sim(num_agents=AGENTS, scene=wire.DEFAULT_SCENE, seed=4)
        two = await start_sim(num_agents=AGENTS, scene=wire.DEFAULT_SCENE, seed=4)
        status, tick = await call(http, "POST", f"{one}/rl/action", {"actions": actions})
        assert (status, tick) == (200, {"tick": wire.DEFAULT_ACTION_REPEAT})
        _, obs = await call(http, "GET", f"{one}/rl/observation")
        _, state = await call(http, "GET", f"{one}/rl/state")
        _, step = await call(http, "POST", f"{two}/rl/step", {"actions": actions})
        assert step == {**obs, **state}
        assert "terminal_observations" not in step
        assert_rows(step["observations"], AGENTS)
        assert len(step["done"]) == AGENTS and all(type(d) is bool for d in step["done"])
        for event in step["events"]:
            assert {k: type(v) for k, v in event.items()} == EVENT

    async def test_tick_counts_physics_frames(self, http: aiohttp.ClientSession, start_sim: Any) -> None:
        url = await start_sim(num_agents=1, scene=wire.DEFAULT_SCENE, action_repeat=4)
        for expected in (4, 8):
            _, body = await call(http, "POST", f"{url}/rl/step", {"actions": zeros(1)})
            assert body["tick"] == expected
        await call(http, "POST", f"{url}/rl/reset", {})
        assert (await call(http, "GET", f"{url}/rl/state"))[1]["tick"] == 8

    async def test_auto_reset_returns_terminal_observations(
        self, http: aiohttp.ClientSession, url: str
    ) -> None:
        # a goal closer than the goal radius is reached in the first frame
        near = {"min_goal_distance": 0.0, "max_goal_distance": 0.1}
        await call(http, "POST", f"{url}/rl/reset", {"agents": [1], "options": near})
        status, body = await call(http, "POST", f"{url}/rl/step", {"actions": zeros(), "auto_reset": True})
        assert status == 200
        assert body["done"] == [False, True, False]
        assert body["events"][1]["goal_reached"] is True
        assert list(body["terminal_observations"]) == ["1"]
        terminal, fresh = body["terminal_observations"]["1"], body["observations"][1]
        assert len(terminal) == wire.OBSERVATION_SIZE and terminal != fresh
        goal_distance = wire.OBS["goal_distance"].start
        assert fresh[goal_distance] <= 0.1 + 1e-4  # the persisted options applied to the new episode
        _, state = await call(http, "GET", f"{url}/rl/state")
        assert state["done"] == [False, False, False]
        # the new episode ends again at once, and again reports a terminal observation
        _, again = await call(http, "POST", f"{url}/rl/step", {"actions": zeros(), "auto_reset": True})
        assert list(again["terminal_observations"]) == ["1"]

    async def test_without_auto_reset_done_agents_stay_frozen(
        self, http: aiohttp.ClientSession, url: str
    ) -> None:
        await call(http, "POST", f"{url}/rl/reset", {"agents": [0], "options": {"max_goal_distance": 0.1}})
        _, first = await call(http, "POST", f"{url}/rl/step", {"actions": zeros()})
        _, second = await call(http, "POST", f"{url}/rl/step", {"actions": [[0.0, 1.0, 1.0]] * AGENTS})
        assert first["done"][0] and second["done"][0]
        assert second["events"][0] == {"collisions": 0, "fell": False, "goal_reached": False, "teleports": 0}
        assert second["observations"][0] == first["observations"][0]

    async def test_concurrent_steps_are_serialised(self, http: aiohttp.ClientSession, url: str) -> None:
        answers = await asyncio.gather(
            *(call(http, "POST", f"{url}/rl/step", {"actions": zeros()}) for _ in range(12))
        )
        ticks = sorted(body["tick"] for _, body in answers)
        assert ticks == [wire.DEFAULT_ACTION_REPEAT * (i + 1) for i in range(12)]


class TestErrors:
    @pytest.mark.parametrize(
        ("body", "words"),
        [
            (b"{not json", ("not valid JSON",)),
            (b"[1, 2]", ("JSON list", "object")),
            (b'{"actions": [[0, 0, NaN]]}', ("not valid JSON",)),
            (b'{"actions": [[0, 0, 1e999], [0, 0, 0], [0, 0, 0]]}', ("not valid JSON",)),
            (b"{}", ("'actions' is missing",)),
            (b'{"actions": [[0, 0, 0]]}', ("1 rows", "expected 3 rows")),
            (b'{"actions": [[0, 0, 0], [0, 0], [0, 0, 0]]}', ("row 1 has 2 values",)),
            (b'{"actions": [[0, 0, 0], [0, "1", 0], [0, 0, 0]]}', ("row 1",)),
            (b'{"actions": [[0, 0, 0], [0, true, 0], [0, 0, 0]]}', ("row 1",)),
            (b'{"actions": {"0": [0, 0, 0]}}', ("'actions'",)),
            (b'{"actions": [[0, 0, 0], [0, 0, 0], [0, 0, 1' + b"0" * 400 + b"]]}", ()),
            (b'{"actions": [[0, 0, 0], [0, 0, 0], [0, 0, 0]], "auto_reset": 1}', ("auto_reset",)),
        ],
    )
    async def test_bad_step_bodies_are_400(
        self, http: aiohttp.ClientSession, url: str, body: bytes, words: tuple[str, ...]
    ) -> None:
        status, answer = await call(http, "POST", f"{url}/rl/step", data=body)
        assert_error(status, answer, 400, *words)
        if b"auto_reset" not in body:  # /rl/action ignores auto_reset like any unknown field
            status, answer = await call(http, "POST", f"{url}/rl/action", data=body)
            assert_error(status, answer, 400, *words)

    @pytest.mark.parametrize(
        ("body", "word"),
        [
            ({"seed": -1}, "seed"),
            ({"seed": 1.5}, "seed"),
            ({"seed": True}, "seed"),
            ({"agents": [3]}, "agents"),
            ({"agents": [0, 0]}, "agents"),
            ({"agents": "all"}, "agents"),
            ({"options": [1]}, "options"),
            ({"options": {"max_speed": -1}}, "max_speed"),
            ({"options": {"min_goal_distance": 9, "max_goal_distance": 3}}, "min_goal_distance"),
            ({"options": {"turn_mode": 3}}, "turn_mode"),
        ],
    )
    async def test_bad_resets_are_400(
        self, http: aiohttp.ClientSession, url: str, body: Any, word: str
    ) -> None:
        assert_error(*await call(http, "POST", f"{url}/rl/reset", body), 400, word)

    async def test_bad_scene_loads(self, http: aiohttp.ClientSession, url: str) -> None:
        assert_error(*await call(http, "POST", f"{url}/scene/load", {"scene": 3}), 400, "scene")
        # the default whitelist is the simulator's own scenes: anything else is missing
        missing = {"scene": "res://x.tscn"}
        assert_error(*await call(http, "POST", f"{url}/scene/load", missing), 404, "does not exist")

    async def test_configured_whitelist_refuses_first(
        self, http: aiohttp.ClientSession, start_sim: Any
    ) -> None:
        url = await start_sim(num_agents=1, whitelist=[wire.DEFAULT_SCENE])
        for scene in (MAIN_SCENE, "res://x.tscn"):
            assert_error(*await call(http, "POST", f"{url}/scene/load", {"scene": scene}), 403, "whitelist")
        assert (await call(http, "POST", f"{url}/scene/load", {"scene": wire.DEFAULT_SCENE}))[0] == 200

    async def test_whitelisted_but_unknown_scene_is_404(
        self, http: aiohttp.ClientSession, start_sim: Any
    ) -> None:
        url = await start_sim(num_agents=1, whitelist=["res://scenes/elsewhere.tscn", wire.DEFAULT_SCENE])
        body = {"scene": "res://scenes/elsewhere.tscn"}
        assert_error(*await call(http, "POST", f"{url}/scene/load", body), 404, "does not exist")
        assert_error(*await call(http, "POST", f"{url}/scene/load", {"scene": MAIN_SCENE}), 403, "whitelist")

    async def test_unknown_path_is_404_and_wrong_method_405(
        self, http: aiohttp.ClientSession, url: str
    ) -> None:
        assert_error(*await call(http, "GET", f"{url}/rl/teleport"), 404, "/rl/teleport")
        status, body = await call(http, "GET", f"{url}/rl/step")
        assert_error(status, body, 405, "POST")

    async def test_rl_before_an_rl_scene_is_409(self, http: aiohttp.ClientSession, start_sim: Any) -> None:
        url = await start_sim(num_agents=2)
        for method, path in (("GET", "/rl/spec"), ("GET", "/rl/observation"), ("GET", "/rl/state")):
            assert_error(*await call(http, method, f"{url}{path}"), 409, "/scene/load")
        assert_error(*await call(http, "POST", f"{url}/rl/step", {"actions": zeros(2)}), 409)
        await call(http, "POST", f"{url}/scene/load", {"scene": MAIN_SCENE})
        assert_error(*await call(http, "POST", f"{url}/rl/reset", {}), 409, "no RL agents")

    async def test_large_body_is_413(self, http: aiohttp.ClientSession, start_sim: Any) -> None:
        url = await start_sim(num_agents=1, scene=wire.DEFAULT_SCENE, max_body_bytes=1000)
        body = {"actions": zeros(1), "padding": "x" * 2000}
        assert_error(*await call(http, "POST", f"{url}/rl/step", body), 413, "--max-body-bytes")
        assert (await call(http, "POST", f"{url}/rl/step", {"actions": zeros(1)}))[0] == 200

    async def test_token(self, http: aiohttp.ClientSession, start_sim: Any) -> None:
        url = await start_sim(num_agents=1, scene=wire.DEFAULT_SCENE, token="s3cret")
        assert (await call(http, "GET", f"{url}/health"))[0] == 200
        assert_error(*await call(http, "GET", f"{url}/rl/spec"), 401, "missing")
        wrong = {"Authorization": "Bearer guess"}
        assert_error(*await call(http, "GET", f"{url}/rl/spec", headers=wrong), 401, "wrong")
        assert_error(*await call(http, "GET", f"{url}/no/such/path", headers=wrong), 401)  # 401 before 404
        good = {"Authorization": "Bearer s3cret"}
        assert (await call(http, "GET", f"{url}/rl/spec", headers=good))[0] == 200


class TestWhitelistFile:
    @pytest.mark.parametrize("content", [["a.tscn", "b.tscn"], {"scenes": ["a.tscn", "b.tscn"]}])
    def test_formats(self, tmp_path: Path, content: Any) -> None:
        path = tmp_path / "scene_whitelist.json"
        path.write_text(json.dumps(content))
        assert load_whitelist(path) == {"a.tscn", "b.tscn"}

    @pytest.mark.parametrize("text", ["{", '{"scenes": 3}', "[1]"])
    def test_bad_files(self, tmp_path: Path, text: str) -> None:
        path = tmp_path / "scene_whitelist.json"
        path.write_text(text)
        with pytest.raises(ConfigError, match="whitelist"):
            load_whitelist(path)


async def test_cli_prints_the_line_serves_and_exits_cleanly_on_sigterm(http: aiohttp.ClientSession) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spacetime_rl.sim", "--port", "0", "--agents", "2",
        "--scene", wire.DEFAULT_SCENE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), timeout=30)).decode()
        prefix = "spacetime-sim listening on http://127.0.0.1:"
        assert line.startswith(prefix) and line.endswith("\n"), line
        url = line.removeprefix("spacetime-sim listening on ").strip()
        assert (await call(http, "GET", f"{url}/health"))[0] == 200
        assert (await call(http, "GET", f"{url}/rl/spec"))[1]["num_agents"] == 2
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), timeout=30) == 0
        assert await process.stdout.read() == b""  # exactly one line
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_cli_rejects_bad_arguments() -> None:
    result = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spacetime_rl.sim", "--agents", "0", stderr=subprocess.PIPE
    )
    _, stderr = await result.communicate()
    assert result.returncode == 2 and b"--agents" in stderr


def test_step_delay_steps_the_world_then_waits_without_blocking_the_server() -> None:
    """--step-delay-ms: the step is taken at once (the tick moves), then the answer waits, and
    meanwhile the server answers other requests: waiting, as Godot's physics time is, not CPU."""
    import socket

    from sim_process import SimProcess

    server = SimProcess("--agents", str(AGENTS), "--scene", wire.DEFAULT_SCENE, "--step-delay-ms", "600000")
    try:
        body = json.dumps({"actions": [[0.0, 1.0, 0.0]] * AGENTS, "auto_reset": True}).encode()
        with socket.create_connection((server.host, server.port), timeout=30) as step:
            step.sendall(
                b"POST /rl/step HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            ticks: list[int] = []
            while not ticks or ticks[-1] == 0:  # the step request may still be on its way
                status, data = server.request("GET", "/rl/state")
                assert status == 200, data
                ticks.append(json.loads(data)["tick"])
            assert ticks[-1] == wire.DEFAULT_ACTION_REPEAT  # one step of physics frames
            assert server.request("GET", "/health")[0] == 200
            step.setblocking(False)
            with pytest.raises(BlockingIOError):  # stepped, and still waiting out its physics time
                step.recv(1)
    finally:
        server.stop()
    without = SimProcess("--agents", str(AGENTS), "--scene", wire.DEFAULT_SCENE)
    try:
        status, data = without.request("POST", "/rl/step", body, {"Content-Type": "application/json"})
        assert status == 200 and json.loads(data)["tick"] == wire.DEFAULT_ACTION_REPEAT
    finally:
        without.stop()


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_step_delay_must_be_milliseconds(value: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spacetime_rl.sim", "--step-delay-ms", value],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "--step-delay-ms" in result.stderr and "milliseconds" in result.stderr
