"""The reference policies evaluate.py compares a trained model with (`metrics.model_policy`):
uniform random actions and a scripted controller.

Each is an `Act`: env observations (N, 48) -> actions (N, 3) in [-1, 1]. A trained policy sees
VecNormalize's normalised observations; these see the VecEnv's preprocessed ones.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from spacetime_rl.envs.preprocessing import yaw_angle
from spacetime_rl.metrics import Act
from spacetime_rl.protocol.wire import ACTION_SIZE, OBS

__all__ = ["heuristic_policy", "random_policy"]

#: Heuristic controller gains, tuned by hand on the simulator.
TURN_GAIN: Final = 2.0  # r per radian of goal bearing
CLEARANCE: Final = 1.2  # m; a ray shorter than this in the forward fan is something to avoid
AVOID_GAIN: Final = 0.8  # r added to turn away, scaled by how close the obstacle is
_FRONT: Final = [15, 0, 1]  # rays 22.5 degrees left, ahead, right
_LEFT: Final = [12, 13, 14, 15]  # rays 90-22.5 degrees left (counter-clockwise of ahead)
_RIGHT: Final = [1, 2, 3, 4]


def random_policy(seed: int) -> Act:
    """Uniform actions in [-1, 1]^3 from its own generator, so a seeded run repeats."""
    rng = np.random.default_rng(seed)

    def act(obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(len(obs), ACTION_SIZE))

    return act


def heuristic_policy() -> Act:
    """Turn toward the goal, walk forward, steer away from short rays (obstacles and drop-offs).

    The goal's bearing comes from the observation's goal direction rotated by minus the camera's
    yaw; with `env.heading_frame` the VecEnv has done that already and the remaining yaw is 0, so
    the same code works either way. Bearing > 0 means the goal is to the right (r > 0 turns right).
    """

    def act(obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        yaw = yaw_angle(obs[:, OBS["camera_rotation"]].astype(np.float64))
        direction = obs[:, OBS["goal_direction"]]
        x = np.cos(yaw) * direction[:, 0] - np.sin(yaw) * direction[:, 2]
        z = np.sin(yaw) * direction[:, 0] + np.cos(yaw) * direction[:, 2]
        bearing = np.arctan2(x, -z)
        rays = obs[:, OBS["ray_distances"]]
        blocked = np.clip((CLEARANCE - rays[:, _FRONT].min(axis=1)) / CLEARANCE, 0.0, 1.0)
        away = np.where(rays[:, _RIGHT].mean(axis=1) >= rays[:, _LEFT].mean(axis=1), 1.0, -1.0)
        turn = TURN_GAIN * bearing + AVOID_GAIN * blocked * away
        forward = np.cos(np.clip(bearing, -np.pi / 2, np.pi / 2)) * (1.0 - 0.7 * blocked)
        strafe = 0.5 * blocked * away
        return np.clip(np.stack([strafe, forward, turn], axis=1), -1.0, 1.0)

    return act
