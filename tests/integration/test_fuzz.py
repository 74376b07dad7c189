"""The simulator under hostile input, over real HTTP: no request may cause a 5xx or hurt the scene.

A simulator subprocess (token, whitelist, small body limit) takes a few thousand generated requests:
random JSON of every shape, near-valid bodies with wrong types and huge or non-finite numbers,
unknown methods and paths, odd headers, raw malformed HTTP. Afterwards it must still be healthy
and step correctly. Then eight clients step and reset the same scene concurrently. A simulator
without a token (the default) refuses what a web page the developer has open can send.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from typing import Any, Final

import aiohttp
import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sim_process import AGENTS, AUTH, TOKEN, SimProcess

from spacetime_rl.protocol import wire

MAX_BODY: Final = 64 * 1024
PATHS: Final = [
    "/health",
    "/performance",
    "/scene/load",
    "/scene/state",
    "/rl/spec",
    "/rl/reset",
    "/rl/step",
    "/rl/action",
    "/rl/observation",
    "/rl/state",
]
FUZZ = settings(
    max_examples=700,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    whitelist = tmp_path_factory.mktemp("fuzz") / "scene_whitelist.json"
    whitelist.write_text(json.dumps({"scenes": [wire.DEFAULT_SCENE]}))
    started = SimProcess(
        *("--agents", str(AGENTS), "--token", TOKEN, "--whitelist", str(whitelist)),
        *("--scene", wire.DEFAULT_SCENE, "--seed", "0", "--max-body-bytes", str(MAX_BODY)),
    )
    yield started
    started.assert_healthy()
    started.stop()
    print(f"\nfuzz: {started.requests} requests, statuses {dict(sorted(started.statuses.items()))}")


def assert_no_5xx(status: int, data: bytes, what: object, *, json_error: bool = True) -> None:
    """No 5xx; an error is `{"error": "..."}` unless aiohttp's HTTP parser refused the request itself."""
    assert status < 500, f"{what!r} -> {status} {data[:300]!r}"
    if status >= 400 and json_error:
        assert isinstance(json.loads(data)["error"], str), (what, data[:300])


numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, -1e308, 5e-324, 2**53 + 1, -0.0]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=30,
)
rows = st.lists(st.one_of(numbers, scalars), min_size=0, max_size=5)
near_valid_bodies = st.one_of(
    st.fixed_dictionaries(
        {"actions": st.lists(rows, max_size=6) | json_values}, optional={"auto_reset": scalars}
    ),
    st.fixed_dictionaries(
        {},
        optional={
            "seed": scalars,
            "agents": st.lists(st.integers(-3, 6) | scalars, max_size=6) | scalars,
            "options": st.dictionaries(
                st.sampled_from(
                    [
                        "min_goal_distance",
                        "max_goal_distance",
                        "max_speed",
                        "max_rotation_speed",
                        "turn_mode",
                        "x",
                    ]
                ),
                scalars,
                max_size=4,
            )
            | scalars,
        },
    ),
    st.fixed_dictionaries(
        {
            "scene": st.sampled_from(
                [wire.DEFAULT_SCENE, "res://scenes/main.tscn", "res://x.tscn", "../../etc/passwd"]
            )
            | scalars
        }
    ),
)


def encode(value: Any) -> bytes:
    # json.dumps writes NaN/Infinity literals, which JSON forbids: exactly the bad input wanted.
    return json.dumps(value, allow_nan=True).encode()


@FUZZ
@given(
    method=st.sampled_from(["POST", "POST", "GET", "PUT"]),
    path=st.sampled_from(["/rl/step", "/rl/reset", "/rl/action", "/scene/load"]),
    body=near_valid_bodies | json_values,
    authorised=st.sampled_from([True, True, True, False]),  # mostly past the token check
)
def test_near_valid_bodies_never_cause_a_5xx(
    server: SimProcess, method: str, path: str, body: Any, authorised: bool
):
    headers = {"Content-Type": "application/json", **(AUTH if authorised else {})}
    status, data = server.request(method, path, encode(body), headers)
    assert_no_5xx(status, data, (method, path, body))


@FUZZ
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "FOO"]),
    path=st.sampled_from(PATHS) | st.from_regex(r"\A/[a-zA-Z0-9/_.%~-]{0,40}\Z"),
    body=st.none() | st.binary(max_size=200) | st.builds(encode, json_values),
    headers=st.dictionaries(
        st.sampled_from(["Content-Type", "Accept", "Authorization", "X-Whatever", "Accept-Encoding"]),
        st.sampled_from(
            [
                "application/json",
                "application/octet-stream",
                "text/plain",
                "*/*",
                f"Bearer {TOKEN}",
                "Bearer",
                "Basic x",
                "",
                "gzip",
            ]
        ),
        max_size=4,
    ),
)
def test_any_method_path_body_and_headers_never_cause_a_5xx(
    server: SimProcess, method: str, path: str, body: bytes | None, headers: dict[str, str]
):
    status, data = server.request(method, path, body, AUTH | headers)  # `headers` may spoil the token
    # HEAD answers carry no body; aiohttp's parser answers an unknown method in plain text.
    assert_no_5xx(status, data, (method, path, body, headers), json_error=method not in ("HEAD", "FOO"))


BROKEN_REQUESTS: Final = [
    b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /rl/step HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n{}",
    b"POST /rl/step HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}",
    b"POST /rl/step HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
    b"POST /rl/step HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
    b"GET /health HTTP/9.9\r\n\r\n",
    b"GET /health\r\n\r\n",
    b"GARBAGE\r\n\r\n",
    b"\x00\x01\x02\xff\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Without Colon\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Long: " + b"a" * 100_000 + b"\r\n\r\n",
    b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe\r\n\r\n",
    b"GET /rl/spec HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"x\r\n\r\n",
    b"POST /rl/step HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nAuthorization: Bearer "
    + TOKEN.encode()
    + b"\r\nContent-Encoding: gzip\r\n\r\nabcd",
]


@pytest.mark.parametrize("data", BROKEN_REQUESTS, ids=range(len(BROKEN_REQUESTS)))
def test_malformed_http_never_causes_a_5xx(server: SimProcess, data: bytes):
    status_line = server.raw(data)
    assert not status_line.startswith((b"HTTP/1.1 5", b"HTTP/1.0 5")), (data[:80], status_line)


def test_oversized_bodies_get_413(server: SimProcess):
    body = b'{"actions": [' + b"[0.0, 0.0, 0.0]," * (MAX_BODY // 15) + b"[0,0,0]]}"
    status, data = server.request("POST", "/rl/step", body, {**AUTH, "Content-Type": "application/json"})
    assert status == 413 and "error" in json.loads(data)


def test_token_and_whitelist_are_enforced(server: SimProcess):
    assert server.request("GET", "/rl/spec")[0] == 401
    assert server.request("GET", "/rl/spec", headers={"Authorization": "Bearer wrong"})[0] == 401
    assert server.request("GET", "/health")[0] == 200
    scene = json.dumps({"scene": "res://scenes/main.tscn"}).encode()  # exists, but not whitelisted
    assert server.request("POST", "/scene/load", scene, AUTH)[0] == 403
    assert server.request("GET", "/rl/spec", headers={"Authorization": "Bearer \xff\xfe"})[0] == 401


def test_binds_the_loopback_by_default():
    server = SimProcess("--agents", "1")
    try:
        assert server.host == "127.0.0.1"
        listening = [
            c.laddr for c in psutil.Process(server.process.pid).net_connections() if c.status == "LISTEN"
        ]
        assert [address.ip for address in listening] == ["127.0.0.1"]
    finally:
        server.stop()


async def test_concurrent_clients_cannot_corrupt_the_scene(server: SimProcess):
    """Eight clients step and reset one scene at once: answers stay well-formed, ticks never repeat."""
    step_ticks: list[int] = []

    async def client(index: int) -> list[int]:
        ticks = []
        async with aiohttp.ClientSession(headers=AUTH) as session:
            for round_ in range(40):
                if (round_ + index) % 4 == 0:
                    agents = [index % AGENTS] if index % 2 else None
                    body = {"agents": agents, "seed": index, "options": {"max_goal_distance": 2.0 + index}}
                    async with session.post(f"{server.url}/rl/reset", json=body) as answer:
                        assert answer.status == 200
                        observations = np.asarray((await answer.json())["observations"])
                        assert observations.shape == (1 if agents else AGENTS, wire.OBSERVATION_SIZE)
                        assert np.isfinite(observations).all()
                else:
                    actions = np.random.default_rng(round_).uniform(-1, 1, (AGENTS, 3)).tolist()
                    async with session.post(
                        f"{server.url}/rl/step", json={"actions": actions, "auto_reset": True}
                    ) as answer:
                        assert answer.status == 200
                        data = await answer.json()
                    observations = np.asarray(data["observations"])
                    assert observations.shape == (AGENTS, wire.OBSERVATION_SIZE)
                    assert np.isfinite(observations).all()
                    assert len(data["done"]) == len(data["events"]) == AGENTS
                    ticks.append(data["tick"])
        return ticks

    results = await asyncio.gather(*(client(i) for i in range(8)))
    for ticks in results:
        assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)  # each client sees time move on
        step_ticks += ticks
    assert len(set(step_ticks)) == len(step_ticks)  # no two steps took effect at once
    assert all(math.isfinite(t) for t in step_ticks)
    server.assert_healthy()


def test_requests_add_up_to_thousands(server: SimProcess):
    """Runs last in this module: the fuzz above sent thousands of requests and none got a 5xx."""
    assert server.requests >= 1000
    assert not any(status >= 500 for status in server.statuses)


# ---------------------------------------------------------------- web pages and DNS rebinding

SCENE_BODY: Final = json.dumps({"scene": wire.DEFAULT_SCENE}).encode()
JSON: Final = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def open_server() -> Iterator[SimProcess]:
    """A simulator as Godot debug builds serve: no token, loopback."""
    started = SimProcess("--agents", "2", "--allowed-origin", "http://tool.localhost:3000")
    yield started
    started.stop()


def test_a_web_page_cannot_drive_a_server_without_a_token(open_server: SimProcess) -> None:
    # What a page can send without a CORS preflight, under a rebound name: all of it refused.
    attack = {"Origin": "http://evil.example", "Content-Type": "text/plain", "Host": "evil.example:8080"}
    status, data = open_server.request("POST", "/scene/load", SCENE_BODY, attack)
    assert status == 403 and "not this machine" in json.loads(data)["error"]
    assert (
        open_server.request("POST", "/scene/load", SCENE_BODY, {**JSON, "Host": "rebound.example"})[0] == 403
    )
    assert open_server.request("GET", "/rl/spec", headers={"Host": "192.168.1.20:8080"})[0] == 403
    status, data = open_server.request(
        "POST", "/scene/load", SCENE_BODY, {**JSON, "Origin": "http://evil.example"}
    )
    assert status == 403 and "web pages" in json.loads(data)["error"]
    assert open_server.request("GET", "/health", headers={"Origin": "null"})[0] == 403
    status, data = open_server.request("POST", "/scene/load", SCENE_BODY, {"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in json.loads(data)["error"]
    assert open_server.request("POST", "/scene/load", SCENE_BODY)[0] == 415  # no Content-Type at all
    status, data = open_server.request("GET", "/scene/state")
    assert json.loads(data)["scene"] is None  # nothing above loaded a scene


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost:8080", "[::1]:8080", "127.1.2.3", "app.localhost"])
def test_loopback_names_and_allowed_origins_are_served(open_server: SimProcess, host: str) -> None:
    assert open_server.request("POST", "/scene/load", SCENE_BODY, {**JSON, "Host": host})[0] == 200
    allowed = {**JSON, "Host": host, "Origin": "http://tool.localhost:3000"}
    assert open_server.request("POST", "/scene/load", SCENE_BODY, allowed)[0] == 200


def test_allowed_host_extends_the_loopback_names() -> None:
    server = SimProcess("--agents", "1", "--allowed-host", "sim.internal")
    try:
        assert server.request("GET", "/health", headers={"Host": "sim.internal:9000"})[0] == 200
        assert server.request("GET", "/health", headers={"Host": "other.internal"})[0] == 403
    finally:
        server.stop()


def test_a_non_loopback_address_needs_a_token_or_insecure() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "spacetime_rl.sim", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert (
        "--token" in refused.stderr
        and "SPACETIME_RL_TOKEN" in refused.stderr
        and "--insecure" in refused.stderr
    )
    server = SimProcess("--host", "0.0.0.0", "--agents", "1", "--insecure")
    try:
        assert server.request("GET", "/health", headers={"Host": "127.0.0.1"})[0] == 200
        assert server.request("GET", "/health")[0] == 403  # Host: 0.0.0.0 names no machine
    finally:
        server.stop()


def test_the_token_comes_from_the_environment_and_stays_off_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SPACETIME_RL_TOKEN", "from-env")
    server = SimProcess("--agents", "1")
    try:
        assert "from-env" not in " ".join(psutil.Process(server.process.pid).cmdline())
        assert server.request("GET", "/rl/spec")[0] == 401
        assert server.request("GET", "/scene/state", headers={"Authorization": "Bearer from-env"})[0] == 200
    finally:
        server.stop()


def test_odd_digits_and_huge_agent_counts_are_4xx_or_refused(open_server: SimProcess) -> None:
    open_server.request("POST", "/scene/load", SCENE_BODY, JSON)
    for agent in ("%C2%B2", "%D9%A3", "-1", "99999999999999999999"):  # "²", Arabic-Indic 3
        status, data = open_server.request("GET", f"/debug/layout?agent={agent}")
        assert_no_5xx(status, data, agent)
    refused = subprocess.run(
        [sys.executable, "-m", "spacetime_rl.sim", "--agents", "1000000000000"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2 and f"more than the {wire.MAX_AGENTS}" in refused.stderr
