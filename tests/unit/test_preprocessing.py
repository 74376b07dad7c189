"""Observation preprocessing and action smoothing with hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from spacetime_rl.envs.preprocessing import ActionSmoother, preprocess_observations, yaw_angle
from spacetime_rl.protocol.wire import OBS, OBSERVATION_SIZE


def raw_observation(yaw=0.0):
    obs = np.zeros((1, OBSERVATION_SIZE))
    obs[0, OBS["camera_position"]] = (4.0, 1.7, -2.0)
    obs[0, OBS["camera_rotation"]] = (0.0, math.sin(yaw / 2), 0.0, math.cos(yaw / 2))
    obs[0, OBS["left_controller_position"]] = (3.7, 1.2, -2.3)
    obs[0, OBS["goal_relative_position"]] = (-3.0, 0.0, 0.0)  # 3 m towards -X
    obs[0, OBS["goal_distance"]] = 3.0
    obs[0, OBS["goal_direction"]] = (-1.0, 0.0, 0.0)
    obs[0, OBS["camera_velocity"]] = (-1.0, 0.0, 0.0)
    obs[0, OBS["ray_distances"]] = np.arange(16) / 4
    return obs


def test_position_is_dropped_and_controllers_are_relative_to_the_camera():
    raw = raw_observation()
    obs = preprocess_observations(raw, heading_frame=False)
    assert obs.dtype == np.float32
    assert obs.shape == (1, OBSERVATION_SIZE)
    np.testing.assert_allclose(obs[0, OBS["camera_position"]], [0.0, 1.7, 0.0], rtol=1e-6)
    np.testing.assert_allclose(obs[0, OBS["left_controller_position"]], [-0.3, -0.5, -0.3], rtol=1e-5)
    np.testing.assert_allclose(obs[0, OBS["goal_relative_position"]], [-3.0, 0.0, 0.0])
    np.testing.assert_allclose(obs[0, OBS["ray_distances"]], np.arange(16) / 4)
    assert raw[0, OBS["camera_position"].start] == 4.0  # the input is untouched


def test_heading_frame_puts_a_goal_the_player_faces_straight_ahead():
    # Turned 90 degrees left (facing -X), the goal 3 m along -X is straight ahead: local (0, 0, -3).
    obs = preprocess_observations(raw_observation(yaw=math.pi / 2), heading_frame=True)
    np.testing.assert_allclose(obs[0, OBS["goal_relative_position"]], [0.0, 0.0, -3.0], atol=1e-6)
    np.testing.assert_allclose(obs[0, OBS["goal_direction"]], [0.0, 0.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(obs[0, OBS["camera_velocity"]], [0.0, 0.0, -1.0], atol=1e-6)
    # Left controller (-0.3, -0.5, -0.3) world -> x' = c x - s z = 0.3, z' = s x + c z = -0.3.
    np.testing.assert_allclose(obs[0, OBS["left_controller_position"]], [0.3, -0.5, -0.3], atol=1e-6)
    # The yaw is gone from the quaternion: identity.
    np.testing.assert_allclose(obs[0, OBS["camera_rotation"]], [0.0, 0.0, 0.0, 1.0], atol=1e-6)
    assert obs[0, OBS["goal_distance"]][0] == pytest.approx(3.0)


def test_heading_frame_keeps_pitch_and_roll():
    yaw, pitch = 0.9, 0.3
    q_yaw = np.array([0.0, math.sin(yaw / 2), 0.0, math.cos(yaw / 2)])
    # q_yaw * q_pitch, q_pitch = (sin(p/2), 0, 0, cos(p/2))
    sp, cp = math.sin(pitch / 2), math.cos(pitch / 2)
    q = np.array([q_yaw[3] * sp, q_yaw[1] * cp, -q_yaw[1] * sp, q_yaw[3] * cp])
    raw = raw_observation()
    raw[0, OBS["camera_rotation"]] = q
    assert yaw_angle(q[None])[0] == pytest.approx(yaw)
    obs = preprocess_observations(raw, heading_frame=True)
    np.testing.assert_allclose(obs[0, OBS["camera_rotation"]], [sp, 0.0, 0.0, cp], atol=1e-6)


def test_smoothing_is_exponential_and_resets_per_agent():
    smoother = ActionSmoother(2, smoothing=0.25)
    first = smoother(np.array([[1.0, -1.0, 0.4], [0.0, 0.0, 0.0]]))
    np.testing.assert_allclose(first[0], [0.75, -0.75, 0.3])
    second = smoother(np.array([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0]]))  # raw 2 is clipped to 1
    np.testing.assert_allclose(second, [[0.9375, 0.5625, 0.075], [0.75, 0.0, 0.0]])
    smoother.reset(np.array([0]))
    third = smoother(np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    np.testing.assert_allclose(third, [[0.75, 0.0, 0.0], [0.9375, 0.0, 0.0]])


def test_no_smoothing_passes_clipped_actions_through():
    smoother = ActionSmoother(1, smoothing=0.0)
    np.testing.assert_allclose(smoother(np.array([[0.3, -1.5, 1.0]])), [[0.3, -1.0, 1.0]])
