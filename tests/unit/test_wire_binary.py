"""The binary /rl/step body: layout constants, the protocol's encoder as the simulator answers with it,
and its strict decoder (no sockets)."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from spacetime_rl.errors import ProtocolError
from spacetime_rl.protocol import ResponseCheck, decode_step, wire
from spacetime_rl.sim.server import _accepts_binary, _binary_step
from spacetime_rl.sim.world import StepOutcome

N = 5
OBS = wire.OBSERVATION_SIZE


def outcome(**overrides: Any) -> StepOutcome:
    fields: dict[str, Any] = {
        "done": np.array([False, True, False, True, False]),
        "collisions": np.array([0, 2, 0, 0, 1], np.int64),
        "fell": np.array([False, True, False, False, False]),
        "goal_reached": np.array([False, False, False, True, False]),
        "teleports": np.array([0, 0, 3, 0, 0], np.int64),
        "tick": 2**40 + 9,
    }
    return StepOutcome(**(fields | overrides))


def encoded(terminal_agents: tuple[int, ...] = (1, 3)) -> tuple[bytes, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    observations = rng.normal(size=(N, OBS)).astype(np.float32)
    terminal = rng.normal(size=(len(terminal_agents), OBS)).astype(np.float32)
    response = _binary_step(observations, outcome(), np.array(terminal_agents, np.int64), terminal)
    assert response.content_type == wire.STEP_BINARY_CONTENT_TYPE
    body = response.body
    assert isinstance(body, bytes | bytearray)
    return bytes(body), observations, terminal


def decode(raw: bytes, rows: int | None = N):
    return decode_step(raw, rows, ResponseCheck("http://127.0.0.1:1", "/rl/step"))


def test_layout_is_aligned_and_sized_as_documented() -> None:
    assert wire.STEP_BINARY_HEADER.size == 32
    offsets, terminal_at = wire.step_binary_offsets(N)
    assert offsets["observations"] == 32
    assert offsets["collisions"] == 32 + 4 * OBS * N
    assert offsets["done"] == offsets["teleports"] + 4 * N
    assert terminal_at % 4 == 0 and terminal_at - (offsets["goal_reached"] + N) < 4
    assert wire.step_binary_size(N, 2) == terminal_at + 2 * (4 + 4 * OBS)
    assert np.dtype(list(wire.STEP_BINARY_TERMINAL_RECORD)).itemsize == wire.STEP_BINARY_TERMINAL_SIZE


def test_round_trip_is_exact() -> None:
    raw, observations, terminal = encoded()
    result = decode(raw)
    expected = outcome()
    assert result.observations.tobytes() == observations.tobytes()
    assert result.observations.flags.writeable
    np.testing.assert_array_equal(result.done, expected.done)
    for name in wire.EVENT_FIELDS:
        np.testing.assert_array_equal(getattr(result.events, name), getattr(expected, name))
    assert result.events.collisions.dtype == np.int32 and result.events.fell.dtype == bool
    assert result.tick == expected.tick
    assert sorted(result.terminal_observations) == [1, 3]
    assert result.terminal_observations[3].tobytes() == terminal[1].tobytes()


def test_no_terminal_records_and_rows_from_header() -> None:
    raw, _, _ = encoded(())
    assert len(raw) == wire.step_binary_size(N, 0)
    assert decode(raw, rows=None).terminal_observations == {}


def corrupt(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value) :]


def header_at(field: str) -> int:
    names = ("magic", "version", "header_size", "num_agents", "observation_size", "tick", "terminal_count")
    codes = ("4s", "H", "H", "I", "I", "Q", "I", "I")
    assert wire.STEP_BINARY_HEADER.format == "<" + "".join(codes)
    return struct.calcsize("<" + "".join(codes[: names.index(field)]))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda raw: raw[:20], "shorter than its 32-byte header"),
        (lambda raw: raw[:-1], "needs exactly"),
        (lambda raw: raw + b"\0", "needs exactly"),
        (lambda raw: corrupt(raw, 0, b"JSON"), "'magic'"),
        (lambda raw: corrupt(raw, header_at("version"), struct.pack("<H", 2)), "'version' is 2"),
        (lambda raw: corrupt(raw, header_at("header_size"), struct.pack("<H", 40)), "'header_size'"),
        (lambda raw: corrupt(raw, header_at("num_agents"), struct.pack("<I", N - 1)), "'num_agents' is 4"),
        (
            lambda raw: corrupt(raw, header_at("observation_size"), struct.pack("<I", 47)),
            "'observation_size'",
        ),
        (lambda raw: corrupt(raw, header_at("terminal_count"), struct.pack("<I", 3)), "terminal_count=3"),
        (
            lambda raw: corrupt(raw, 32 + 4 * (2 * OBS + 7), struct.pack("<f", np.nan)),
            "'observations' row 2 value 7",
        ),
        (lambda raw: corrupt(raw, wire.step_binary_offsets(N)[0]["fell"] + 4, b"\2"), "'fell' entry 4 is 2"),
        (
            lambda raw: corrupt(raw, wire.step_binary_offsets(N)[0]["collisions"], struct.pack("<I", 2**31)),
            "'collisions' entry 0",
        ),
        (
            lambda raw: corrupt(raw, wire.step_binary_offsets(N)[1], struct.pack("<I", 2)),
            "record 0 names agent 2",
        ),
        (lambda raw: corrupt(raw, wire.step_binary_offsets(N)[1], struct.pack("<I", 99)), "names agent 99"),
        (
            lambda raw: corrupt(raw, wire.step_binary_offsets(N)[1] + 196, struct.pack("<I", 1)),
            "record 1 names agent 1",
        ),
        (
            lambda raw: corrupt(raw, wire.step_binary_offsets(N)[1] + 8, struct.pack("<f", np.inf)),
            "'terminal_observations' row 0 value 1 is inf",
        ),
    ],
)
def test_client_rejects_a_corrupt_body_naming_the_field(mutate, message) -> None:
    raw, _, _ = encoded()
    with pytest.raises(ProtocolError, match=message) as info:
        decode(mutate(raw))
    assert info.value.endpoint == "/rl/step"


@pytest.mark.parametrize(
    ("accept", "binary"),
    [
        ("", False),
        ("application/json", False),
        ("*/*", False),
        ("application/octet-stream", True),
        ("application/octet-stream, application/json;q=0.5", True),
        ("application/json, Application/Octet-Stream; q=0.2", True),
        ("application/octet-stream;q=0", False),
        ("application/octet-stream;q=x", False),
    ],
)
def test_server_answers_binary_only_when_asked(accept: str, binary: bool) -> None:
    assert _accepts_binary(accept) is binary


def test_godot_addon_copies_the_layout_constants() -> None:
    source = (Path(__file__).parents[2] / "godot" / "addons" / "spacetime_rl" / "rl_api.gd").read_text()

    def constant(name: str) -> str:
        match = re.search(rf"^const {name} := (.+)$", source, re.MULTILINE)
        assert match, f"rl_api.gd lacks const {name}"
        return match.group(1).strip()

    assert json.loads(constant("STEP_BINARY_CONTENT_TYPE")) == wire.STEP_BINARY_CONTENT_TYPE
    assert json.loads(constant("STEP_BINARY_MAGIC")).encode("ascii") == wire.STEP_BINARY_MAGIC
    assert int(constant("STEP_BINARY_VERSION")) == wire.STEP_BINARY_VERSION
    assert int(constant("STEP_BINARY_HEADER_SIZE")) == wire.STEP_BINARY_HEADER.size
    # the encoder writes the blocks in wire order
    encoder = source.split("static func encode_step")[1]
    order = [
        encoder.index(f'"{name}"') if name != "observations" else encoder.index("for row:")
        for name in ("observations", "collisions", "teleports")
    ]
    assert order == sorted(order)
    assert [name for name, _, _ in wire.STEP_BINARY_BLOCKS] == [
        "observations",
        "collisions",
        "teleports",
        "done",
        "fell",
        "goal_reached",
    ]
