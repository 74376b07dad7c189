"""The simulator's aiohttp app: protocol v1 (docs/protocol.md) over a `World`.

Every request is validated before it touches the world, so no input can cause a 5xx; every error
leaves as `{"error": "..."}` with the status the protocol assigns.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import itertools
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, Final

import numpy as np
import orjson
from aiohttp import hdrs, web

from spacetime_rl.errors import ConfigError
from spacetime_rl.protocol import Events, StepResult, access, encode_step, wire
from spacetime_rl.sim.connections import GuardedServer
from spacetime_rl.sim.scenarios import PLATFORM_HALF_SIZE
from spacetime_rl.sim.world import GOAL_RADIUS, StepOutcome, World, ignored_options

__all__ = ["ENGINE", "MAIN_SCENE", "VERSION", "Listener", "create_app", "load_whitelist", "serve"]

ENGINE: Final = "spacetime-sim"
VERSION: Final = "1.0.0"
MAIN_SCENE: Final = "res://scenes/main.tscn"
#: Scenes the simulator can load, and whether each offers the /rl/ endpoints.
SCENES: Final[dict[str, bool]] = {wire.DEFAULT_SCENE: True, MAIN_SCENE: False}
FPS_WINDOW: Final = 2.0  # s of recent steps averaged by /performance
SHUTDOWN_TIMEOUT: Final = 2.0  # s a stopping server lets requests under way finish (aiohttp's: 60)

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RequestError(Exception):
    """A request the protocol refuses: turned into `{"error": message}` with `status`."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _json(body: Any, status: int = 200) -> web.Response:
    # NumPy arrays serialise directly; float32 ones as their shortest float32 repr, which a reader
    # parsing doubles and rounding to float32 recovers bit for bit.
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        content_type="application/json",
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def load_whitelist(path: str | os.PathLike[str]) -> frozenset[str]:
    """Scene paths from a Godot `config/scene_whitelist.json`: a JSON list or `{"scenes": [...]}`."""
    try:
        data = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ConfigError(
            f"whitelist {str(path)!r} is unreadable or not JSON ({exc}); pass a JSON list of scenes"
        ) from exc
    scenes = data.get("scenes") if isinstance(data, dict) else data
    if not isinstance(scenes, list) or not all(isinstance(s, str) for s in scenes):
        raise ConfigError(
            f'whitelist {str(path)!r} holds {type(scenes).__name__}; expected a list of scene paths or {{"scenes": [...]}}'
        )
    return frozenset(scenes)


class _Simulator:
    """Server state: the loaded scene, its world, and the lock serialising world access."""

    def __init__(
        self,
        num_agents: int,
        seed: int | None,
        action_repeat: int,
        whitelist: frozenset[str] | None,
        step_delay: float = 0.0,
    ):
        self.num_agents = num_agents
        self.step_delay = step_delay
        self.seed = seed
        self.action_repeat = action_repeat
        self.whitelist = whitelist
        self.scene: str | None = None
        self.world: World | None = None
        self.lock = asyncio.Lock()
        self.step_times: collections.deque[float] = collections.deque()

    def load(self, scene: str) -> None:
        self.world = (
            World(self.num_agents, action_repeat=self.action_repeat, seed=self.seed)
            if SCENES[scene]
            else None
        )
        self.scene = scene
        self.step_times.clear()

    def rl_world(self) -> World:
        if self.world is None:
            loaded = (
                "no scene is loaded"
                if self.scene is None
                else f"the loaded scene {self.scene!r} has no RL agents"
            )
            raise RequestError(409, f'{loaded}; POST /scene/load {{"scene": "{wire.DEFAULT_SCENE}"}} first')
        return self.world

    async def physics_time(self) -> None:
        """Wait `step_delay` seconds after a step, holding the world: Godot's physics time, stood in
        for by waiting (no CPU), so a fleet's throughput can be measured on a small machine."""
        if self.step_delay:
            await asyncio.sleep(self.step_delay)

    def record_step(self) -> None:
        now = time.monotonic()
        self.step_times.append(now)
        while self.step_times and self.step_times[0] < now - FPS_WINDOW:
            self.step_times.popleft()

    def physics_fps(self) -> float:
        """Physics frames simulated per wall second over the last FPS_WINDOW seconds."""
        now = time.monotonic()
        recent = [t for t in self.step_times if t >= now - FPS_WINDOW]
        return len(recent) * self.action_repeat / FPS_WINDOW


_SIM: Final = web.AppKey("simulator", _Simulator)
_BODY_TIMEOUT: Final = web.AppKey("body_timeout", float)


# --- request parsing ---------------------------------------------------------------------------
async def _body(request: web.Request, *, empty_ok: bool = False) -> dict[str, Any]:
    timeout = request.app[_BODY_TIMEOUT]
    try:
        if request.content.is_eof():  # all here (a trainer's step, nearly always): no clock needed
            raw = await request.read()
        else:
            async with asyncio.timeout(timeout):
                raw = await request.read()
    except TimeoutError as exc:
        raise RequestError(
            408,
            f"the request body did not arrive whole within {timeout:g} s; send it at once (--body-timeout)",
        ) from exc
    except web.RequestPayloadError as exc:
        encoding = request.headers.get("Content-Encoding", "none")
        raise RequestError(
            400, f"request body cannot be decoded (Content-Encoding: {encoding}): {exc}; send plain JSON"
        ) from exc
    if not raw.strip() and empty_ok:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, f"request body is not valid JSON ({exc}); send a JSON object") from exc
    if not isinstance(body, dict):
        raise RequestError(400, f"request body is a JSON {type(body).__name__}; send a JSON object")
    return body


_NUMBER_TYPES: Final = frozenset((int, float))


def _is_number(value: object) -> bool:
    return type(value) in _NUMBER_TYPES


def _actions(body: dict[str, Any], num_agents: int) -> np.ndarray:
    """The (N, 3) float64 actions of a step or action body, or a 400 naming the shape seen."""
    if "actions" not in body:
        raise RequestError(400, f"field 'actions' is missing; send {num_agents} rows of [h, v, r]")
    rows = body["actions"]
    if not isinstance(rows, list) or len(rows) != num_agents:
        seen = f"{len(rows)} rows" if isinstance(rows, list) else f"a {type(rows).__name__}"
        raise RequestError(
            400, f"field 'actions' has {seen}; expected {num_agents} rows of [h, v, r], one per agent"
        )
    # The usual well-formed body is checked with C-level iteration only; the row loop finds the fault.
    well_formed = set(map(type, rows)) <= {list} and set(map(len, rows)) <= {wire.ACTION_SIZE}
    if not (well_formed and set(map(type, itertools.chain.from_iterable(rows))) <= _NUMBER_TYPES):
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) != wire.ACTION_SIZE:
                seen = f"{len(row)} values" if isinstance(row, list) else f"a {type(row).__name__}"
                raise RequestError(
                    400, f"actions row {i} has {seen}; expected {wire.ACTION_SIZE} ([h, v, r])"
                )
            if not all(_is_number(v) for v in row):
                raise RequestError(400, f"actions row {i} is {row!r}; expected 3 numbers ([h, v, r])")
    try:
        actions = np.array(rows, dtype=np.float64)
    except OverflowError:  # an integer beyond a double's range
        actions = np.array([[float("inf")] * wire.ACTION_SIZE] * num_agents)
    if not np.isfinite(actions).all():
        i = int(np.flatnonzero(~np.isfinite(actions).all(1))[0])
        raise RequestError(400, f"actions row {i} holds a non-finite number; send finite values in [-1, 1]")
    return actions


def _whole_number(value: object) -> int | None:
    """`value` as an int if JSON Schema calls it an integer (5 and 5.0, as Godot's JSON reads both), else None."""
    if type(value) is int:
        return value
    if type(value) is float and value.is_integer():
        return int(value)
    return None


def _agents(given: object, num_agents: int) -> list[int] | None:
    if given is None:
        return None
    indices = [_whole_number(a) for a in given] if isinstance(given, list) else [None]
    value = [a for a in indices if a is not None]
    if len(value) != len(indices):
        raise RequestError(400, f"field 'agents' is {given!r}; expected a list of agent indices or null")
    bad = [a for a in value if not 0 <= a < num_agents]
    if bad:
        raise RequestError(400, f"field 'agents' has index {bad[0]}; agents are 0 to {num_agents - 1}")
    if len(set(value)) != len(value):
        raise RequestError(400, f"field 'agents' is {value!r}, which lists an agent twice; list each once")
    return value


def _rows(array: np.ndarray) -> list[list[float]]:
    return array.astype(np.float64).tolist()


_NO_EVENTS: Final = {"collisions": 0, "fell": False, "goal_reached": False, "teleports": 0}


def _events(outcome: StepOutcome) -> list[dict[str, Any]]:
    """One event object per agent; only the agents something happened to cost a Python object."""
    columns = (outcome.collisions, outcome.fell, outcome.goal_reached, outcome.teleports)
    events = [_NO_EVENTS] * len(outcome.done)
    eventful = np.flatnonzero(np.logical_or.reduce([column != 0 for column in columns]))
    for i, *values in zip(eventful.tolist(), *(column[eventful].tolist() for column in columns), strict=True):
        events[i] = dict(zip(wire.EVENT_FIELDS, values, strict=True))
    return events


def _accepts_binary(accept: str) -> bool:
    """True when an Accept header lists the binary step type with a non-zero quality."""
    for media_range in accept.split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        if kind.lower() == wire.STEP_BINARY_CONTENT_TYPE:
            quality = 1.0
            for param in params:
                key, _, value = param.partition("=")
                if key.strip().lower() == "q":
                    try:
                        quality = float(value)
                    except ValueError:
                        quality = 0.0
            return quality > 0
    return False


def _binary_step(
    observations: np.ndarray, outcome: StepOutcome, finished: np.ndarray, terminal: np.ndarray
) -> web.Response:
    """The binary `/rl/step` answer (docs/protocol.md, "Binary step body"): `terminal` rows of `finished` agents."""
    events = Events(outcome.collisions, outcome.fell, outcome.goal_reached, outcome.teleports)
    terminal_observations = dict(zip(finished.tolist(), terminal, strict=True))
    result = StepResult(observations, outcome.done, events, outcome.tick, terminal_observations)
    return web.Response(body=encode_step(result), content_type=wire.STEP_BINARY_CONTENT_TYPE)


# --- handlers ----------------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok", "engine": ENGINE, "version": VERSION})


async def scene_load(request: web.Request) -> web.Response:
    sim = request.app[_SIM]
    body = await _body(request)
    scene = body.get("scene")
    if not isinstance(scene, str):
        raise RequestError(
            400, f"field 'scene' is {scene!r}; expected a scene path such as {wire.DEFAULT_SCENE!r}"
        )
    # The default whitelist is exactly the known scenes, so without a configured one an unknown
    # scene is simply missing (404); a configured whitelist refuses first (403).
    if sim.whitelist is not None and scene not in sim.whitelist:
        raise RequestError(403, f"scene {scene!r} is not in the whitelist; allowed: {sorted(sim.whitelist)}")
    if scene not in SCENES:
        raise RequestError(404, f"scene {scene!r} does not exist in the simulator; known: {sorted(SCENES)}")
    async with sim.lock:
        sim.load(scene)
    return _json({"scene": scene, "loaded": True})


async def scene_state(request: web.Request) -> web.Response:
    sim = request.app[_SIM]
    num_agents = sim.world.num_agents if sim.world is not None else 0
    return _json({"scene": sim.scene, "rl_ready": sim.world is not None, "num_agents": num_agents})


async def performance(request: web.Request) -> web.Response:
    sim = request.app[_SIM]
    return _json(
        {
            "engine": {"fps": sim.physics_fps(), "physics_fps": float(wire.PHYSICS_HZ)},
            "memory": {"static_memory_usage": _memory_bytes(sim.world)},
        }
    )


def _memory_bytes(world: World | None) -> int:
    """Resident set size of this process, or the world's arrays where /proc is unavailable."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return world.nbytes if world is not None else 0


async def rl_spec(request: web.Request) -> web.Response:
    world = request.app[_SIM].rl_world()
    return _json(
        {
            "protocol": wire.PROTOCOL_VERSION,
            "num_agents": world.num_agents,
            "observation_size": wire.OBSERVATION_SIZE,
            "action_size": wire.ACTION_SIZE,
            "observation_fields": [{"name": name, "size": size} for name, size in wire.OBSERVATION_FIELDS],
            "physics_hz": wire.PHYSICS_HZ,
            "action_repeat": world.action_repeat,
            "scenarios": list(wire.SCENARIOS),
        }
    )


async def rl_reset(request: web.Request) -> web.Response:
    sim = request.app[_SIM]
    world = sim.rl_world()
    body = await _body(request, empty_ok=True)
    seed = body.get("seed")
    if seed is not None:
        seed = _whole_number(seed)
        if seed is None or not 0 <= seed <= wire.MAX_SEED:
            raise RequestError(
                400,
                f"field 'seed' is {body['seed']!r}; expected an integer from 0 to {wire.MAX_SEED} or null",
            )
    agents = _agents(body.get("agents"), world.num_agents)
    options = body.get("options")
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise RequestError(400, f"field 'options' is {options!r}; expected an object of reset options")
    async with sim.lock:
        observations = world.reset(agents, seed, options)
    return _json({"observations": observations, "ignored_options": ignored_options(options)})


async def rl_action(request: web.Request) -> web.Response:
    sim = request.app[_SIM]
    world = sim.rl_world()
    actions = _actions(await _body(request), world.num_agents)
    async with sim.lock:
        outcome = world.step(actions)
        sim.record_step()
        await sim.physics_time()
    return _json({"tick": outcome.tick})


async def rl_observation(request: web.Request) -> web.Response:
    world = request.app[_SIM].rl_world()
    return _json({"observations": world.observe()})


async def rl_state(request: web.Request) -> web.Response:
    world = request.app[_SIM].rl_world()
    outcome = world.last_outcome
    return _json(
        {
            "done": outcome.done,
            "events": _events(outcome),
            "tick": outcome.tick,
        }
    )


async def rl_step(request: web.Request) -> web.Response:
    sim = request.app[_SIM]
    world = sim.rl_world()
    body = await _body(request)
    actions = _actions(body, world.num_agents)
    auto_reset = body.get("auto_reset", False)
    if type(auto_reset) is not bool:
        raise RequestError(400, f"field 'auto_reset' is {auto_reset!r}; expected true or false")
    # every done agent starts over, including any left frozen by an earlier step without auto_reset
    async with sim.lock:
        outcome = world.step(actions)
        sim.record_step()
        observations = world.observe()
        finished = np.flatnonzero(outcome.done) if auto_reset else np.zeros(0, np.int64)
        terminal = observations[finished]
        if finished.size:
            observations[finished] = world.reset(finished)
        await sim.physics_time()
    if _accepts_binary(request.headers.get("Accept", "")):
        return _binary_step(observations, outcome, finished, terminal)
    answer: dict[str, Any] = {}
    if auto_reset:
        answer["terminal_observations"] = dict(zip(map(str, finished.tolist()), terminal, strict=True))
    answer.update(observations=observations, done=outcome.done, events=_events(outcome), tick=outcome.tick)
    return _json(answer)


async def debug_layout(request: web.Request) -> web.Response:
    """Not protocol v1: one agent's arena, for plots (`GET /debug/layout?agent=i`, docs/simulator.md)."""
    sim = request.app[_SIM]
    world = sim.rl_world()
    raw = request.query.get("agent", "")
    if not (raw.isascii() and raw.isdigit()) or not 0 <= int(raw) < world.num_agents:  # "²".isdigit()
        raise RequestError(
            400, f"query 'agent' is {raw!r}; expected an agent index from 0 to {world.num_agents - 1}"
        )
    async with sim.lock:
        layout = world.layout(int(raw))
    return _json(
        {
            "agent": int(raw),
            "platform_half_size": PLATFORM_HALF_SIZE,
            "goal_radius": GOAL_RADIUS,
            "boxes": _rows(layout.boxes),
            "pillars": _rows(layout.pillars),
            "pits": _rows(layout.pits),
            "goal": layout.goal.tolist(),
        }
    )


# --- middlewares -------------------------------------------------------------------------------
def _http_error_message(request: web.Request, exc: web.HTTPException, max_body_bytes: int) -> str:
    if exc.status == 404:
        return f"no endpoint {request.method} {request.path}; see docs/protocol.md for the endpoints"
    if exc.status == 405:
        allowed = exc.headers.get("Allow", "")
        return f"{request.method} is not allowed on {request.path}; use {allowed or 'another method'}"
    if exc.status == 413:
        return (
            f"request body exceeds the server's limit of {max_body_bytes} bytes; send a smaller body "
            "or start the simulator with a larger --max-body-bytes"
        )
    return exc.text or exc.reason


def _middlewares(
    token: str | None,
    max_body_bytes: int,
    allowed_hosts: frozenset[str] = frozenset(),
    allowed_origins: frozenset[str] = frozenset(),
) -> list[Any]:
    """Errors as JSON, then the web-page guard (protocol/access.py), then the token."""

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except RequestError as exc:
            return _error(exc.status, exc.message)
        except ConfigError as exc:  # the world refused a value the parsing let through
            return _error(400, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = _error(exc.status, _http_error_message(request, exc, max_body_bytes))
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            return _error(
                500, f"internal simulator error serving {request.method} {request.path}; this is a bug"
            )

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = access.refusal(
            host=request.headers.get(hdrs.HOST),
            origin=request.headers.get(hdrs.ORIGIN),
            content_type=request.headers.get(hdrs.CONTENT_TYPE),
            has_body=request.body_exists,
            allowed_hosts=allowed_hosts,
            allowed_origins=allowed_origins,
        )
        if refused is not None:
            return _error(*refused)
        length = request.content_length or 0
        if length > max_body_bytes:  # answered now, not after the bytes arrive
            raise web.HTTPRequestEntityTooLarge(max_size=max_body_bytes, actual_size=length)
        return await handler(request)

    @web.middleware
    async def auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is not None and request.path != "/health":
            given = request.headers.get(hdrs.AUTHORIZATION, "")
            # Tokens are ASCII (create_app); other bytes never match, and must not reach encode()
            if not (given.isascii() and hmac.compare_digest(given.encode(), f"Bearer {token}".encode())):
                what = "wrong" if given else "missing"
                return _error(
                    401, f"the Authorization header is {what}; send 'Authorization: Bearer <token>'"
                )
        return await handler(request)

    return [errors, guard, auth]


def create_app(
    *,
    num_agents: int = wire.DEFAULT_AGENTS,
    token: str | None = None,
    whitelist: Iterable[str] | None = None,
    scene: str | None = None,
    seed: int | None = None,
    action_repeat: int = wire.DEFAULT_ACTION_REPEAT,
    max_body_bytes: int = 1 << 20,
    body_timeout: float = wire.BODY_TIMEOUT,
    allowed_hosts: Iterable[str] = (),
    allowed_origins: Iterable[str] = (),
    step_delay: float = 0.0,
) -> web.Application:
    """The protocol v1 app. `scene` is loaded at once (else nothing is until POST /scene/load).

    `step_delay` seconds are waited after every step (/rl/step, /rl/action) before answering: a
    stand-in for Godot's physics time in benchmarks (0: answer at once).

    `seed` seeds every scene load's reset (random when None); `whitelist` replaces the default
    whitelist (the simulator's two scenes). Requests from web pages and under foreign host names
    are refused unless `allowed_origins` / `allowed_hosts` name them (protocol/access.py).
    """
    if not 1 <= num_agents <= wire.MAX_AGENTS:
        raise ConfigError(f"num_agents is {num_agents}; the simulator runs 1 to {wire.MAX_AGENTS} agents")
    if action_repeat < 1:
        raise ConfigError(f"action_repeat is {action_repeat}; it must be at least 1 physics frame")
    if token is not None and not access.is_valid_token(token):
        raise ConfigError(f"the token (--token or {wire.TOKEN_VARIABLE}) {access.TOKEN_FIX}")
    if max_body_bytes < 1:
        raise ConfigError(f"max_body_bytes is {max_body_bytes}; it must be positive")
    if not body_timeout > 0:
        raise ConfigError(f"body_timeout is {body_timeout}; it must be a positive number of seconds")
    if seed is not None and seed < 0:
        raise ConfigError(f"seed is {seed}; expected a non-negative integer")
    if not (math.isfinite(step_delay) and step_delay >= 0):
        raise ConfigError(f"step_delay is {step_delay}; expected seconds >= 0")
    sim = _Simulator(
        num_agents, seed, action_repeat, None if whitelist is None else frozenset(whitelist), step_delay
    )
    if scene is not None:
        if scene not in SCENES:
            raise ConfigError(f"scene {scene!r} is not a simulator scene; known: {sorted(SCENES)}")
        sim.load(scene)
    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=_middlewares(
            token,
            max_body_bytes,
            frozenset(host.lower() for host in allowed_hosts),
            frozenset(allowed_origins),
        ),
    )
    app[_SIM] = sim
    app[_BODY_TIMEOUT] = body_timeout
    app.router.add_get("/health", health)
    app.router.add_post("/scene/load", scene_load)
    app.router.add_get("/scene/state", scene_state)
    app.router.add_get("/performance", performance)
    app.router.add_get("/rl/spec", rl_spec)
    app.router.add_post("/rl/reset", rl_reset)
    app.router.add_post("/rl/action", rl_action)
    app.router.add_get("/rl/observation", rl_observation)
    app.router.add_get("/rl/state", rl_state)
    app.router.add_post("/rl/step", rl_step)
    app.router.add_get("/debug/layout", debug_layout)
    return app


class Listener:
    """A served app: its listening socket behind the flood guard (connections.py). `cleanup()` stops it."""

    def __init__(self, runner: web.AppRunner, server: asyncio.Server) -> None:
        self._runner, self._server = runner, server
        self.port: int = server.sockets[0].getsockname()[1]

    async def cleanup(self) -> None:
        self._server.close()  # no new connections, then aiohttp closes the open ones
        await self._runner.cleanup()


async def serve(
    app: web.Application,
    host: str = wire.DEFAULT_HOST,
    port: int = 0,
    *,
    max_connections: int = wire.MAX_CONNECTIONS,
    header_timeout: float = wire.HEADER_TIMEOUT,
) -> Listener:
    """Start `app` on host:port (0 picks a free port); call `cleanup()` on the answer to stop it."""
    if max_connections < 1:
        raise ConfigError(f"max_connections is {max_connections}; it must be at least 1")
    if not header_timeout > 0:
        raise ConfigError(f"header_timeout is {header_timeout}; it must be a positive number of seconds")
    runner = web.AppRunner(
        app, access_log=None, keepalive_timeout=wire.IDLE_TIMEOUT, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    await runner.setup()
    assert runner.server is not None  # set by setup()
    guarded = GuardedServer(runner.server, max_connections=max_connections, header_timeout=header_timeout)
    try:
        server = await asyncio.get_running_loop().create_server(guarded, host, port, reuse_address=True)
    except BaseException:
        await runner.cleanup()
        raise
    return Listener(runner, server)
