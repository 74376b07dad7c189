"""Checks of decoded protocol v1 answers against `docs/protocol.md`, and the JSON RL answers decoded.

Every failure is a `ProtocolError` naming the server, the endpoint and the field, so a server that
breaks the protocol is reported and its data never handed on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, NoReturn

import numpy as np

from spacetime_rl.errors import ProtocolError, SpecMismatchError
from spacetime_rl.protocol import wire
from spacetime_rl.protocol.types import Events, ResetResult, RLSpec, StepResult

__all__ = ["INT32_MAX", "ResponseCheck"]

#: Event counts travel as int32; a larger one breaks the protocol.
INT32_MAX: Final = np.iinfo(np.int32).max
_NUMBER_KINDS: Final = frozenset("iuf")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class ResponseCheck:
    """Checks the answers of one endpoint of the server at `url` (its base URL, for messages)."""

    __slots__ = ("endpoint", "url")

    def __init__(self, url: str, endpoint: str) -> None:
        self.url = url
        self.endpoint = endpoint

    def fail(self, detail: str) -> NoReturn:
        raise ProtocolError(
            f"Protocol error from {self.url}{self.endpoint}: {detail} (see docs/protocol.md)",
            url=self.url,
            endpoint=self.endpoint,
        )

    # ---------------------------------------------------------------- whole RL answers

    def spec(self, body: Mapping[str, Any]) -> RLSpec:
        """A `/rl/spec` body, checked against this package's constants (`SpecMismatchError` if it differs)."""
        fields = self.typed(body, "observation_fields", list)
        observation_fields = []
        for i, entry in enumerate(fields):
            if not (
                isinstance(entry, dict) and isinstance(entry.get("name"), str) and _is_int(entry.get("size"))
            ):
                self.fail(
                    f"field 'observation_fields' entry {i} is {entry!r}, expected {{name: str, size: int}}"
                )
            name = wire.OBSERVATION_FIELD_ALIASES.get(entry["name"], entry["name"])  # the seed's names
            observation_fields.append((name, entry["size"]))
        scenarios = self.typed(body, "scenarios", list) if "scenarios" in body else []
        if not all(isinstance(name, str) for name in scenarios):
            self.fail(f"field 'scenarios' is {scenarios!r}, expected a list of strings")
        spec = RLSpec(
            protocol=self.count(body, "protocol"),
            num_agents=self.count(body, "num_agents"),
            observation_size=self.count(body, "observation_size"),
            action_size=self.count(body, "action_size"),
            observation_fields=tuple(observation_fields),
            physics_hz=float(self.number(body, "physics_hz")),
            action_repeat=self.count(body, "action_repeat"),
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
            self.fail(
                f"num_agents={spec.num_agents} and action_repeat={spec.action_repeat} must both be >= 1"
            )
        return spec

    def reset(self, body: Mapping[str, Any], rows: int | None) -> ResetResult:
        """A `/rl/reset` body with `rows` observations (None: as many as it has)."""
        observations = self.observations(body, "observations", rows)
        ignored = self.typed(body, "ignored_options", list)
        if not all(isinstance(key, str) for key in ignored):
            self.fail(f"field 'ignored_options' is {ignored!r}, expected a list of strings")
        return ResetResult(observations=observations, ignored_options=tuple(ignored))

    def step(self, body: Mapping[str, Any], rows: int | None) -> StepResult:
        """A JSON `/rl/step` body for `rows` agents (None: as many as it has)."""
        observations = self.observations(body, "observations", rows)
        num_agents = len(observations)
        done = self.flags(body, "done", num_agents)
        events = self.events(body, num_agents)
        tick = self.count(body, "tick")
        terminal = self.terminal_observations(body, done) if "terminal_observations" in body else {}
        return StepResult(observations, done, events, tick, terminal)

    # ---------------------------------------------------------------- fields

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
            if array.dtype.kind != "i" or (array < 0).any() or (array > INT32_MAX).any():
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

    def finite_rows(self, field: str, rows: np.ndarray) -> np.ndarray:
        """A writable float32 copy of `rows`, or a failure naming the first non-finite value."""
        finite = np.isfinite(rows)
        if np.count_nonzero(finite) != finite.size:
            i, j = np.argwhere(~finite)[0]
            self.fail(f"field '{field}' row {i} value {j} is {rows[i, j]}, expected a finite number")
        return rows.astype(np.float32)
