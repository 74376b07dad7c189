"""Observation preprocessing and action smoothing, vectorised over N agents.

The policy sees the wire layout (48 floats, same slices as `wire.OBS`) with three changes:

* camera position: x and z are zeroed and only the height y is kept. The absolute position in the
  arena says nothing the goal vector and the rays do not, and a policy that keys on it would not
  carry over to another scene; the height still tells a fall from level ground.
* controller positions are made relative to the camera (the hands, not the arena).
* with `heading_frame`, every world-axis vector (camera velocity and angular velocity, controller
  positions and velocities, goal relative position and direction) is rotated by minus the camera's
  yaw, and the camera quaternion becomes the remaining pitch/roll rotation. "Goal ahead" then looks
  the same whichever way the player faces. Axes stay Godot's: +x right, +y up, -z forward.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from spacetime_rl.protocol.wire import ACTION_SIZE, OBS

#: World-axis 3-vectors rotated into the heading frame.
_WORLD_VECTORS: Final = (
    "camera_velocity",
    "camera_angular_velocity",
    "left_controller_position",
    "right_controller_position",
    "left_controller_velocity",
    "right_controller_velocity",
    "goal_relative_position",
    "goal_direction",
)


def yaw_angle(quaternions: np.ndarray) -> np.ndarray:
    """Yaw (rotation about +Y, Godot's YXZ Euler y; positive turns left) of xyzw quaternions (N, 4)."""
    x, y, z, w = quaternions[:, 0], quaternions[:, 1], quaternions[:, 2], quaternions[:, 3]
    return np.arctan2(2.0 * (x * z + w * y), 1.0 - 2.0 * (x * x + y * y))


#: Columns of the x and of the z component of every world-axis vector, in the same order.
_X: Final = np.array([OBS[name].start for name in _WORLD_VECTORS])
_Z: Final = _X + 2


def preprocess_observations(observations: np.ndarray, *, heading_frame: bool) -> np.ndarray:
    """Policy observations (N, 48) float32 from raw wire observations (N, 48); the input is not changed."""
    obs = np.array(observations, dtype=np.float64)
    camera = obs[:, OBS["camera_position"]]
    for side in ("left", "right"):
        obs[:, OBS[f"{side}_controller_position"]] -= camera
    camera[:, [0, 2]] = 0.0

    if heading_frame:
        quaternion = obs[:, OBS["camera_rotation"]]
        yaw = yaw_angle(quaternion)[:, None]
        # every world vector rotated by minus the yaw about +Y, in one go
        cos_yaw, sin_yaw, x, z = np.cos(yaw), np.sin(yaw), obs[:, _X], obs[:, _Z]
        obs[:, _X] = cos_yaw * x - sin_yaw * z
        obs[:, _Z] = sin_yaw * x + cos_yaw * z
        # q_local = conj(q_yaw) * q with q_yaw = (0, sin(yaw/2), 0, cos(yaw/2)).
        qy, qw = np.sin(0.5 * yaw[:, 0]), np.cos(0.5 * yaw[:, 0])
        x, y, z, w = quaternion.T.copy()
        quaternion[:, 0] = qw * x - qy * z
        quaternion[:, 1] = qw * y - qy * w
        quaternion[:, 2] = qw * z + qy * x
        quaternion[:, 3] = qw * w + qy * y
    return obs.astype(np.float32)


class ActionSmoother:
    """The seed's exponential smoothing `a_t = s * a_{t-1} + (1 - s) * a_raw`, clipped to [-1, 1].

    Each agent's previous action is zero at the start of its episode (call `reset`).
    """

    def __init__(self, num_agents: int, smoothing: float) -> None:
        self.smoothing = smoothing
        self.previous = np.zeros((num_agents, ACTION_SIZE))

    def reset(self, agents: np.ndarray | slice = slice(None)) -> None:
        self.previous[agents] = 0.0

    def __call__(self, raw_actions: np.ndarray, agents: slice = slice(None)) -> np.ndarray:
        """Applied actions (k, 3) float64 for the policy's raw actions (k, 3) of `agents` (all N by default)."""
        raw = np.clip(np.asarray(raw_actions, dtype=np.float64), -1.0, 1.0)
        smoothed = self.smoothing * self.previous[agents] + (1.0 - self.smoothing) * raw
        np.clip(smoothed, -1.0, 1.0, out=smoothed)
        self.previous[agents] = smoothed
        return smoothed
