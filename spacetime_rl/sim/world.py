"""Physics of the simulated `vr_locomotion_test` scene: N independent arenas, one VR player each.

Pure NumPy, no I/O. Every per-agent quantity is an array indexed by agent; the step hot path loops
only over the `action_repeat` physics frames, never over agents.

Frames and units follow Godot (see `spacetime_rl.protocol.wire`): +Y up, -Z forward, metres, seconds,
radians. The horizontal plane is stored as complex numbers `x + 1j*z`, so a heading is the unit
complex `u = exp(-1j*yaw)`: the player's right is `u`, forward is `-1j*u`, and turning right
(clockwise seen from above) by `a` radians multiplies `u` by `exp(1j*a)`. See `docs/simulator.md`
for the arena, the sensors and every constant below.
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
from spacetime_rl.sim import scenarios
from spacetime_rl.sim.scenarios import MAX_BOXES, MAX_PILLARS, MAX_PITS, PLATFORM_HALF_SIZE

__all__ = ["Layout", "StepOutcome", "World", "ignored_options"]

# --- arena -------------------------------------------------------------------------------------
NUM_BOXES: Final = 10  # axis-aligned boxes per open-field arena, 2.5 m tall
NUM_PILLARS: Final = 10  # round pillars per open-field arena, 2.5 m tall
NUM_PITS: Final = 4  # rectangular holes in the floor per open-field arena
BOX_HALF_EXTENT: Final = (0.25, 1.5)  # m, range of each half side
PILLAR_RADIUS: Final = (0.15, 0.5)  # m
PIT_HALF_EXTENT: Final = (0.75, 2.0)  # m
DEFAULT_GOAL_DISTANCE: Final = (3.0, 15.0)  # m, used while the options leave them unset
MAX_GOAL_DISTANCE: Final = 40.0  # m; far enough for 30 m curricula, close enough to fit the platform
GOAL_RADIUS: Final = 0.6  # m, horizontal distance at which the goal counts as reached

# --- player ------------------------------------------------------------------------------------
PLAYER_RADIUS: Final = 0.3  # m, capsule radius
EYE_HEIGHT: Final = 1.7  # m above the XR origin (the floor under the player)
RAY_HEIGHT: Final = 1.2  # m, chest height the sensor rays are cast at
MAX_ACCELERATION: Final = 8.0  # m/s^2: 0 -> 2 m/s in 0.25 s, so jerky commands show as acceleration
MAX_SPEED_LIMIT: Final = 10.0  # m/s; keeps a frame's move (0.11 m) well under PLAYER_RADIUS
MAX_ROTATION_SPEED_LIMIT: Final = 720.0  # deg/s
CONTACT_SLOP: Final = 1e-3  # m; within PLAYER_RADIUS + slop of an obstacle counts as touching it
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

# --- layout sampling ---------------------------------------------------------------------------
GRID_CELL: Final = 1.0  # m, cell of the reachability grid
PIT_MARGIN: Final = 0.1  # m kept between walkable grid cells and pit edges
MAX_LAYOUT_ATTEMPTS: Final = 16  # then fall back to an empty arena (never needed in practice)
CANDIDATES: Final = 64  # start/goal pairs tried per layout attempt

DT: Final = 1.0 / wire.PHYSICS_HZ
_SENTINEL: Final = scenarios.UNUSED  # where unused obstacle slots live: far from everything, never near
_BORDER_WIDTH: Final = 100.0  # m; the void around the platform is four wide "pits"
# Obstacle columns of the (N, K) layout arrays. A pillar is a zero-size rectangle with a radius, so
# one "distance to the nearest point, minus the radius" covers every kind.
_BOXES: Final = slice(0, MAX_BOXES)
_PILLARS: Final = slice(MAX_BOXES, MAX_BOXES + MAX_PILLARS)
_SOLIDS: Final = slice(0, MAX_BOXES + MAX_PILLARS)
_PITS: Final = slice(_SOLIDS.stop, _SOLIDS.stop + MAX_PITS)
_DROPS: Final = slice(_SOLIDS.stop, None)  # pits, then the four border "pits" around the platform
_NUM_OBSTACLES: Final = _PITS.stop + 4
_GRID_SIZE: Final = int(2 * PLATFORM_HALF_SIZE / GRID_CELL)
_RAY_ROTATIONS: Final = -1j * np.exp(1j * np.arange(wire.NUM_RAYS) * (2 * np.pi / wire.NUM_RAYS))
_IS_RECT: Final = np.ones(_NUM_OBSTACLES, bool)
_IS_RECT[_PILLARS] = False
_RECT_COLUMNS: Final = np.flatnonzero(_IS_RECT)
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


def _number(options: Mapping[str, Any], key: str, low: float, high: float, unit: str) -> float | None:
    value = options[key]
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise _option_error(key, value, f"a number in [{low:g}, {high:g}] {unit}")
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

        # layout, one column per obstacle (see _BOXES...): rectangle x0, z0, x1, z1 planes and a
        # radius; unused slots hold the sentinel
        self._rects = np.full((4, n, _NUM_OBSTACLES), _SENTINEL)
        self._radius = np.zeros((n, _NUM_OBSTACLES))
        half, far = PLATFORM_HALF_SIZE, PLATFORM_HALF_SIZE + _BORDER_WIDTH
        border = np.array(
            [
                [-far, -far, -half, far],
                [half, -far, far, far],
                [-far, -far, far, -half],
                [-far, half, far, far],
            ]
        )
        self._rects[..., _PITS.stop :] = border.T[:, None]
        self._goal = np.zeros(n, complex)
        self._gap = np.zeros((n, _NUM_OBSTACLES))  # _gaps() as of the last observation

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
        self._contact = np.zeros((n, _SOLIDS.stop), bool)
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
        sub = _Neighbourhood(self, near) if np.count_nonzero(near) else None
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
        used = rects[:, 0] < _SENTINEL
        boxes, pits = rects[_BOXES][used[_BOXES]], rects[_PITS][used[_PITS]]
        pillars = np.stack([rects[_PILLARS, 0], rects[_PILLARS, 1], self._radius[i, _PILLARS]], axis=1)
        goal = np.array([self._goal[i].real, self._goal[i].imag])
        return Layout(boxes, pillars[used[_PILLARS]], pits, goal)

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
        for key, unit, high in (
            ("min_goal_distance", "m", MAX_GOAL_DISTANCE),
            ("max_goal_distance", "m", MAX_GOAL_DISTANCE),
            ("max_speed", "m/s", MAX_SPEED_LIMIT),
            ("max_rotation_speed", "deg/s", MAX_ROTATION_SPEED_LIMIT),
        ):
            if key in known:
                updates[key] = _number(known, key, 0.0, high, unit)
        if "snap_angle" in known:
            value = _number(known, "snap_angle", 0.0, 180.0, "deg")
            if value == 0.0:
                raise _option_error("snap_angle", 0, "a number in (0, 180] deg")
            updates["snap_angle"] = value
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
        pending = np.arange(idx.size)
        yaw = np.zeros(idx.size)
        for _ in range(MAX_LAYOUT_ATTEMPTS):
            if not pending.size:
                break
            solved = np.zeros(pending.size, bool)
            for scenario in np.unique(self._scenario[idx[pending]]):  # one batch per scenario
                rows = np.flatnonzero(self._scenario[idx[pending]] == scenario)
                batch = pending[rows]
                generator = _GENERATORS[wire.SCENARIOS[scenario]]
                draws = np.stack([self._rngs[i].random(generator.draws) for i in idx[batch]])
                ok, sample = _pick_reachable(generator.generate(draws, low[batch], high[batch]))
                for j, agent_row in zip(np.flatnonzero(ok), batch[ok], strict=True):
                    self._store_arena(int(idx[agent_row]), sample, int(j))
                yaw[batch[ok]] = sample["yaw"][ok]
                solved[rows] = ok
            pending = pending[~solved]
        for agent_row in pending:  # fallback: an empty arena, start and goal along the diagonal
            i = int(idx[agent_row])
            start = -(PLATFORM_HALF_SIZE - 2.0) * (1 + 1j)
            goal = start + float(low[agent_row] + high[agent_row]) / 2 * (1 + 1j) / math.sqrt(2)
            self.set_layout(i, goal=(goal.real, goal.imag))
            self._pos[i] = start
        self._yaw[idx] = yaw
        self._u[idx] = np.exp(-1j * yaw)
        self._vel[idx] = 0.0
        self._restart(idx)

    def _store_arena(self, i: int, sample: dict[str, np.ndarray], j: int) -> None:
        pillars = sample["pillars"][j]
        centres = np.concatenate([pillars[:, :2], pillars[:, :2]], axis=1)
        self._store_obstacles(i, sample["boxes"][j], centres, pillars[:, 2], sample["pits"][j])
        self._pos[i] = sample["start"][j]
        self._goal[i] = sample["goal"][j]

    def _store_obstacles(
        self, i: int, boxes: np.ndarray, pillar_rects: np.ndarray, radii: np.ndarray, pits: np.ndarray
    ) -> None:
        """Write one arena's obstacles (rows of x0, z0, x1, z1) into agent `i`'s columns."""
        self._rects[:, i, : _PITS.stop] = _SENTINEL
        for slots, rows in ((_BOXES, boxes), (_PILLARS, pillar_rects), (_PITS, pits)):
            self._rects[:, i, slots.start : slots.start + len(rows)] = rows.T
        self._radius[i, _PILLARS] = 0.0
        self._radius[i, _PILLARS.start : _PILLARS.start + len(radii)] = radii

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

    def _gaps(self, sel: _Selection = _ALL) -> np.ndarray:
        """(k, K) horizontal distance from each player's centre to each obstacle (0 inside one)."""
        offset = _offsets(_xz(self._pos[sel])[..., None], self._rects[:, sel])
        distance = np.sqrt(_dot(offset, offset))
        return np.maximum(distance - self._radius[sel], 0.0)

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
        obs[:, wire.OBS["ray_distances"]] = self._ray_distances(sel)
        obs[:, wire.OBS["goal_distance"]] = distance[:, None]
        return obs

    def _ray_distances(self, sel: _Selection = _ALL) -> np.ndarray:
        """(k, 16) distance along each horizontal ray to the first obstacle surface or drop-off edge.

        A ray ends where it enters a box, pillar, pit or the void beyond the platform; rays start at
        the player's centre (so touching a wall reads PLAYER_RADIUS) and read RAY_RANGE on a miss.
        Only the (agent, obstacle) pairs closer than RAY_RANGE are traced.
        """
        pos, rects, radius = self._pos[sel], self._rects[:, sel], self._radius[sel]
        out = np.full((len(pos), wire.NUM_RAYS), wire.RAY_RANGE)
        gap = self._gap[sel] = self._gaps(sel)  # kept: the next step starts from these positions
        near = gap <= wire.RAY_RANGE
        if not np.count_nonzero(near):
            return out
        # Directions once per agent, not per pair; rectangles and circles are gathered separately
        # so no pair array is masked or scattered. Arrays run (x and z, ray, pair): each formula is
        # one NumPy call for both axes, over rows as long as the number of pairs.
        d = self._u[sel] * _RAY_ROTATIONS[:, None]  # (16, k) unit directions
        direction = np.array([d.real, d.imag])
        origin = _xz(pos)
        agent, column = np.nonzero(near[:, _RECT_COLUMNS])
        if agent.size:  # slab test against the rectangle
            step = np.where(np.abs(direction) < 1e-12, 1e-12, direction)[..., agent]
            corners = rects[:, agent, _RECT_COLUMNS[column]].reshape(2, 2, -1) - origin[:, agent]
            t = corners[:, :, None] / step  # (corner, axis, ray, pair)
            first, last = np.minimum(t[0], t[1]), np.maximum(t[0], t[1])
            enter = np.maximum(np.maximum(first[0], first[1]), 0.0)
            leave = np.minimum(last[0], last[1])
            _nearest_per_agent(out, agent, np.where(enter <= leave, enter, np.inf))
        agent, column = np.nonzero(near[:, _PILLARS])
        if agent.size:  # ray against the pillar's circle
            k = column + _PILLARS.start
            offset = rects[:2, agent, k] - origin[:, agent]  # (axis, pair) to the centre
            b = _dot(direction[..., agent], offset[:, None])  # along the ray to the closest approach
            disc = b * b - (_dot(offset, offset) - radius[agent, k] ** 2)
            root = np.sqrt(np.maximum(disc, 0.0))
            t = np.where((disc >= 0) & (b + root >= 0), np.maximum(b - root, 0.0), np.inf)
            _nearest_per_agent(out, agent, t)
        return out


def _xz(points: np.ndarray) -> np.ndarray:
    """(2, k) x and z rows of the complex `points` (k,)."""
    return np.array([points.real, points.imag])


def _offsets(xz: np.ndarray, rects: np.ndarray) -> np.ndarray:
    """x, z from the nearest point of each rectangle (x0, z0, x1, z1 first) to the point `xz`."""
    return xz - np.minimum(np.maximum(xz, rects[:2]), rects[2:])


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot products of vectors whose x and z lie along the first axis."""
    products = a * b
    return products[0] + products[1]


def _nearest_per_agent(out: np.ndarray, agent: np.ndarray, t: np.ndarray) -> None:
    """out[a, r] = min(out[a, r], t[r, p] of every pair p that belongs to agent a)."""
    # on flat indices: NumPy's fast path for ufunc.at is one-dimensional
    rays = out.shape[1]
    np.minimum.at(out.reshape(-1), (np.arange(rays)[:, None] + agent * rays).ravel(), t.ravel())


class _Neighbourhood:
    """The (agent, obstacle) pairs that can touch during an action, gathered once for per-frame tests.

    Any other obstacle stays farther than PLAYER_RADIUS + CONTACT_SLOP from its agent all action, so
    it can neither touch nor push it. Solid pairs come first, then drop pairs; each kind is sorted.
    """

    def __init__(self, world: World, near: np.ndarray):
        self.solid_agent, self.solid = np.nonzero(near[:, _SOLIDS])
        drop_agent, drop = np.nonzero(near[:, _DROPS])
        self.agent = np.concatenate([self.solid_agent, drop_agent])
        column = np.concatenate([self.solid, drop + _DROPS.start])
        self.rects = world._rects[:, self.agent, column]
        self.radius = world._radius[self.solid_agent, self.solid]
        self.contact = world._contact[self.solid_agent, self.solid]
        self.new_contacts = np.zeros(self.solid.size, np.int64)  # rising edges of contact so far
        self.pushed = np.unique(self.solid_agent)  # the agents a solid can push
        self.row = np.searchsorted(self.pushed, self.solid_agent)
        # The first frames, before any pair can touch or reach its drop, need no tests: a player
        # moves at most max(max_speed, its speed now) * DT per frame (1e-9 m covers rounding).
        room = world._gap[self.agent, column] - 1e-9
        room[: self.solid.size] -= PLAYER_RADIUS + CONTACT_SLOP
        per_frame = np.maximum(world._max_speed, np.abs(world._vel))[self.agent] * DT
        self.quiet_frames = max(math.ceil(np.min(room / np.maximum(per_frame, 1e-9))) - 1, 0)

    def collide(self, pos: np.ndarray, vel: np.ndarray) -> np.ndarray:
        """Push the players out of solids, slide their velocity and count new contacts; returns the
        agents whose centre is over a drop (inside a pit or the void, edge included)."""
        offset = _offsets(_xz(pos[self.agent]), self.rects)
        d2 = _dot(offset, offset)
        solids = self.solid.size
        gap = np.sqrt(d2[:solids]) - self.radius
        contact = gap < PLAYER_RADIUS + CONTACT_SLOP
        self.new_contacts += contact > self.contact
        self.contact = contact
        hit = gap < PLAYER_RADIUS
        if np.count_nonzero(hit):
            self._push_out(pos, vel, offset[:, :solids], gap, hit)
        over_drop = d2[solids:] == 0.0
        if np.count_nonzero(over_drop):
            return np.unique(self.agent[solids:][over_drop])
        return self.agent[:0]

    def _push_out(
        self, pos: np.ndarray, vel: np.ndarray, offset: np.ndarray, gap: np.ndarray, hit: np.ndarray
    ) -> None:
        """Push out along each obstacle's outward normal by the penetration depth, then slide.

        Each agent's sums run over a row of all its solids, zeros included, so they add up in one
        fixed order whichever pairs are near.
        """
        outward = offset[0] + 1j * offset[1]
        centre_gap = gap + self.radius
        normal = np.divide(outward, centre_gap, out=np.zeros_like(outward), where=centre_gap > 0)
        inward = np.minimum((normal.conjugate() * vel[self.solid_agent]).real, 0.0) * hit
        push, slide = np.zeros((2, self.pushed.size, _SOLIDS.stop), complex)
        push[self.row, self.solid] = normal * np.where(hit, PLAYER_RADIUS - gap, 0.0)
        slide[self.row, self.solid] = inward * normal
        pos[self.pushed] += push.sum(1)
        vel[self.pushed] -= slide.sum(1)


def _draw_layout_slices() -> tuple[dict[str, slice], int]:
    sizes = {
        "boxes": NUM_BOXES * 4,
        "pillars": NUM_PILLARS * 3,
        "pits": NUM_PITS * 4,
        "start": CANDIDATES * 2,
        "jitter": CANDIDATES * 2,
        "distance": CANDIDATES,
        "angle": CANDIDATES,
        "yaw": 1,
    }
    slices, start = {}, 0
    for name, size in sizes.items():
        slices[name] = slice(start, start + size)
        start += size
    return slices, start


_DRAW, _DRAWS_PER_ATTEMPT = _draw_layout_slices()


def _rects(centre_x: np.ndarray, centre_z: np.ndarray, half_x: np.ndarray, half_z: np.ndarray) -> np.ndarray:
    return np.stack([centre_x - half_x, centre_z - half_z, centre_x + half_x, centre_z + half_z], axis=-1)


def _uniform(u: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    return bounds[0] + u * (bounds[1] - bounds[0])


def _open_field(draws: np.ndarray, low: np.ndarray, high: np.ndarray) -> scenarios.Arenas:
    """The seed's arena for each row of uniform `draws`: scattered obstacles, CANDIDATES start/goal pairs.

    Rows are independent of each other, so an agent's arena depends only on its own draws.
    """
    k = draws.shape[0]
    half = PLATFORM_HALF_SIZE
    b = draws[:, _DRAW["boxes"]].reshape(k, NUM_BOXES, 4)
    bhx, bhz = _uniform(b[..., 2], BOX_HALF_EXTENT), _uniform(b[..., 3], BOX_HALF_EXTENT)
    boxes = _rects((2 * b[..., 0] - 1) * (half - bhx), (2 * b[..., 1] - 1) * (half - bhz), bhx, bhz)
    p = draws[:, _DRAW["pits"]].reshape(k, NUM_PITS, 4)
    phx, phz = _uniform(p[..., 2], PIT_HALF_EXTENT), _uniform(p[..., 3], PIT_HALF_EXTENT)
    pits = _rects((2 * p[..., 0] - 1) * (half - phx), (2 * p[..., 1] - 1) * (half - phz), phx, phz)
    c = draws[:, _DRAW["pillars"]].reshape(k, NUM_PILLARS, 3)
    radius = _uniform(c[..., 2], PILLAR_RADIUS)
    pillars = np.stack(
        [(2 * c[..., 0] - 1) * (half - radius), (2 * c[..., 1] - 1) * (half - radius), radius], -1
    )
    g = _GRID_SIZE
    cell = np.minimum((draws[:, _DRAW["start"]].reshape(k, CANDIDATES, 2) * g).astype(np.int64), g - 1)
    jitter = (draws[:, _DRAW["jitter"]].reshape(k, CANDIDATES, 2) - 0.5) * 0.5
    start_xz = -half + (cell + 0.5 + jitter) * GRID_CELL
    start = start_xz[..., 0] + 1j * start_xz[..., 1]
    distance = low[:, None] + draws[:, _DRAW["distance"]] * (high - low)[:, None]
    angle = 2 * np.pi * draws[:, _DRAW["angle"]]
    goal = start + distance * (np.cos(angle) + 1j * np.sin(angle))
    yaw = 2 * np.pi * draws[:, _DRAW["yaw"]][:, 0] - np.pi
    return scenarios.Arenas(boxes, pillars, pits, start, goal, yaw)


_GENERATORS: Final = {wire.DEFAULT_SCENARIO: scenarios.Generator(_DRAWS_PER_ATTEMPT, _open_field)}
_GENERATORS.update(scenarios.GENERATORS)


def _pick_reachable(arenas: scenarios.Arenas) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each arena's first start/goal candidate in walkable cells: (ok, arrays), ok False where that
    candidate's goal is not reachable or no candidate lies in walkable cells."""
    boxes, pillars, pits = arenas.boxes, arenas.pillars, arenas.pits
    k = boxes.shape[0]
    free = _free_cells(boxes, pillars, pits)
    g = _GRID_SIZE

    def cells(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        xz = np.stack([points.real, points.imag], -1)
        cell = np.floor((xz + PLATFORM_HALF_SIZE) / GRID_CELL).astype(np.int64)
        return np.clip(cell, 0, g - 1), np.all((cell >= 0) & (cell < g), axis=-1)

    (start_cell, start_on), (goal_cell, goal_on) = cells(arenas.start), cells(arenas.goal)
    rows = np.arange(k)[:, None]
    valid = (
        start_on
        & goal_on
        & free[rows, start_cell[..., 0], start_cell[..., 1]]
        & free[rows, goal_cell[..., 0], goal_cell[..., 1]]
    )
    pick = valid.argmax(1)
    ok = valid[np.arange(k), pick]
    ok &= _reachable(free, start_cell[np.arange(k), pick], goal_cell[np.arange(k), pick])
    sample = {
        "boxes": boxes,
        "pillars": pillars,
        "pits": pits,
        "start": arenas.start[np.arange(k), pick],
        "goal": arenas.goal[np.arange(k), pick],
        "yaw": arenas.yaw,
    }
    return ok, sample


def _free_cells(boxes: np.ndarray, pillars: np.ndarray, pits: np.ndarray) -> np.ndarray:
    """(k, G, G) bool: grid cells where the player can stand anywhere without touching a solid or a drop.

    Conservative: boxes grown by the player radius as squares, pits grown by PIT_MARGIN, the outer
    ring of cells blocked. Cell (i, j) spans x in [-24 + i, -23 + i], z likewise with j.
    """
    lo = -PLATFORM_HALF_SIZE + np.arange(_GRID_SIZE) * GRID_CELL
    hi = lo + GRID_CELL

    def overlap(rects: np.ndarray, grow: float) -> np.ndarray:
        ox = (lo < rects[..., 2:3] + grow) & (hi > rects[..., 0:1] - grow)  # (k, K, G)
        oz = (lo < rects[..., 3:4] + grow) & (hi > rects[..., 1:2] - grow)
        return np.any(ox[..., :, None] & oz[..., None, :], axis=1)

    blocked = overlap(boxes, PLAYER_RADIUS) | overlap(pits, PIT_MARGIN)
    cx, cz, r = pillars[..., 0:1], pillars[..., 1:2], pillars[..., 2:3]
    gx = np.maximum(np.maximum(lo - cx, cx - hi), 0.0)  # (k, K, G) gap from the centre to the cell
    gz = np.maximum(np.maximum(lo - cz, cz - hi), 0.0)
    blocked |= (gx[..., :, None] ** 2 + gz[..., None, :] ** 2 < (r[..., None] + PLAYER_RADIUS) ** 2).any(1)
    blocked[:, [0, -1], :] = True
    blocked[:, :, [0, -1]] = True
    return ~blocked


def _reachable(free: np.ndarray, start: np.ndarray, goal: np.ndarray) -> np.ndarray:
    """(k,) bool: a 4-connected path of free cells joins each start cell to its goal cell (flood fill)."""
    k = free.shape[0]
    rows = np.arange(k)
    reached = np.zeros_like(free)
    reached[rows, start[:, 0], start[:, 1]] = free[rows, start[:, 0], start[:, 1]]
    while True:
        grown = reached.copy()
        grown[:, 1:] |= reached[:, :-1]
        grown[:, :-1] |= reached[:, 1:]
        grown[:, :, 1:] |= reached[:, :, :-1]
        grown[:, :, :-1] |= reached[:, :, 1:]
        grown &= free
        at_goal = grown[rows, goal[:, 0], goal[:, 1]]
        if at_goal.all() or np.array_equal(grown, reached):
            return np.asarray(at_goal, dtype=bool)
        reached = grown
