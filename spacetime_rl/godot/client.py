"""Async client for HTTP protocol v1, spoken by Godot's HTTP API and the embedded simulator.

`/rl/step` also has a blocking split form, `send_step` then `receive_step`, on its own kept-alive
connection (`step_connection.py`): a VecEnv sends to every server, then reads each answer, so the
servers step at the same time and no event loop sits on the hot path.

Every response is checked against `docs/protocol.md` before it is handed on: a server that breaks the
protocol raises `ProtocolError` naming the endpoint and the field, never returns bad data.
"""

from __future__ import annotations

import asyncio
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, NoReturn

import aiohttp
import httptools
import numpy as np
import orjson
from yarl import URL

from spacetime_rl.errors import (
    ConfigError,
    GodotConnectionError,
    GodotError,
    GodotHTTPError,
    GodotTimeoutError,
    ProtocolError,
    SpecMismatchError,
)
from spacetime_rl.godot import wire
from spacetime_rl.godot.step_connection import StepConnection

__all__ = ["Events", "GodotClient", "RLSpec", "ResetResult", "StepResult", "Timeouts"]

# Enough for a few concurrent calls on one client; a VecEnv makes one call per server per step.
_MAX_CONNECTIONS: Final = 4
_ERROR_BODY_CHARS: Final = 200
_JSON_HEADERS: Final = {"Content-Type": "application/json"}
# Binary preferred, JSON accepted: a server without the extension answers JSON and that is fine.
_BINARY_STEP_HEADERS: Final = {
    **_JSON_HEADERS,
    "Accept": f"{wire.STEP_BINARY_CONTENT_TYPE}, application/json;q=0.5",
}
_TERMINAL_RECORD: Final = np.dtype(list(wire.STEP_BINARY_TERMINAL_RECORD))
_NUMBER_KINDS: Final = frozenset("iuf")
_INT32_MAX: Final = np.iinfo(np.int32).max


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `connect` bounds reaching the server, `request` a whole call including the answer."""

    connect: float = 5.0
    request: float = 30.0

    def __post_init__(self) -> None:
        for key in ("connect", "request"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"env.{key}_timeout must be a positive number of seconds, got {value!r}: "
                    f"set e.g. env.{key}_timeout={getattr(Timeouts, key)}"
                )


@dataclass(frozen=True)
class RLSpec:
    """What `/rl/spec` reports about the loaded RL scene."""

    protocol: int
    num_agents: int
    observation_size: int
    action_size: int
    observation_fields: tuple[tuple[str, int], ...]
    physics_hz: float
    action_repeat: int  # physics frames per action
    scenarios: tuple[str, ...] = ()  # values of the `scenario` reset option; () when the server has none


@dataclass(frozen=True)
class Events:
    """Per-agent counts since the previous action; each array has one entry per agent."""

    collisions: np.ndarray  # int32 (N,)
    fell: np.ndarray  # bool (N,)
    goal_reached: np.ndarray  # bool (N,)
    teleports: np.ndarray  # int32 (N,)


@dataclass(frozen=True)
class StepResult:
    """One `/rl/step`: rows are agents. With auto_reset, finished agents' rows start their next episode."""

    observations: np.ndarray  # float32 (N, 48)
    done: np.ndarray  # bool (N,)
    events: Events
    tick: int
    terminal_observations: dict[int, np.ndarray]  # agent -> float32 (48,), only with auto_reset


@dataclass(frozen=True)
class ResetResult:
    """One `/rl/reset`: a row per reset agent, in the order asked for."""

    observations: np.ndarray  # float32 (k, 48)
    ignored_options: tuple[str, ...]


_STATUS_HINTS: Final[dict[int, str]] = {
    401: "set {prefix}token to the server's token",
    403: "add the scene to config/scene_whitelist.json",
    404: "check {prefix}url points at a protocol v1 server and the scene path exists",
    409: "load an RL scene first (load_scene)",
    413: "the request body is larger than the server accepts",
}


class GodotClient:
    """Async client for one server; use as `async with GodotClient(url) as client:`.

    `name` is the config key the URL came from; messages quote it and its sibling keys
    (`env.token`, `env.request_timeout`, ...) so a user knows what to change. `binary_step` asks
    `/rl/step` for the binary body (docs/protocol.md, "Binary step body"); a server that does not
    offer it answers JSON, which the client reads as usual. `busy_poll` > 0: `receive_step` spins
    on its socket for up to that many seconds before it sleeps (`EnvConfig.client_busy_poll`).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        timeouts: Timeouts = Timeouts(),
        name: str = "env.url",
        binary_step: bool = True,
        busy_poll: float = 0.0,
    ) -> None:
        try:
            parsed: URL | None = URL(url)
        except (TypeError, ValueError):
            parsed = None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(
                f"{name} must be an http(s) URL with a host, got {url!r}: "
                f"set e.g. {name}=http://{wire.DEFAULT_HOST}:{wire.DEFAULT_PORT}"
            )
        self.url = str(parsed).rstrip("/")
        self.name = name
        self._prefix = name.rpartition(".")[0] + "." if "." in name else ""
        self._timeouts = timeouts
        self._binary_step = binary_step
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection = StepConnection(
            parsed,
            parsed.path.rstrip("/") + "/rl/step",
            {**self._headers, **(_BINARY_STEP_HEADERS if binary_step else _JSON_HEADERS)},
            timeouts.connect,
            timeouts.request,
        )
        self._busy_poll = busy_poll
        self._pending_step: GodotError | bool = False  # sent and not yet received; or the send's error
        self._num_agents: int | None = None  # from the first spec(); a scene load forgets it

    async def __aenter__(self) -> GodotClient:
        self._open_session()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Release the connections; a later call opens new ones."""
        self._connection.close()
        self._pending_step = False
        if self._session is not None:
            await self._session.close()
        self._session = None
        self._loop = None

    def __repr__(self) -> str:
        return f"GodotClient({self.url!r}, name={self.name!r})"

    # ---------------------------------------------------------------- engine endpoints

    async def health(self) -> dict[str, Any]:
        body = await self._request("GET", "/health")
        check = _Check(self, "/health", body)
        for field in ("status", "engine", "version"):
            check.typed(body, field, str)
        return body

    async def health_check(self) -> bool:
        """True when the server answers `/health` with status "ok"; never raises."""
        try:
            return (await self.health())["status"] == "ok"
        except GodotError:
            return False

    async def load_scene(self, scene: str = wire.DEFAULT_SCENE) -> dict[str, Any]:
        self._num_agents = None
        body = await self._request("POST", "/scene/load", {"scene": scene})
        check = _Check(self, "/scene/load", body)
        check.typed(body, "scene", str)
        check.typed(body, "loaded", bool)
        return body

    async def get_scene_state(self) -> dict[str, Any]:
        body = await self._request("GET", "/scene/state")
        check = _Check(self, "/scene/state", body)
        if body.get("scene") is not None:
            check.typed(body, "scene", str)
        elif "scene" not in body:
            check.fail("field 'scene' is missing, expected a string or null")
        check.typed(body, "rl_ready", bool)
        check.count(body, "num_agents")
        return body

    async def get_performance_metrics(self) -> dict[str, Any]:
        body = await self._request("GET", "/performance")
        check = _Check(self, "/performance", body)
        engine = check.typed(body, "engine", dict)
        memory = check.typed(body, "memory", dict)
        for field in ("fps", "physics_fps"):
            check.number(engine, field, "engine.")
        check.count(memory, "static_memory_usage", "memory.")
        return body

    async def debug_layout(self, agent: int) -> dict[str, Any] | None:
        """One agent's arena from the simulator's `GET /debug/layout` (not protocol v1; see
        docs/simulator.md), or None when the server does not have that endpoint (404)."""
        try:
            return await self._request("GET", f"/debug/layout?agent={agent}")
        except GodotHTTPError as exc:
            if exc.status == 404:
                return None
            raise

    # ---------------------------------------------------------------- RL endpoints

    async def spec(self) -> RLSpec:
        """The loaded scene's spec, checked against this client's wire types."""
        body = await self._request("GET", "/rl/spec")
        check = _Check(self, "/rl/spec", body)
        fields = check.typed(body, "observation_fields", list)
        observation_fields = []
        for i, entry in enumerate(fields):
            if not (
                isinstance(entry, dict) and isinstance(entry.get("name"), str) and _is_int(entry.get("size"))
            ):
                check.fail(
                    f"field 'observation_fields' entry {i} is {entry!r}, expected {{name: str, size: int}}"
                )
            observation_fields.append((entry["name"], entry["size"]))
        scenarios = check.typed(body, "scenarios", list) if "scenarios" in body else []
        if not all(isinstance(name, str) for name in scenarios):
            check.fail(f"field 'scenarios' is {scenarios!r}, expected a list of strings")
        spec = RLSpec(
            protocol=check.count(body, "protocol"),
            num_agents=check.count(body, "num_agents"),
            observation_size=check.count(body, "observation_size"),
            action_size=check.count(body, "action_size"),
            observation_fields=tuple(observation_fields),
            physics_hz=float(check.number(body, "physics_hz")),
            action_repeat=check.count(body, "action_repeat"),
            scenarios=tuple(scenarios),
        )
        expected = {
            "protocol": wire.PROTOCOL_VERSION,
            "observation_size": wire.OBSERVATION_SIZE,
            "action_size": wire.ACTION_SIZE,
            "observation_fields": wire.OBSERVATION_FIELDS,
        }
        mismatches = [
            f"{key} is {getattr(spec, key)!r}, client expects {value!r}"
            for key, value in expected.items()
            if getattr(spec, key) != value
        ]
        if mismatches:
            raise SpecMismatchError(
                f"{self.url}/rl/spec does not match this client (protocol v{wire.PROTOCOL_VERSION}): "
                + "; ".join(mismatches)
                + ". Update the server or the client so both speak the same protocol.",
                url=self.url,
                endpoint="/rl/spec",
            )
        if spec.num_agents < 1 or spec.action_repeat < 1:
            check.fail(
                f"num_agents={spec.num_agents} and action_repeat={spec.action_repeat} must both be >= 1"
            )
        self._num_agents = spec.num_agents
        return spec

    async def reset(
        self,
        seed: int | None = None,
        agents: Sequence[int] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ResetResult:
        """Start new episodes for `agents` (all when None); options persist for those agents."""
        request: dict[str, Any] = {
            "seed": None if seed is None else operator.index(seed),
            "agents": None if agents is None else [operator.index(a) for a in agents],
            "options": dict(options or {}),
        }
        body = await self._request("POST", "/rl/reset", request)
        check = _Check(self, "/rl/reset", body)
        rows = len(request["agents"]) if agents is not None else self._num_agents
        observations = check.observations(body, "observations", rows)
        ignored = check.typed(body, "ignored_options", list)
        if not all(isinstance(key, str) for key in ignored):
            check.fail(f"field 'ignored_options' is {ignored!r}, expected a list of strings")
        return ResetResult(observations=observations, ignored_options=tuple(ignored))

    async def step(self, actions: np.ndarray, auto_reset: bool = False) -> StepResult:
        """Act for every agent and advance `action_repeat` physics frames, in one round trip."""
        request = self._step_request(actions, auto_reset)
        headers = _BINARY_STEP_HEADERS if self._binary_step else _JSON_HEADERS
        status, content_type, raw = await self._exchange("POST", "/rl/step", request, headers)
        return self._step_result(status, content_type, raw)

    def send_step(self, actions: np.ndarray, auto_reset: bool = False) -> None:
        """Write the `/rl/step` request of `step` and return at once; `receive_step` reads the answer.

        Blocking, on this client's own kept-alive connection (`step_connection.py`). Transport
        errors are raised by `receive_step`, as the same `GodotError`s `step` raises;
        `env.request_timeout` bounds each wait for the answer's bytes. A bad action array raises
        ValueError here, before sending.
        """
        body = orjson.dumps(self._step_request(actions, auto_reset), option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            self._connection.connect()
        except OSError as exc:  # TimeoutError included
            self._pending_step = self._step_error(exc, "connect")
            return
        try:
            self._connection.send(body)
        except OSError as exc:
            self._pending_step = self._step_error(exc, "send")
            return
        self._pending_step = True

    def receive_step(self) -> StepResult:
        """The answer to the last `send_step`, checked as `step` checks it."""
        pending, self._pending_step = self._pending_step, False
        if isinstance(pending, GodotError):
            raise pending
        if not pending or not self._connection.connected:
            raise RuntimeError(f"{self!r}: receive_step() without a send_step() before it")
        try:
            if self._busy_poll:
                self._connection.spin(self._busy_poll)
            answer = self._connection.receive()
        except (OSError, httptools.HttpParserError) as exc:
            raise self._step_error(exc, "receive") from exc
        raw = bytes(answer.body)
        if not 200 <= answer.status < 300:
            raise self._http_error("POST", "/rl/step", answer.status, raw)
        return self._step_result(answer.status, answer.content_type, raw)

    def _step_error(self, exc: Exception, phase: str) -> GodotError:
        """The `GodotError` of a split step's transport failure in `phase` (connect, send, receive).

        Past connecting, the connection is dropped: a late answer must not be read as the next one.
        """
        if phase == "connect":
            timed_out = isinstance(exc, TimeoutError)
            error: GodotError = (
                self._timeout_error("/rl/step", "connect", "reaching the server")
                if timed_out
                else self._connect_error("/rl/step")
            )
        else:
            self._connection.close()
            if phase == "receive" and isinstance(exc, TimeoutError):
                error = self._timeout_error("/rl/step", "request", "an answer to POST")
            else:
                error = self._broken_error("POST", "/rl/step", exc)
        error.__cause__ = exc
        return error

    async def send_action(self, actions: np.ndarray) -> int:
        """Act for every agent; returns the tick. Prefer `step`, which also returns what happened."""
        body = await self._request("POST", "/rl/action", {"actions": self._actions(actions)})
        return _Check(self, "/rl/action", body).count(body, "tick")

    async def get_observation(self) -> np.ndarray:
        body = await self._request("GET", "/rl/observation")
        return _Check(self, "/rl/observation", body).observations(body, "observations", self._num_agents)

    async def get_state(self) -> tuple[np.ndarray, Events, int]:
        body = await self._request("GET", "/rl/state")
        check = _Check(self, "/rl/state", body)
        done = check.flags(body, "done", self._num_agents)
        return done, check.events(body, len(done)), check.count(body, "tick")

    # ---------------------------------------------------------------- transport

    def _actions(self, actions: np.ndarray) -> np.ndarray:
        # float64 so the server sees exactly the float32 values a policy produced.
        array = np.ascontiguousarray(actions, dtype=np.float64)
        rows = self._num_agents
        if array.ndim != 2 or array.shape[1] != wire.ACTION_SIZE or (rows is not None and len(array) != rows):
            expected = f"({rows if rows is not None else 'num_agents'}, {wire.ACTION_SIZE})"
            raise ValueError(f"actions must have shape {expected} for {self.url}, got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"actions for {self.url} contain NaN or infinity; check the policy output")
        return array

    def _step_request(self, actions: np.ndarray, auto_reset: bool) -> dict[str, Any]:
        return {"actions": self._actions(actions), "auto_reset": bool(auto_reset)}

    def _step_result(self, status: int, content_type: str, raw: bytes) -> StepResult:
        if self._binary_step and content_type == wire.STEP_BINARY_CONTENT_TYPE:
            return _Check(self, "/rl/step", {}).binary_step(raw, self._num_agents)
        body = self._decode_json("/rl/step", status, raw)
        check = _Check(self, "/rl/step", body)
        observations = check.observations(body, "observations", self._num_agents)
        num_agents = len(observations)
        done = check.flags(body, "done", num_agents)
        events = check.events(body, num_agents)
        tick = check.count(body, "tick")
        terminal = check.terminal_observations(body, done) if "terminal_observations" in body else {}
        return StepResult(observations, done, events, tick, terminal)

    def _open_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=_MAX_CONNECTIONS),
                timeout=aiohttp.ClientTimeout(
                    total=self._timeouts.request, sock_connect=self._timeouts.connect
                ),
                headers=self._headers,
            )
            self._loop = loop
        elif loop is not self._loop:
            raise RuntimeError(f"{self!r} was opened in another event loop; create one client per loop")
        return self._session

    async def _request(
        self, method: str, endpoint: str, body: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """One call answered with a JSON object; returns the decoded object."""
        status, _, raw = await self._exchange(method, endpoint, body, None if body is None else _JSON_HEADERS)
        return self._decode_json(endpoint, status, raw)

    async def _exchange(
        self,
        method: str,
        endpoint: str,
        body: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
    ) -> tuple[int, str, bytes]:
        """The one place transport failures become `GodotError`s; returns a 2xx answer's status, type and body."""
        session = self._open_session()
        data = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
        try:
            async with session.request(method, self.url + endpoint, data=data, headers=headers) as response:
                status = response.status
                content_type = response.content_type
                raw = await response.read()
        except aiohttp.ConnectionTimeoutError as exc:
            raise self._timeout_error(endpoint, "connect", "reaching the server") from exc
        except TimeoutError as exc:
            raise self._timeout_error(endpoint, "request", f"an answer to {method}") from exc
        except aiohttp.ClientConnectorError as exc:
            raise self._connect_error(endpoint) from exc
        except aiohttp.ClientError as exc:
            raise self._broken_error(method, endpoint, exc) from exc
        if not 200 <= status < 300:
            raise self._http_error(method, endpoint, status, raw)
        return status, content_type, raw

    def _decode_json(self, endpoint: str, status: int, raw: bytes) -> dict[str, Any]:
        try:
            decoded = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(
                f"Protocol error from {self.url}{endpoint}: the {status} answer is not JSON "
                f"({exc}); body starts {_excerpt(raw)!r}",
                url=self.url,
                endpoint=endpoint,
            ) from exc
        if not isinstance(decoded, dict):
            _Check(self, endpoint, {}).fail(f"the body is {type(decoded).__name__}, expected a JSON object")
        return decoded

    def _connect_error(self, endpoint: str) -> GodotConnectionError:
        return GodotConnectionError(
            f"Cannot connect to Godot HTTP API at {self.url} ({self.name}): "
            f"is Godot running with the HTTP API enabled? Check: curl {self.url}/health",
            url=self.url,
            endpoint=endpoint,
        )

    def _broken_error(self, method: str, endpoint: str, exc: BaseException) -> GodotConnectionError:
        return GodotConnectionError(
            f"Connection to {self.url} ({self.name}) broke during {method} {endpoint}: "
            f"{type(exc).__name__}: {exc}. Check the server's log; it may have crashed or restarted.",
            url=self.url,
            endpoint=endpoint,
        )

    def _timeout_error(self, endpoint: str, kind: str, waiting_for: str) -> GodotTimeoutError:
        key = f"{self._prefix}{kind}_timeout"
        seconds = getattr(self._timeouts, kind)
        return GodotTimeoutError(
            f"Timed out after {seconds:g} s waiting for {waiting_for} at {self.url}{endpoint} "
            f"({key}={seconds:g}): check the server is running and not stuck, or raise {key}",
            url=self.url,
            endpoint=endpoint,
        )

    def _http_error(self, method: str, endpoint: str, status: int, raw: bytes) -> GodotHTTPError:
        try:
            message = orjson.loads(raw)["error"]
            if not isinstance(message, str):
                raise TypeError
        except (orjson.JSONDecodeError, TypeError, KeyError):
            message = _excerpt(raw)
        hint = _STATUS_HINTS.get(status)
        suffix = f" Hint: {hint.format(prefix=self._prefix)}." if hint else ""
        return GodotHTTPError(
            f"{method} {self.url}{endpoint} answered {status}: {' '.join(message.split()).rstrip('.')}.{suffix}",
            url=self.url,
            endpoint=endpoint,
            status=status,
        )


def _excerpt(raw: bytes) -> str:
    return raw[:_ERROR_BODY_CHARS].decode("utf-8", errors="replace")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _Check:
    """Checks one decoded body; every failure is a `ProtocolError` naming the endpoint and the field."""

    __slots__ = ("body", "client", "endpoint")

    def __init__(self, client: GodotClient, endpoint: str, body: dict[str, Any]) -> None:
        self.client = client
        self.endpoint = endpoint
        self.body = body

    def fail(self, detail: str) -> NoReturn:
        raise ProtocolError(
            f"Protocol error from {self.client.url}{self.endpoint}: {detail} (see docs/protocol.md)",
            url=self.client.url,
            endpoint=self.endpoint,
        )

    def typed(self, body: Mapping[str, Any], field: str, kind: type, path: str = "") -> Any:
        value = body.get(field)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            found = "missing" if field not in body else f"{type(value).__name__} {value!r:.40}"
            self.fail(f"field '{path}{field}' is {found}, expected {kind.__name__}")
        return value

    def number(self, body: Mapping[str, Any], field: str, path: str = "") -> float | int:
        value = body.get(field)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            found = "missing" if field not in body else repr(value)
            self.fail(f"field '{path}{field}' is {found:.40}, expected a finite number")
        return value

    def count(self, body: Mapping[str, Any], field: str, path: str = "") -> int:
        value: Any = body.get(field)
        if not _is_int(value) or value < 0:
            found = "missing" if field not in body else repr(value)
            self.fail(f"field '{path}{field}' is {found:.40}, expected a non-negative integer")
        return value

    def observations(self, body: Mapping[str, Any], field: str, rows: int | None) -> np.ndarray:
        """float32 (rows, 48); rows=None takes the count from the body."""
        value = self.typed(body, field, list)
        if not value and rows == 0:
            return np.empty((0, wire.OBSERVATION_SIZE), dtype=np.float32)
        try:
            array = np.asarray(value)
        except ValueError:  # ragged
            array = np.empty(0)
        expected_rows = len(value) if rows is None else rows
        if (
            array.shape != (expected_rows, wire.OBSERVATION_SIZE)
            or array.dtype.kind not in _NUMBER_KINDS
            or not np.isfinite(array).all()
        ):
            self._diagnose_rows(field, value, expected_rows)
        return array.astype(np.float32)

    def _diagnose_rows(self, field: str, rows: list[Any], expected_rows: int) -> NoReturn:
        if len(rows) != expected_rows:
            self.fail(f"field '{field}' has {len(rows)} rows, expected {expected_rows} (one per agent)")
        for i, row in enumerate(rows):
            self._diagnose_row(f"field '{field}' row {i}", row)
        self.fail(f"field '{field}' is not a list of {wire.OBSERVATION_SIZE}-number rows")

    def _diagnose_row(self, where: str, row: Any) -> None:
        if not isinstance(row, list):
            self.fail(f"{where} is {type(row).__name__}, expected a list of {wire.OBSERVATION_SIZE} numbers")
        if len(row) != wire.OBSERVATION_SIZE:
            self.fail(f"{where} has {len(row)} values, expected {wire.OBSERVATION_SIZE}")
        for j, x in enumerate(row):
            if isinstance(x, bool) or not isinstance(x, int | float):
                self.fail(f"{where} value {j} is {x!r:.40}, expected a number")
            if not math.isfinite(x):
                self.fail(f"{where} value {j} is {x!r}, expected a finite number")

    def flags(self, body: Mapping[str, Any], field: str, rows: int | None) -> np.ndarray:
        value = self.typed(body, field, list)
        if rows is not None and len(value) != rows:
            self.fail(f"field '{field}' has {len(value)} entries, expected {rows} (one per agent)")
        array = np.asarray(value)
        if array.dtype != bool or array.shape != (len(value),):
            self.fail(f"field '{field}' is {value!r:.60}, expected a list of booleans")
        return array

    def events(self, body: Mapping[str, Any], rows: int) -> Events:
        events = self.typed(body, "events", list)
        if len(events) != rows:
            self.fail(f"field 'events' has {len(events)} entries, expected {rows} (one per agent)")
        try:
            columns = {name: [event[name] for event in events] for name in wire.EVENT_FIELDS}
        except (TypeError, KeyError):
            for i, event in enumerate(events):
                if not isinstance(event, dict):
                    self.fail(f"field 'events' entry {i} is {type(event).__name__}, expected an object")
                missing = [name for name in wire.EVENT_FIELDS if name not in event]
                if missing:
                    self.fail(f"field 'events' entry {i} lacks {', '.join(missing)}")
            self.fail("field 'events' is not a list of event objects")
        arrays = {name: np.asarray(column) for name, column in columns.items()}
        for name in ("collisions", "teleports"):
            array = arrays[name]
            if array.dtype.kind != "i" or (array < 0).any() or (array > _INT32_MAX).any():
                self.fail(f"field 'events' key '{name}' must be a non-negative integer for every agent")
        for name in ("fell", "goal_reached"):
            if arrays[name].dtype != bool:
                self.fail(f"field 'events' key '{name}' must be a boolean for every agent")
        return Events(
            collisions=arrays["collisions"].astype(np.int32),
            fell=arrays["fell"].reshape(rows),
            goal_reached=arrays["goal_reached"].reshape(rows),
            teleports=arrays["teleports"].astype(np.int32),
        )

    def terminal_observations(self, body: Mapping[str, Any], done: np.ndarray) -> dict[int, np.ndarray]:
        value = self.typed(body, "terminal_observations", dict)
        terminal = {}
        for key, row in value.items():
            agent = int(key) if key.isdecimal() else -1
            if not 0 <= agent < len(done) or not done[agent]:
                self.fail(
                    f"field 'terminal_observations' key {key!r} is not the index of an agent done this step"
                )
            self._diagnose_row(f"field 'terminal_observations' key {key!r}", row)
            terminal[agent] = np.asarray(row, dtype=np.float32)
        return terminal

    def binary_step(self, raw: bytes, rows: int | None) -> StepResult:
        """A binary `/rl/step` answer, checked as strictly as the JSON one; rows=None takes N from the header."""
        header = wire.STEP_BINARY_HEADER
        if len(raw) < header.size:
            self.fail(f"binary body is {len(raw)} bytes, shorter than its {header.size}-byte header")
        magic, version, header_size, n, observation_size, tick, num_terminal, _flags = header.unpack_from(raw)
        for field, value, expected in (
            ("magic", magic, wire.STEP_BINARY_MAGIC),
            ("version", version, wire.STEP_BINARY_VERSION),
            ("header_size", header_size, header.size),
            ("observation_size", observation_size, wire.OBSERVATION_SIZE),
            ("num_agents", n, n if rows is None else rows),
        ):
            if value != expected:
                self.fail(f"binary header field '{field}' is {value!r}, expected {expected!r}")
        size = wire.step_binary_size(n, num_terminal)
        if len(raw) != size:
            self.fail(
                f"binary body is {len(raw)} bytes; its header (num_agents={n}, "
                f"terminal_count={num_terminal}) needs exactly {size}"
            )
        offsets, terminal_at = wire.step_binary_offsets(n)
        blocks = {
            name: np.frombuffer(raw, dtype, n * per_agent, offsets[name])
            for name, dtype, per_agent in wire.STEP_BINARY_BLOCKS
        }
        observations = self._finite_rows("observations", blocks["observations"].reshape(n, -1))
        flags = {}
        for name in ("done", "fell", "goal_reached"):
            if np.count_nonzero(blocks[name] > 1):
                bad = np.flatnonzero(blocks[name] > 1)[0]
                self.fail(f"field '{name}' entry {bad} is {blocks[name][bad]}, expected 0 or 1")
            flags[name] = blocks[name].astype(bool)
        for name in ("collisions", "teleports"):
            if np.count_nonzero(blocks[name] > _INT32_MAX):
                bad = np.flatnonzero(blocks[name] > _INT32_MAX)[0]
                self.fail(f"field 'events' key '{name}' entry {bad} is {blocks[name][bad]}, too large")
        terminal: dict[int, np.ndarray] = {}
        if num_terminal:
            terminal = self._terminal_records(raw, terminal_at, num_terminal, flags["done"])
        events = Events(
            collisions=blocks["collisions"].astype(np.int32),
            fell=flags["fell"],
            goal_reached=flags["goal_reached"],
            teleports=blocks["teleports"].astype(np.int32),
        )
        return StepResult(observations, flags["done"], events, tick, terminal)

    def _terminal_records(
        self, raw: bytes, offset: int, count: int, done: np.ndarray
    ) -> dict[int, np.ndarray]:
        records = np.frombuffer(raw, _TERMINAL_RECORD, count, offset)
        agents = records["agent"]
        n = len(done)
        bad = np.flatnonzero(
            (agents >= n) | ~done[np.minimum(agents, n - 1)] | (np.diff(agents, prepend=-1) <= 0)
        )
        if bad.size:
            self.fail(
                f"field 'terminal_observations' record {bad[0]} names agent {agents[bad[0]]}, which is not "
                "an agent done this step listed once in ascending order"
            )
        rows = self._finite_rows("terminal_observations", records["observation"])
        return dict(zip(agents.tolist(), rows, strict=True))

    def _finite_rows(self, field: str, rows: np.ndarray) -> np.ndarray:
        """A writable float32 copy of `rows`, or a failure naming the first non-finite value."""
        finite = np.isfinite(rows)
        if np.count_nonzero(finite) != finite.size:
            i, j = np.argwhere(~finite)[0]
            self.fail(f"field '{field}' row {i} value {j} is {rows[i, j]}, expected a finite number")
        return rows.astype(np.float32)
