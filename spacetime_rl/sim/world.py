"""Physics of the simulated `vr_locomotion_test` scene: N independent arenas, one VR player each.

Pure NumPy, no I/O. Every per-agent quantity is an array indexed by agent; the step hot path loops
only over the `action_repeat` physics frames, never over agents.

Frames and units follow Godot (see `spacetime_rl.protocol.wire`): +Y up, -Z forward, metres, seconds,
radians. The horizontal plane is stored as complex numbers `x + 1j*z`, so a heading is the unit
complex `u = exp(-1j*yaw)`: the player's right is `u`, forward is `-1j*u`, and turning right
(clockwise seen from above) by `a` radians multiplies `u` by `exp(1j*a)`. Arenas are drawn by
`layouts.py` (the other scenarios' generators are `scenarios.py`); distances, rays and contacts
against obstacles are `collisions.py`. See `docs/simulator.md` for the arena, the sensors and every
constant.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from spacetime_rl.errors import ConfigError
from spacetime_rl.protocol import wire
from spacetime_rl.sim import layouts
from spacetime_rl.sim.collisions import (
    BOX_COLUMNS,
    CONTACT_SLOP,
    PILLAR_COLUMNS,
    PIT_COLUMNS,
    PLAYER_RADIUS,
    SOLID_COLUMNS,
    Neighbourhood,
    gaps,
    obstacle_table,
    ray_distances,
)
from spacetime_rl.sim.scenarios import MAX_BOXES, MAX_PILLARS, MAX_PITS, UNUSED

__all__ = ["Layout", "StepOutcome", "World", "ignored_options"]

# --- goal --------------------------------------------------------------------------------------
DEFAULT_GOAL_DISTANCE: Final = (3.0, 15.0)  # m, used while the options leave them unset
MAX_GOAL_DISTANCE: Final = 40.0  # m; far enough for 30 m curricula, close enough to fit the platform
GOAL_RADIUS: Final = 0.6  # m, horizontal distance at which the goal counts as reached

# --- player ------------------------------------------------------------------------------------
EYE_HEIGHT: Final = 1.7  # m above the XR origin (the floor under the player)
RAY_HEIGHT: Final = 1.2  # m, chest height the sensor rays are cast at
MAX_ACCELERATION: Final = 8.0  # m/s^2: 0 -> 2 m/s in 0.25 s, so jerky commands show as acceleration
MAX_SPEED_LIMIT: Final = 10.0  # m/s; keeps a frame's move (0.11 m) well under PLAYER_RADIUS
MAX_ROTATION_SPEED_LIMIT: Final = 720.0  # deg/s
SNAP_THRESHOLD: Final = 0.5  # |r| above which snap turning turns
SNAP_COOLDOWN_FRAMES: Final = 27  # 0.3 s at 90 Hz between snaps while the stick stays deflected
DEFAULT_SNAP_ANGLE: Final = 45.0  # deg
STRIDE_LENGTH: Final = 1.4  # m per stride (two steps): 1 stride/s at 1.4 m/s
BOB_AMPLITUDE: Final = 0.03  # m of vertical head bob at full walking speed, twice per stride
ROLL_SWAY: Final = 0.02  # rad of side-to-side head roll at full walking speed, once per stride
ROLL_PER_YAW_RATE: Final = 0.04  # rad of lean into a turn per rad/s of yaw rate
PITCH_PER_ACCELERATION: Final = 0.01  # rad of forward pitch per m/s^2 of forward acceleration
SWAY_TIME_CONSTANT: Final = 0.15  # s, low-pass on roll and pitch so their rates stay finite
WALK_REFERENCE_SPEED: Final = 2.0  # m/s at which bob, sway and hand swing reach full amplitude
HAND_SWING: Final = 0.08  # m of fore-aft hand swing at full walking speed
#: Controller offsets in the player's frame (x right, y up, z back), metres above the XR origin.
LEFT_HAND_OFFSET: Final = (-0.2, 1.1, -0.35)
RIGHT_HAND_OFFSET: Final = (0.2, 1.1, -0.35)

DT: Final = 1.0 / wire.PHYSICS_HZ
# Observation fields that are a horizontal vector (complex x + 1j*z) and a height (y), in the order
# _observations stacks them; each one's x, y, z columns are consecutive from wire.OBS.
_PLANAR_FIELDS: Final = (
    "camera_position",
    "camera_velocity",
    "camera_angular_velocity",
    "left_controller_position",
    "right_controller_position",
    "left_controller_velocity",
    "right_controller_velocity",
    "goal_relative_position",
    "goal_direction",
)
_PLANAR_X: Final = np.array([wire.OBS[name].start for name in _PLANAR_FIELDS])
_HANDS: Final = np.array([LEFT_HAND_OFFSET, RIGHT_HAND_OFFSET])[:, :, None]  # (side, x y z, 1)
_HAND_SIGNS: Final = np.array([[1.0], [-1.0]])  # the hands swing in opposite directions
_Selection = slice | np.ndarray  # agents to compute for: a slice or an index array
_ALL: Final = slice(None)


def _wire_default(key: str) -> float:
    value = wire.RESET_OPTION_DEFAULTS[key]
    if value is None:
        raise RuntimeError(f"wire.RESET_OPTION_DEFAULTS[{key!r}] has no value")
    return value


#: Defaults of the options that have one: the protocol's and the simulator's own.
_DEFAULTS: Final = {
    "max_speed": _wire_default("max_speed"),
    "max_rotation_speed": _wire_default("max_rotation_speed"),
    "snap_angle": DEFAULT_SNAP_ANGLE,
}
_SIM_OPTIONS: Final = ("turn_mode", "snap_angle", "scenario")
_KNOWN_OPTIONS: Final = (*wire.RESET_OPTION_DEFAULTS, *_SIM_OPTIONS)


@dataclass(frozen=True)
class StepOutcome:
    """What happened to each agent during one action (arrays of shape (N,))."""

    done: np.ndarray  # bool: the agent is done (goal reached or fell), now or before this action
    collisions: np.ndarray  # int64: new contacts with obstacles (rising edges)
    fell: np.ndarray  # bool
    goal_reached: np.ndarray  # bool
    teleports: np.ndarray  # int64: snap turns
    tick: int  # physics frames since the world was created


@dataclass(frozen=True)
class Layout:
    """One arena, in world metres: the test hook's input and `World.layout`'s output."""

    boxes: np.ndarray  # (k, 4) x_min, z_min, x_max, z_max
    pillars: np.ndarray  # (k, 3) x, z, radius
    pits: np.ndarray  # (k, 4) x_min, z_min, x_max, z_max
    goal: np.ndarray  # (2,) x, z


def ignored_options(options: Mapping[str, Any]) -> list[str]:
    """The keys of reset `options` the simulator does not know, sorted."""
    return sorted(key for key in options if key not in _KNOWN_OPTIONS)


def _option_error(key: str, value: object, expected: str) -> ConfigError:
    return ConfigError(f"reset option {key!r} is {value!r}; expected {expected}, or null for the default")


def _number(
    options: Mapping[str, Any], key: str, low: float, high: float, unit: str, *, low_included: bool = True
) -> float | None:
    """options[key] as a float in [low, high] (or (low, high]), None for null, else a ConfigError."""
    value = options[key]
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not (low <= value if low_included else low < value)
        or not value <= high
    ):
        bracket = "[" if low_included else "("
        raise _option_error(key, value, f"a number in {bracket}{low:g}, {high:g}] {unit}")
    return float(value)


class World:
    """N agents, each alone in its own arena, stepped together.

    `World(n, seed=s)` starts with every agent reset with seed `s` (random when None).
    """

    def __init__(
        self, num_agents: int, *, action_repeat: int = wire.DEFAULT_ACTION_REPEAT, seed: int | None = None
    ):
        if num_agents < 1:
            raise ConfigError(f"num_agents is {num_agents}; the world needs at least 1 agent")
        if action_repeat < 1:
            raise ConfigError(f"action_repeat is {action_repeat}; it must be at least 1 physics frame")
        n = self.num_agents = num_agents
        self.action_repeat = action_repeat
        self._tick = 0
        entropy = secrets.randbits(128)  # only used when seed is None
        self._rngs = [self._agent_rng(entropy if seed is None else seed, i) for i in range(n)]

        # persisted reset options (NaN goal distance: unset, the default applies)
        self._min_goal = np.full(n, np.nan)
        self._max_goal = np.full(n, np.nan)
        self._max_speed = np.full(n, _DEFAULTS["max_speed"])
        self._max_rotation = np.full(n, math.radians(_DEFAULTS["max_rotation_speed"]))
        self._snap = np.zeros(n, bool)
        self._snap_angle = np.full(n, math.radians(DEFAULT_SNAP_ANGLE))
        self._scenario = np.zeros(n, np.int64)  # index into wire.SCENARIOS

        # layout: the obstacle table (collisions.py), one column per obstacle slot
        self._rects, self._radius = obstacle_table(n)
        self._goal = np.zeros(n, complex)
        self._gap = np.zeros_like(self._radius)  # collisions.gaps() as of the last observation

        # player state
        self._pos = np.zeros(n, complex)
        self._vel = np.zeros(n, complex)
        self._u = np.ones(n, complex)  # heading exp(-1j*yaw)
        self._yaw = np.zeros(n)
        self._yaw_rate = np.zeros(n)  # rad/s about +Y during the last action (snaps excluded)
        self._phase = np.zeros(n)  # walking phase, 2*pi per stride
        self._roll = np.zeros(n)
        self._pitch = np.zeros(n)
        self._roll_rate = np.zeros(n)
        self._pitch_rate = np.zeros(n)
        self._cooldown = np.zeros(n, np.int64)  # frames until the next snap turn is allowed
        self._contact = np.zeros((n, SOLID_COLUMNS.stop), bool)
        self._done = np.zeros(n, bool)
        self._events = self._no_events()
        self._obs = np.zeros((n, wire.OBSERVATION_SIZE), np.float32)
        self.reset(seed=seed)

    # --- public API ------------------------------------------------------------------------
    @property
    def tick(self) -> int:
        """Physics frames simulated since the world was created."""
        return self._tick

    @property
    def done(self) -> np.ndarray:
        """(N,) bool: agents frozen until their next reset."""
        return self._done.copy()

    @property
    def last_outcome(self) -> StepOutcome:
        """Events of the last action (zeros for agents reset since) and the current done flags."""
        collisions, fell, reached, teleports = (e.copy() for e in self._events)
        return StepOutcome(self._done.copy(), collisions, fell, reached, teleports, self._tick)

    @property
    def nbytes(self) -> int:
        """Bytes held by the world's arrays."""
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))

    def observe(self) -> np.ndarray:
        """(N, 48) float32 observations in wire order; done agents keep their last one."""
        return self._obs.copy()

    def reset(
        self,
        agents: Sequence[int] | np.ndarray | None = None,
        seed: int | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        """Start new episodes for `agents` (all when None) and return their (k, 48) observations.

        `seed` re-seeds each reset agent from (seed, agent index), so an agent's episode does not
        depend on which others are reset with it; None continues each agent's own stream. Known
        `options` persist per agent for later resets; unknown keys are ignored (`ignored_options`).
        Raises ConfigError naming the option or argument when a value is bad, before changing anything.
        """
        idx = self._agent_indices(agents)
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0
        ):
            raise ConfigError(f"seed is {seed!r}; expected a non-negative integer or null")
        self._apply_options(idx, options or {})
        if seed is not None:
            for i in idx:
                self._rngs[i] = self._agent_rng(int(seed), int(i))
        if idx.size:
            self._sample_episodes(idx)
        return self._obs[idx].copy()

    def step(self, actions: np.ndarray) -> StepOutcome:
        """Apply one (N, 3) action row per agent for `action_repeat` physics frames.

        Actions are clipped to [-1, 1]: h strafes right, v moves forward, r turns right. Agents that
        are done stay frozen with zero events until reset.
        """
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_agents, wire.ACTION_SIZE) or np.count_nonzero(~np.isfinite(actions)):
            raise ConfigError(
                f"actions have shape {actions.shape}; expected ({self.num_agents}, {wire.ACTION_SIZE}) finite numbers"
            )
        frozen = self._done.copy()
        active = ~frozen
        act = np.clip(actions, -1.0, 1.0) * active[:, None]
        h, v, r = act[:, 0], act[:, 1], act[:, 2]
        stick = h - 1j * v  # player frame: right is 1, forward is -1j
        stick /= np.maximum(np.abs(stick), 1.0)  # a diagonal stick is no faster than a straight one
        command = stick * self._max_speed  # m/s, multiplied by the heading each frame
        yaw_rate = np.where(self._snap, 0.0, -r * self._max_rotation)
        turn = np.exp(-1j * yaw_rate * DT)  # heading change per frame
        snapping = self._snap & active & (np.abs(r) > SNAP_THRESHOLD)
        snap_any = np.count_nonzero(snapping) > 0
        if snap_any:
            snap_turn = np.exp(1j * np.sign(r) * self._snap_angle)
        collisions = np.zeros(self.num_agents, np.int64)
        teleports = np.zeros(self.num_agents, np.int64)
        fell = np.zeros(self.num_agents, bool)
        reached = np.zeros(self.num_agents, bool)
        vel_start = self._vel.copy()

        # Only the (agent, obstacle) pairs and the agents that can meet during this action need the
        # per-frame tests; they are chosen once here, with the farthest an agent can move.
        reach = self._max_speed * (self.action_repeat * DT) + CONTACT_SLOP
        near = (self._gap <= (PLAYER_RADIUS + reach)[:, None]) & active[:, None]
        sub = None
        if np.count_nonzero(near):
            # a player moves at most max(max_speed, its speed now) * DT per frame
            per_frame = np.maximum(self._max_speed, np.abs(self._vel)) * DT
            sub = Neighbourhood(near, self._rects, self._radius, self._contact, self._gap, per_frame)
        goal_idx = np.flatnonzero((np.abs(self._pos - self._goal) < GOAL_RADIUS + reach) & active)

        pos, vel, u = self._pos, self._vel, self._u
        dv = np.empty(self.num_agents, complex)
        gain = np.empty(self.num_agents)
        step_gain = MAX_ACCELERATION * DT
        goal_at = self._goal[goal_idx]  # goals do not move during an action
        for frame in range(self.action_repeat):
            if snap_any:
                fire = snapping & (self._cooldown <= 0)
                if np.count_nonzero(fire):
                    u[fire] *= snap_turn[fire]
                    teleports += fire
                    self._cooldown[fire] = SNAP_COOLDOWN_FRAMES
                self._cooldown -= 1
            u *= turn
            np.multiply(u, command, out=dv)
            dv -= vel
            np.abs(dv, out=gain)
            np.maximum(gain, step_gain, out=gain)
            np.divide(step_gain, gain, out=gain)  # 1 below the limit, else scales dv to the limit
            dv *= gain
            vel += dv
            np.multiply(vel, DT, out=dv)
            pos += dv
            ended: list[np.ndarray] = []
            if sub is not None and frame >= sub.quiet_frames:
                falling = sub.collide(pos, vel)
                if falling.size:
                    falling = falling[~(fell[falling] | reached[falling])]
                    fell[falling] = True
                    ended.append(falling)
            if goal_idx.size:
                at_goal = goal_idx[np.abs(pos[goal_idx] - goal_at) < GOAL_RADIUS]
                if at_goal.size:
                    at_goal = at_goal[~(fell[at_goal] | reached[at_goal])]
                    reached[at_goal] = True
                    ended.append(at_goal)
            for stopped in ended:  # freeze where the episode ended
                vel[stopped] = 0.0
                command[stopped] = 0.0
                turn[stopped] = 1.0
                yaw_rate[stopped] = 0.0
                snapping[stopped] = False

        self._contact[:] = False
        if sub is not None:
            self._contact[sub.solid_agent, sub.solid] = sub.contact
            np.add.at(collisions, sub.solid_agent, sub.new_contacts)
        self._finish_action(vel_start, yaw_rate, active)
        self._done |= fell | reached
        self._events = (collisions, fell, reached, teleports)
        self._tick += self.action_repeat
        obs = self._observations()
        if np.count_nonzero(frozen):
            obs[frozen] = self._obs[frozen]
        self._obs = obs
        return self.last_outcome

    def layout(self, agent: int) -> Layout:
        """The arena of one agent (unused obstacle slots left out)."""
        i = int(self._agent_indices([agent])[0])
        rects = self._rects[:, i].T
        used = rects[:, 0] < UNUSED
        boxes, pits = rects[BOX_COLUMNS][used[BOX_COLUMNS]], rects[PIT_COLUMNS][used[PIT_COLUMNS]]
        pillar = PILLAR_COLUMNS
        pillars = np.stack([rects[pillar, 0], rects[pillar, 1], self._radius[i, pillar]], axis=1)
        goal = np.array([self._goal[i].real, self._goal[i].imag])
        return Layout(boxes, pillars[used[pillar]], pits, goal)

    def position(self, agent: int) -> tuple[float, float, float]:
        """(x, z, yaw) of one agent's XR origin: metres and radians (yaw 0 faces -Z)."""
        i = int(self._agent_indices([agent])[0])
        return float(self._pos[i].real), float(self._pos[i].imag), float(self._yaw[i])

    def set_layout(
        self,
        agent: int,
        *,
        goal: tuple[float, float],
        boxes: Sequence[Sequence[float]] = (),
        pillars: Sequence[Sequence[float]] = (),
        pits: Sequence[Sequence[float]] = (),
    ) -> None:
        """Test hook: replace one arena by hand (see `Layout` for the row formats).

        The player keeps its pose; call `set_pose` next. Clears done, events and contacts.
        """
        i = int(self._agent_indices([agent])[0])
        for name, rows, limit, width in (
            ("boxes", boxes, MAX_BOXES, 4),
            ("pillars", pillars, MAX_PILLARS, 3),
            ("pits", pits, MAX_PITS, 4),
        ):
            if np.asarray(rows, float).reshape(-1, width).shape[0] > limit:
                raise ConfigError(f"{name}: at most {limit} rows of {width} numbers, got {len(rows)}")
        circles = np.asarray(pillars, float).reshape(-1, 3)
        self._store_obstacles(
            i,
            np.asarray(boxes, float).reshape(-1, 4),
            np.concatenate([circles[:, :2], circles[:, :2]], axis=1),
            circles[:, 2],
            np.asarray(pits, float).reshape(-1, 4),
        )
        self._goal[i] = complex(goal[0], goal[1])
        self._restart(np.array([i]))

    def set_pose(
        self,
        agent: int,
        position: tuple[float, float],
        yaw: float = 0.0,
        velocity: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        """Test hook: put one player at (x, z) facing `yaw` (radians, 0 faces -Z, positive turns left)."""
        i = int(self._agent_indices([agent])[0])
        self._pos[i] = complex(*position)
        self._vel[i] = complex(*velocity)
        self._yaw[i] = yaw
        self._u[i] = np.exp(-1j * yaw)
        self._restart(np.array([i]))

    # --- internals -------------------------------------------------------------------------
    @staticmethod
    def _agent_rng(seed: int, agent: int) -> np.random.Generator:
        """The random stream of `agent` under `seed`: independent of every other agent's."""
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, agent])))

    def _no_events(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        n = self.num_agents
        return np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, np.int64)

    def _agent_indices(self, agents: Sequence[int] | np.ndarray | None) -> np.ndarray:
        if agents is None:
            return np.arange(self.num_agents)
        idx = np.asarray(agents)
        if idx.size == 0:
            return np.zeros(0, np.int64)
        if idx.ndim != 1 or idx.dtype.kind not in "iu":
            raise ConfigError(f"agents is {agents!r}; expected a list of agent indices")
        if idx.min() < 0 or idx.max() >= self.num_agents:
            raise ConfigError(f"agents {agents!r} has an index outside [0, {self.num_agents - 1}]")
        if np.unique(idx).size != idx.size:
            raise ConfigError(f"agents {agents!r} lists an agent twice")
        return idx.astype(np.int64)

    def _apply_options(self, idx: np.ndarray, options: Mapping[str, Any]) -> None:
        """Validate every known option, then persist them for `idx` (all or nothing)."""
        known = {key: options[key] for key in _KNOWN_OPTIONS if key in options}
        updates: dict[str, Any] = {}
        for key, unit, high, zero_ok in (  # the same bounds as docs/openapi.yaml ResetOptions
            ("min_goal_distance", "m", MAX_GOAL_DISTANCE, True),
            ("max_goal_distance", "m", MAX_GOAL_DISTANCE, True),
            ("max_speed", "m/s", MAX_SPEED_LIMIT, False),
            ("max_rotation_speed", "deg/s", MAX_ROTATION_SPEED_LIMIT, False),
            ("snap_angle", "deg", 180.0, False),
        ):
            if key in known:
                updates[key] = _number(known, key, 0.0, high, unit, low_included=zero_ok)
        if "turn_mode" in known and known["turn_mode"] not in (None, "smooth", "snap"):
            raise _option_error("turn_mode", known["turn_mode"], '"smooth" or "snap"')
        if "scenario" in known and known["scenario"] not in (None, *wire.SCENARIOS):
            choices = ", ".join(map(repr, wire.SCENARIOS))
            raise _option_error("scenario", known["scenario"], f"one of {choices}")
        low = self._min_goal[idx].copy()
        high = self._max_goal[idx].copy()
        if "min_goal_distance" in updates:
            low[:] = np.nan if updates["min_goal_distance"] is None else updates["min_goal_distance"]
        if "max_goal_distance" in updates:
            high[:] = np.nan if updates["max_goal_distance"] is None else updates["max_goal_distance"]
        clash = low > high  # False where either is unset (NaN)
        if clash.any():
            j = int(np.flatnonzero(clash)[0])
            raise ConfigError(
                f"reset option 'min_goal_distance' ({low[j]:g} m) exceeds 'max_goal_distance' ({high[j]:g} m) "
                f"for agent {idx[j]}; pass a min no larger than the max"
            )
        self._min_goal[idx], self._max_goal[idx] = low, high
        for key, target, scale in (
            ("max_speed", self._max_speed, 1.0),
            ("max_rotation_speed", self._max_rotation, math.pi / 180),
            ("snap_angle", self._snap_angle, math.pi / 180),
        ):
            if key in updates:
                value = updates[key]
                target[idx] = (_DEFAULTS[key] if value is None else value) * scale
        if "turn_mode" in known:
            self._snap[idx] = known["turn_mode"] == "snap"
        if "scenario" in known:
            self._scenario[idx] = wire.SCENARIOS.index(known["scenario"] or wire.DEFAULT_SCENARIO)

    def _goal_range(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Effective goal distance bounds: an unset bound defaults without crossing the other."""
        low, high = self._min_goal[idx], self._max_goal[idx]
        low_eff = np.where(
            np.isnan(low), np.minimum(DEFAULT_GOAL_DISTANCE[0], np.nan_to_num(high, nan=np.inf)), low
        )
        high_eff = np.where(np.isnan(high), np.maximum(DEFAULT_GOAL_DISTANCE[1], low_eff), high)
        return low_eff, high_eff

    def _sample_episodes(self, idx: np.ndarray) -> None:
        """Draw a layout, a start and a reachable goal for each agent in `idx` from its own RNG."""
        low, high = self._goal_range(idx)
        arenas = layouts.draw_arenas([self._rngs[i] for i in idx], self._scenario[idx], low, high)
        for i, arena in zip(idx.tolist(), arenas, strict=True):
            pillars = arena.pillars
            centres = np.concatenate([pillars[:, :2], pillars[:, :2]], axis=1)
            self._store_obstacles(i, arena.boxes, centres, pillars[:, 2], arena.pits)
            self._pos[i] = arena.start
            self._goal[i] = arena.goal
        yaw = np.array([arena.yaw for arena in arenas], dtype=float)
        self._yaw[idx] = yaw
        self._u[idx] = np.exp(-1j * yaw)
        self._vel[idx] = 0.0
        self._restart(idx)

    def _store_obstacles(
        self, i: int, boxes: np.ndarray, pillar_rects: np.ndarray, radii: np.ndarray, pits: np.ndarray
    ) -> None:
        """Write one arena's obstacles (rows of x0, z0, x1, z1) into agent `i`'s columns."""
        self._rects[:, i, : PIT_COLUMNS.stop] = UNUSED
        for slots, rows in ((BOX_COLUMNS, boxes), (PILLAR_COLUMNS, pillar_rects), (PIT_COLUMNS, pits)):
            self._rects[:, i, slots.start : slots.start + len(rows)] = rows.T
        self._radius[i, PILLAR_COLUMNS] = 0.0
        self._radius[i, PILLAR_COLUMNS.start : PILLAR_COLUMNS.start + len(radii)] = radii

    def _restart(self, idx: np.ndarray) -> None:
        """Clear the episode state of `idx` (pose and layout kept) and refresh their observations."""
        for array in (
            self._yaw_rate,
            self._phase,
            self._roll,
            self._pitch,
            self._roll_rate,
            self._pitch_rate,
        ):
            array[idx] = 0.0
        self._cooldown[idx] = 0
        self._contact[idx] = False
        self._done[idx] = False
        for array in self._events:
            array[idx] = 0
        self._obs[idx] = self._observations(idx)

    def _finish_action(self, vel_start: np.ndarray, yaw_rate: np.ndarray, active: np.ndarray) -> None:
        """Per-action bookkeeping: exact heading, walking phase, low-passed roll and pitch."""
        period = self.action_repeat * DT
        self._u /= np.abs(self._u)
        self._yaw = -np.arctan2(self._u.imag, self._u.real)
        self._yaw_rate = yaw_rate
        speed = np.abs(self._vel)
        mean_speed = (np.abs(vel_start) + speed) / 2
        self._phase = (self._phase + 2 * np.pi * mean_speed * period / STRIDE_LENGTH) % (2 * np.pi)
        forward = -1j * self._u
        acceleration = ((self._vel - vel_start) * forward.conjugate()).real / period
        walk = np.minimum(speed / WALK_REFERENCE_SPEED, 1.0)
        roll_target = ROLL_PER_YAW_RATE * yaw_rate + ROLL_SWAY * walk * np.sin(self._phase)
        pitch_target = -PITCH_PER_ACCELERATION * acceleration
        target = np.array([roll_target, pitch_target])
        before = np.array([self._roll, self._pitch])
        after = target + (before - target) * math.exp(-period / SWAY_TIME_CONSTANT)
        self._roll_rate, self._pitch_rate = np.where(active, (after - before) / period, 0.0)
        self._roll, self._pitch = after

    def _observations(self, sel: _Selection = _ALL) -> np.ndarray:
        """(k, 48) float32 observations of the current state of agents `sel`, in wire order."""
        pos, vel, u, phase = self._pos[sel], self._vel[sel], self._u[sel], self._phase[sel]
        yaw_rate, pitch_rate, roll_rate = self._yaw_rate[sel], self._pitch_rate[sel], self._roll_rate[sel]
        n = len(pos)
        speed = np.abs(vel)
        walk = np.minimum(speed / WALK_REFERENCE_SPEED, 1.0)
        phase_rate = 2 * np.pi * speed / STRIDE_LENGTH
        # One sine and one cosine call for every angle: head bob, hand swing, then the half angles of
        # q = yaw(Y) * pitch(X) * roll(Z), Godot's default YXZ Euler order
        angles = np.array([2 * phase, phase, self._yaw[sel], self._pitch[sel], self._roll[sel]])
        angles[2:] /= 2
        cos, sin = np.cos(angles), np.sin(angles)
        bob = BOB_AMPLITUDE * walk * sin[0]
        bob_rate = 2 * BOB_AMPLITUDE * walk * cos[0] * phase_rate
        swing = HAND_SWING * walk * sin[1]
        swing_rate = HAND_SWING * walk * cos[1] * phase_rate
        (cy, cp, cr), (sy, sp, sr) = cos[2:], sin[2:]
        yaw_pitch = np.array([sp * cy, sy * cp, -sy * sp, cy * cp])  # x, y, z, w
        rolled = yaw_pitch[[1, 0, 3, 2]]  # times roll: cr * (x, y, z, w) + sr * (y, -x, w, -z)
        rolled[1::2] *= -1
        rotation = cr * yaw_pitch + sr * rolled
        # small-angle: pitch rate about the player's right (u), roll rate about its back (1j*u)
        spin = pitch_rate * u + roll_rate * 1j * u
        # both hands at once, left then right; the player frame has +Z back
        arm = u * (_HANDS[:, 0] + 1j * (_HANDS[:, 2] + _HAND_SIGNS * swing))
        hand = pos + arm
        hand_vel = vel - 1j * yaw_rate * arm + u * 1j * _HAND_SIGNS * swing_rate
        to_goal = self._goal[sel] - pos  # goal and XR origin both on the floor: y difference 0
        distance = np.abs(to_goal)
        direction = np.divide(to_goal, distance, out=np.zeros(n, complex), where=distance > 0)

        planar = np.concatenate(
            [pos[None], vel[None], spin[None], hand, hand_vel, to_goal[None], direction[None]]
        )
        height = np.zeros(planar.shape)
        height[:3] = EYE_HEIGHT + bob, bob_rate, yaw_rate
        height[3:5] = _HANDS[:, 1]
        obs = np.empty((n, wire.OBSERVATION_SIZE), np.float32)
        obs[:, _PLANAR_X] = planar.real.T
        obs[:, _PLANAR_X + 1] = height.T
        obs[:, _PLANAR_X + 2] = planar.imag.T
        obs[:, wire.OBS["camera_rotation"]] = rotation.T
        rects, radius = self._rects[:, sel], self._radius[sel]
        gap = self._gap[sel] = gaps(pos, rects, radius)  # kept: the next step starts from these positions
        obs[:, wire.OBS["ray_distances"]] = ray_distances(pos, u, rects, radius, gap)
        obs[:, wire.OBS["goal_distance"]] = distance[:, None]
        return obs
