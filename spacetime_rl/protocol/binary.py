"""The binary `/rl/step` answer (docs/protocol.md, "Binary step body"): the server's encoder and the
client's decoder, which checks a body as strictly as the JSON one. The layout lives in `wire`.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from spacetime_rl.protocol import wire
from spacetime_rl.protocol.types import Events, StepResult
from spacetime_rl.protocol.validation import INT32_MAX, ResponseCheck

__all__ = ["TERMINAL_RECORD", "decode_step", "encode_step"]

#: One terminal record: the agent's index and the last observation of its ended episode.
TERMINAL_RECORD: Final = np.dtype(list(wire.STEP_BINARY_TERMINAL_RECORD))


def encode_step(result: StepResult) -> bytearray:
    """The binary body of `result`; its terminal observations must be keyed in ascending agent order."""
    n = len(result.observations)
    terminal = result.terminal_observations
    body = bytearray(wire.step_binary_size(n, len(terminal)))
    wire.STEP_BINARY_HEADER.pack_into(
        body,
        0,
        wire.STEP_BINARY_MAGIC,
        wire.STEP_BINARY_VERSION,
        wire.STEP_BINARY_HEADER.size,
        n,
        wire.OBSERVATION_SIZE,
        result.tick,
        len(terminal),
        0,
    )
    offsets, terminal_at = wire.step_binary_offsets(n)
    events = result.events
    blocks = {
        "observations": result.observations,
        "collisions": events.collisions,
        "teleports": events.teleports,
        "done": result.done,
        "fell": events.fell,
        "goal_reached": events.goal_reached,
    }
    for name, dtype, per_agent in wire.STEP_BINARY_BLOCKS:
        np.frombuffer(body, dtype, n * per_agent, offsets[name])[:] = blocks[name].ravel()
    if terminal:
        records = np.frombuffer(body, TERMINAL_RECORD, len(terminal), terminal_at)
        records["agent"] = list(terminal)
        records["observation"] = list(terminal.values())
    return body


def decode_step(raw: bytes, rows: int | None, check: ResponseCheck) -> StepResult:
    """A binary `/rl/step` answer for `rows` agents (None: N from the header); `check` reports a fault."""
    header = wire.STEP_BINARY_HEADER
    if len(raw) < header.size:
        check.fail(f"binary body is {len(raw)} bytes, shorter than its {header.size}-byte header")
    magic, version, header_size, n, observation_size, tick, num_terminal, _flags = header.unpack_from(raw)
    for field, value, expected in (
        ("magic", magic, wire.STEP_BINARY_MAGIC),
        ("version", version, wire.STEP_BINARY_VERSION),
        ("header_size", header_size, header.size),
        ("observation_size", observation_size, wire.OBSERVATION_SIZE),
        ("num_agents", n, n if rows is None else rows),
    ):
        if value != expected:
            check.fail(f"binary header field '{field}' is {value!r}, expected {expected!r}")
    size = wire.step_binary_size(n, num_terminal)
    if len(raw) != size:
        check.fail(
            f"binary body is {len(raw)} bytes; its header (num_agents={n}, "
            f"terminal_count={num_terminal}) needs exactly {size}"
        )
    offsets, terminal_at = wire.step_binary_offsets(n)
    blocks = {
        name: np.frombuffer(raw, dtype, n * per_agent, offsets[name])
        for name, dtype, per_agent in wire.STEP_BINARY_BLOCKS
    }
    observations = check.finite_rows("observations", blocks["observations"].reshape(n, -1))
    flags = {}
    for name in ("done", "fell", "goal_reached"):
        if np.count_nonzero(blocks[name] > 1):
            bad = np.flatnonzero(blocks[name] > 1)[0]
            check.fail(f"field '{name}' entry {bad} is {blocks[name][bad]}, expected 0 or 1")
        flags[name] = blocks[name].astype(bool)
    for name in ("collisions", "teleports"):
        if np.count_nonzero(blocks[name] > INT32_MAX):
            bad = np.flatnonzero(blocks[name] > INT32_MAX)[0]
            check.fail(f"field 'events' key '{name}' entry {bad} is {blocks[name][bad]}, too large")
    terminal: dict[int, np.ndarray] = {}
    if num_terminal:
        terminal = _terminal_records(raw, terminal_at, num_terminal, flags["done"], check)
    events = Events(
        collisions=blocks["collisions"].astype(np.int32),
        fell=flags["fell"],
        goal_reached=flags["goal_reached"],
        teleports=blocks["teleports"].astype(np.int32),
    )
    return StepResult(observations, flags["done"], events, tick, terminal)


def _terminal_records(
    raw: bytes, offset: int, count: int, done: np.ndarray, check: ResponseCheck
) -> dict[int, np.ndarray]:
    records = np.frombuffer(raw, TERMINAL_RECORD, count, offset)
    agents = records["agent"]
    n = len(done)
    bad = np.flatnonzero(
        (agents >= n) | ~done[np.minimum(agents, n - 1)] | (np.diff(agents, prepend=-1) <= 0)
    )
    if bad.size:
        check.fail(
            f"field 'terminal_observations' record {bad[0]} names agent {agents[bad[0]]}, which is not "
            "an agent done this step listed once in ascending order"
        )
    rows = check.finite_rows("terminal_observations", records["observation"])
    return dict(zip(agents.tolist(), rows, strict=True))
