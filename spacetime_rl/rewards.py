"""Reward terms and the VR comfort score: pure NumPy over N agents, no I/O.

Every shaped bonus is paid per metre of *new* closest approach to the goal, so an episode's shaped
gains are bounded by (progress + comfort_bonus + smooth_movement) x start distance and are zero for
standing still, circling or oscillating. docs/rewards.md gives the reasoning.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Final

import numpy as np

from spacetime_rl.config import RewardConfig
from spacetime_rl.protocol import Events
from spacetime_rl.protocol.wire import OBS

#: Names of the reward terms, in reporting order; each is also a `RewardConfig` weight.
REWARD_TERMS: Final = tuple(f.name for f in fields(RewardConfig))

#: The seed's comfort thresholds and deductions.
ROTATION_THRESHOLD: Final = 0.7  # |r| of the applied action, i.e. a fraction of max_rotation_speed
ROTATION_DEDUCTION: Final = 0.3
SPEED_FRACTION: Final = 0.8  # of max_speed
SPEED_DEDUCTION: Final = 0.2
ROLL_THRESHOLD: Final = 0.3  # radians
ROLL_DEDUCTION: Final = 0.2


@dataclass(frozen=True)
class RewardBreakdown:
    """One step's rewards: the total and each weighted term, all shaped (N,) float64."""

    total: np.ndarray
    weighted: np.ndarray  # (len(REWARD_TERMS), N): each term, weighted, in REWARD_TERMS order
    comfort: np.ndarray  # the comfort score in [0.3, 1] used for the comfort bonus

    @property
    def terms(self) -> dict[str, np.ndarray]:
        """Each weighted term (N,) by name."""
        return dict(zip(REWARD_TERMS, self.weighted, strict=True))


def roll_angle(quaternions: np.ndarray) -> np.ndarray:
    """Roll (rotation about the view axis, Godot's YXZ Euler z) of xyzw quaternions (N, 4), radians."""
    x, y, z, w = quaternions[:, 0], quaternions[:, 1], quaternions[:, 2], quaternions[:, 3]
    return np.arctan2(2.0 * (x * y + w * z), 1.0 - 2.0 * (x * x + z * z))


def horizontal_speed(velocities: np.ndarray) -> np.ndarray:
    """Speed in the floor plane (N,) of world velocities (N, 3): falling is not locomotion."""
    return np.hypot(velocities[:, 0], velocities[:, 2])


def comfort_score(observations: np.ndarray, actions: np.ndarray, max_speed: float) -> np.ndarray:
    """The seed's comfort score (N,) in [0.3, 1] of raw observations (N, 48) and applied actions (N, 3).

    Rotation speed is |r| of the applied action (it is already a fraction of max_rotation_speed),
    speed is the camera's horizontal speed in m/s, roll comes from the camera quaternion.
    """
    score = np.ones(len(observations))
    score -= ROTATION_DEDUCTION * (np.abs(actions[:, 2]) > ROTATION_THRESHOLD)
    speed = horizontal_speed(observations[:, OBS["camera_velocity"]])
    score -= SPEED_DEDUCTION * (speed > SPEED_FRACTION * max_speed)
    score -= ROLL_DEDUCTION * (np.abs(roll_angle(observations[:, OBS["camera_rotation"]])) > ROLL_THRESHOLD)
    return score


def smoothness(previous_velocities: np.ndarray, velocities: np.ndarray, max_speed: float) -> np.ndarray:
    """Low-acceleration score (N,) in [0, 1]: 1 at constant velocity, 0 for a change of max_speed or more.

    The change is measured over one action (action_repeat physics frames) in the floor plane.
    """
    change = horizontal_speed(velocities - previous_velocities)
    return 1.0 - np.minimum(change / max_speed, 1.0)


class RewardCalculator:
    """Vectorised rewards over N agents, keeping each agent's closest approach since its reset.

    With a sequence of configs (one per task), `step` scores agent i with `configs[tasks[i]]`.
    """

    def __init__(
        self, config: RewardConfig | Sequence[RewardConfig], num_agents: int, max_speed: float
    ) -> None:
        configs = [config] if isinstance(config, RewardConfig) else list(config)
        #: (terms in REWARD_TERMS order, tasks); indexed by `step`'s tasks, so every agent has its
        #: own task's weights.
        self.weights = np.array([[getattr(c, name) for c in configs] for name in REWARD_TERMS])
        self.max_speed = max_speed
        self.best_distance = np.zeros(num_agents)
        self.previous_velocity = np.zeros((num_agents, 3))

    def reset(self, observations: np.ndarray, agents: np.ndarray | slice = slice(None)) -> None:
        """Start new episodes for `agents` from their first raw observations (k, 48)."""
        self.best_distance[agents] = observations[:, OBS["goal_distance"]][:, 0]
        self.previous_velocity[agents] = observations[:, OBS["camera_velocity"]]

    def step(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        events: Events,
        truncated: np.ndarray,
        agents: slice = slice(None),
        tasks: np.ndarray | None = None,
    ) -> RewardBreakdown:
        """Rewards for the step that led to raw `observations` (k, 48) of `agents` (all N by
        default), given the applied `actions`.

        `observations` are the last observations of the step (the terminal one for finished agents),
        `truncated` flags agents cut by the time limit without finishing, `tasks` (k,) are the tasks
        the step was run under (only needed, and then required, with several configs).
        """
        if tasks is None and self.weights.shape[1] > 1:
            raise ValueError(f"{self.weights.shape[1]} tasks' reward weights: pass each agent's task")
        distance = observations[:, OBS["goal_distance"]][:, 0]
        best = self.best_distance[agents]  # a view: agents is a slice
        new_progress = np.maximum(best - distance, 0.0)
        np.minimum(best, distance, out=best)

        velocity = observations[:, OBS["camera_velocity"]]
        comfort = comfort_score(observations, actions, self.max_speed)
        smooth = smoothness(self.previous_velocity[agents], velocity, self.max_speed)
        self.previous_velocity[agents] = velocity

        unweighted = {
            "goal_reached": events.goal_reached,
            "progress": new_progress,
            "smooth_movement": smooth * new_progress,
            "comfort_bonus": comfort * new_progress,
            "collision_penalty": events.collisions,
            "fall_penalty": events.fell,
            "timeout_penalty": truncated,
            "teleport_penalty": events.teleports,
            "discomfort_penalty": 1.0 - comfort,
            "time_penalty": np.ones(len(distance)),
        }
        # (terms, k): every term at once, each agent with its task's weights
        weights = self.weights[:, :1] if tasks is None else self.weights[:, tasks]
        weighted = weights * np.array([unweighted[name] for name in REWARD_TERMS])
        total = weighted.sum(axis=0)
        return RewardBreakdown(total=total, weighted=weighted, comfort=comfort)
