"""Constants and field layouts of HTTP protocol v1: the one place for the observation layout.

Both the client and the embedded simulator import from here; see `docs/protocol.md`.
Axes follow Godot: +Y up, -Z forward. Units: metres, seconds, radians.
"""

from __future__ import annotations

import functools
import struct
import types
from collections.abc import Mapping
from typing import Final

PROTOCOL_VERSION: Final = 1
DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 8080
DEFAULT_SCENE: Final = "res://scenes/features/vr_locomotion_test.tscn"
DEFAULT_AGENTS: Final = 16  # agents in the RL scene: the simulator's and env.agents_per_environment's default
#: Seconds a client waits to reach a server, and for a whole call including the answer.
DEFAULT_CONNECT_TIMEOUT: Final = 10.0
DEFAULT_REQUEST_TIMEOUT: Final = 30.0
#: The environment variable a server reads its token from (the Godot addon's rl_service.gd
#: TOKEN_VARIABLE): a launcher sets it there, where `ps` does not show it.
TOKEN_VARIABLE: Final = "SPACETIME_RL_TOKEN"
#: Most agents one server runs: a scene load allocates per agent, so a typo must not hang it.
MAX_AGENTS: Final = 4096
#: Largest reset seed: exact in a double, as Godot's JSON reads every number.
MAX_SEED: Final = 2**53 - 1
#: A server's flood limits (the Godot addon's rl_http_server.gd keeps the same): connections open at
#: once (more are answered 503); seconds for a request's headers to arrive from the connection's
#: opening or the request's first byte, and for its body (else 408); seconds a kept-alive
#: connection may stay silent between requests (a trainer is silent through each PPO update).
MAX_CONNECTIONS: Final = 64
HEADER_TIMEOUT: Final = 10.0
BODY_TIMEOUT: Final = 60.0
IDLE_TIMEOUT: Final = 3600.0

#: The one line a server prints on stdout once it listens, followed by its URL: the embedded
#: simulator's, and the Godot addon's (godot/addons/spacetime_rl/rl_service.gd READY_LINE).
SIM_READY_PREFIX: Final = "spacetime-sim listening on "
GODOT_READY_PREFIX: Final = "spacetime-rl listening on "

#: (name, size) in wire order; sizes add up to OBSERVATION_SIZE.
OBSERVATION_FIELDS: Final[tuple[tuple[str, int], ...]] = (
    ("camera_position", 3),
    ("camera_rotation", 4),  # quaternion x, y, z, w
    ("camera_velocity", 3),
    ("camera_angular_velocity", 3),
    ("ray_distances", 16),  # ray 0 straight ahead, then clockwise from above every 22.5 degrees
    ("left_controller_position", 3),
    ("right_controller_position", 3),
    ("left_controller_velocity", 3),
    ("right_controller_velocity", 3),
    ("goal_relative_position", 3),  # goal minus XR origin, world axes
    ("goal_distance", 1),
    ("goal_direction", 3),  # unit vector
)


#: The seed README's names (its example `get_rl_observation()`) for documented fields, same layout:
#: a scene written from that example says `ray_sensors` and `goal_position` in its /rl/spec.
OBSERVATION_FIELD_ALIASES: Final[Mapping[str, str]] = types.MappingProxyType(
    {"ray_sensors": "ray_distances", "goal_position": "goal_relative_position"}
)


def _field_slices() -> dict[str, slice]:
    slices, start = {}, 0
    for name, size in OBSERVATION_FIELDS:
        slices[name] = slice(start, start + size)
        start += size
    return slices


#: Field name -> slice into one observation row.
OBS: Final[dict[str, slice]] = _field_slices()
OBSERVATION_SIZE: Final = sum(size for _, size in OBSERVATION_FIELDS)
ACTION_SIZE: Final = 3  # h strafes right, v moves forward, r turns right; each in [-1, 1]
NUM_RAYS: Final = 16
RAY_RANGE: Final = 5.0  # metres; a ray that sees nothing reports this

PHYSICS_HZ: Final = 90
DEFAULT_ACTION_REPEAT: Final = 9

#: Reset options every server understands, with their defaults (None: the server picks).
RESET_OPTION_DEFAULTS: Final[dict[str, float | None]] = {
    "min_goal_distance": None,
    "max_goal_distance": None,
    "max_speed": 2.0,  # m/s
    "max_rotation_speed": 90.0,  # deg/s
}

#: Values of the optional reset option `scenario` (the arena's layout generator); a server lists the
#: ones it has in `/rl/spec` `scenarios`. The first is the default and the seed's world.
SCENARIOS: Final = ("open_field", "obstacle_course", "maze")
DEFAULT_SCENARIO: Final = SCENARIOS[0]

#: Keys of one per-agent event record, counted since the previous action.
EVENT_FIELDS: Final = ("collisions", "fell", "goal_reached", "teleports")

assert OBSERVATION_SIZE == 48, "the observation layout is fixed by protocol v1"

# --- binary /rl/step answer: an optional v1 extension (docs/protocol.md, "Binary step body") -------
#: A client asks for it with `Accept: application/octet-stream`; without that header the answer is JSON.
STEP_BINARY_CONTENT_TYPE: Final = "application/octet-stream"
STEP_BINARY_MAGIC: Final = b"STRL"
STEP_BINARY_VERSION: Final = 1
#: Little-endian header: magic, version, header size, num_agents N, observation size, tick,
#: terminal count T, flags (0; a reader ignores bits it does not know).
STEP_BINARY_HEADER: Final = struct.Struct("<4sHHIIQII")
#: Per-agent blocks after the header, in order: (name, little-endian dtype, values per agent).
#: Observations lead so they start 4-byte aligned; the u8 blocks are padded with zeros to a
#: multiple of 4 bytes before the terminal observations.
STEP_BINARY_BLOCKS: Final[tuple[tuple[str, str, int], ...]] = (
    ("observations", "<f4", OBSERVATION_SIZE),
    ("collisions", "<u4", 1),
    ("teleports", "<u4", 1),
    ("done", "u1", 1),
    ("fell", "u1", 1),
    ("goal_reached", "u1", 1),
)
#: Then T records of the agents done in this step with auto_reset, agents ascending: the index and
#: the last observation of the ended episode (a NumPy structured dtype description).
STEP_BINARY_TERMINAL_RECORD: Final = (("agent", "<u4"), ("observation", "<f4", (OBSERVATION_SIZE,)))
STEP_BINARY_TERMINAL_SIZE: Final = 4 + 4 * OBSERVATION_SIZE


@functools.cache  # both sides ask for every step, with the same N
def step_binary_offsets(num_agents: int) -> tuple[Mapping[str, int], int]:
    """Byte offset of each block of a binary step answer for N agents, and where the terminal records start."""
    offsets, offset = {}, STEP_BINARY_HEADER.size
    for name, dtype, per_agent in STEP_BINARY_BLOCKS:
        offsets[name] = offset
        offset += num_agents * per_agent * int(dtype[-1])
    return types.MappingProxyType(offsets), offset + (-offset) % 4


def step_binary_size(num_agents: int, num_terminal: int) -> int:
    """Exact length in bytes of a binary step answer."""
    return step_binary_offsets(num_agents)[1] + num_terminal * STEP_BINARY_TERMINAL_SIZE
