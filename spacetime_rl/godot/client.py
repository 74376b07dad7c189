"""Async client for HTTP protocol v1, spoken by Godot's HTTP API and the embedded simulator.

`/rl/step` also has a blocking split form, `send_step` then `receive_step`, on its own kept-alive
connection (`step_connection.py`): a VecEnv sends to every server, then reads each answer, so the
servers step at the same time and no event loop sits on the hot path.

Every response is checked against `docs/protocol.md` (`spacetime_rl.protocol.validation`) before it
is handed on: a server that breaks the protocol raises `ProtocolError` naming the endpoint and the
field, never returns bad data.
"""

from __future__ import annotations

import asyncio
import math
import operator
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

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
)
from spacetime_rl.godot.step_connection import StepConnection
from spacetime_rl.protocol import Events, ResetResult, ResponseCheck, RLSpec, StepResult, decode_step, wire

__all__ = ["GodotClient", "Timeouts"]

# Enough for a few concurrent calls on one client; a VecEnv makes one call per server per step.
_MAX_CONNECTIONS: Final = 4
_ERROR_BODY_CHARS: Final = 200
_JSON_HEADERS: Final = {"Content-Type": "application/json"}
# Binary preferred, JSON accepted: a server without the extension answers JSON and that is fine.
_BINARY_STEP_HEADERS: Final = {
    **_JSON_HEADERS,
    "Accept": f"{wire.STEP_BINARY_CONTENT_TYPE}, application/json;q=0.5",
}


@dataclass(frozen=True)
class Timeouts:
    """Seconds. `connect` bounds reaching the server, `request` a whole call including the answer."""

    connect: float = wire.DEFAULT_CONNECT_TIMEOUT
    request: float = wire.DEFAULT_REQUEST_TIMEOUT

    def __post_init__(self) -> None:
        for key in ("connect", "request"):
            value = getattr(self, key)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ConfigError(
                    f"env.{key}_timeout must be a positive number of seconds, got {value!r}: "
                    f"set e.g. env.{key}_timeout={getattr(Timeouts, key)}"
                )


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
        # the config section of the URL's key, for hints naming sibling keys; a launched server's
        # name (`train server 0 (python -m spacetime_rl.sim, ...)`) has none: its keys are env.*
        section = re.search(r"([\w.]+)\.url\b", name)
        self._prefix = f"{section.group(1)}." if section else "env."
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
        check = ResponseCheck(self.url, "/health")
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
        check = ResponseCheck(self.url, "/scene/load")
        check.typed(body, "scene", str)
        check.typed(body, "loaded", bool)
        return body

    async def get_scene_state(self) -> dict[str, Any]:
        body = await self._request("GET", "/scene/state")
        check = ResponseCheck(self.url, "/scene/state")
        if body.get("scene") is not None:
            check.typed(body, "scene", str)
        elif "scene" not in body:
            check.fail("field 'scene' is missing, expected a string or null")
        check.typed(body, "rl_ready", bool)
        check.count(body, "num_agents")
        return body

    async def get_performance_metrics(self) -> dict[str, Any]:
        body = await self._request("GET", "/performance")
        check = ResponseCheck(self.url, "/performance")
        engine = check.typed(body, "engine", dict)
        memory = check.typed(body, "memory", dict)
        for field in ("fps", "physics_fps"):
            check.number(engine, field, "engine.")
        if memory.get("static_memory_usage") is not None or "static_memory_usage" not in memory:
            check.count(memory, "static_memory_usage", "memory.")  # null: not counted (Godot release builds)
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
        """The loaded scene's spec, checked against `spacetime_rl.protocol`."""
        body = await self._request("GET", "/rl/spec")
        spec = ResponseCheck(self.url, "/rl/spec").spec(body)
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
        rows = len(request["agents"]) if agents is not None else self._num_agents
        return ResponseCheck(self.url, "/rl/reset").reset(body, rows)

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
        return ResponseCheck(self.url, "/rl/action").count(body, "tick")

    async def get_observation(self) -> np.ndarray:
        body = await self._request("GET", "/rl/observation")
        return ResponseCheck(self.url, "/rl/observation").observations(body, "observations", self._num_agents)

    async def get_state(self) -> tuple[np.ndarray, Events, int]:
        body = await self._request("GET", "/rl/state")
        check = ResponseCheck(self.url, "/rl/state")
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
        check = ResponseCheck(self.url, "/rl/step")
        if self._binary_step and content_type == wire.STEP_BINARY_CONTENT_TYPE:
            return decode_step(raw, self._num_agents, check)
        return check.step(self._decode_json("/rl/step", status, raw), self._num_agents)

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
            ResponseCheck(self.url, endpoint).fail(
                f"the body is {type(decoded).__name__}, expected a JSON object"
            )
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
