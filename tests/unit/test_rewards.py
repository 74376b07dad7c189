"""Reward terms in isolation with hand numbers, the comfort score, and the shaping bound."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from spacetime_rl.config import RewardConfig
from spacetime_rl.protocol.wire import OBS, OBSERVATION_SIZE
from spacetime_rl.rewards import REWARD_TERMS, RewardCalculator, comfort_score, roll_angle

MAX_SPEED = 2.0


def observations(distance, velocity=(0.0, 0.0, 0.0), roll=0.0):
    """Raw observations (N, 48) at goal `distance` (N,), one camera velocity and roll for all."""
    distance = np.atleast_1d(np.asarray(distance, dtype=float))
    obs = np.zeros((len(distance), OBSERVATION_SIZE))
    obs[:, OBS["goal_distance"]] = distance[:, None]
    obs[:, OBS["camera_velocity"]] = velocity
    obs[:, OBS["camera_rotation"]] = (0.0, 0.0, math.sin(roll / 2), math.cos(roll / 2))
    return obs


def events(n=1, collisions=0, fell=False, goal_reached=False, teleports=0):
    return SimpleNamespace(
        collisions=np.full(n, collisions, dtype=np.int32),
        fell=np.full(n, fell),
        goal_reached=np.full(n, goal_reached),
        teleports=np.full(n, teleports, dtype=np.int32),
    )


def only(**weights):
    """A RewardConfig with every weight zero except `weights`."""
    return RewardConfig(**{name: 0.0 for name in REWARD_TERMS} | weights)


def one_step(
    config, start, distance, *, actions=(0.0, 0.0, 0.0), velocity=(0.0, 0.0, 0.0), truncated=False, **ev
):
    calculator = RewardCalculator(config, 1, MAX_SPEED)
    calculator.reset(observations(start))
    return calculator.step(
        observations(distance, velocity), np.array([actions]), events(**ev), np.array([truncated])
    )


def test_terms_are_the_config_fields():
    assert REWARD_TERMS == (
        "goal_reached",
        "progress",
        "smooth_movement",
        "comfort_bonus",
        "collision_penalty",
        "fall_penalty",
        "timeout_penalty",
        "teleport_penalty",
        "discomfort_penalty",
        "time_penalty",
    )


def test_progress_pays_per_metre_of_new_closest_approach():
    calculator = RewardCalculator(only(progress=1.0), 1, MAX_SPEED)
    calculator.reset(observations(10.0))
    paid = [
        calculator.step(observations(d), np.zeros((1, 3)), events(), np.array([False])).total[0]
        for d in (9.0, 9.5, 8.5, 8.5, 7.0)
    ]
    # 10 -> 9 pays 1; backing off pays 0; 9.5 -> 8.5 pays only the 0.5 below the best 9; then 1.5.
    np.testing.assert_allclose(paid, [1.0, 0.0, 0.5, 0.0, 1.5])


def test_comfort_bonus_is_comfort_score_times_new_progress():
    # 2 m of progress, turning at |r| = 0.8: comfort 0.7, bonus 2.0 x 0.7 x 2 = 2.8.
    result = one_step(only(comfort_bonus=2.0), 10.0, 8.0, actions=(0.0, 1.0, -0.8))
    assert result.total[0] == pytest.approx(2.8)
    assert result.comfort[0] == pytest.approx(0.7)


def test_discomfort_penalty_costs_every_uncomfortable_step_and_nothing_standing_still():
    penalty = only(discomfort_penalty=-1.0)
    fast = one_step(penalty, 10.0, 10.0, velocity=(1.9, 0.0, 0.0))  # above 80% of 2 m/s: comfort 0.8
    assert fast.terms["discomfort_penalty"][0] == pytest.approx(-0.2)
    turning = one_step(penalty, 10.0, 10.0, actions=(0.0, 0.0, 0.9))  # comfort 0.7
    assert turning.terms["discomfort_penalty"][0] == pytest.approx(-0.3)
    still = one_step(penalty, 10.0, 10.0)
    assert still.terms["discomfort_penalty"][0] == 0.0 and still.total[0] == 0.0


def test_time_penalty_costs_every_step_whatever_the_agent_does():
    penalty = only(time_penalty=-0.1)
    for step in (
        one_step(penalty, 10.0, 10.0),  # standing still
        one_step(penalty, 10.0, 9.8, velocity=(1.9, 0.0, 0.0)),  # walking briskly
        one_step(penalty, 10.0, 10.0, truncated=True, collisions=1),
    ):
        assert step.terms["time_penalty"][0] == pytest.approx(-0.1) and step.total[0] == pytest.approx(-0.1)


def test_with_the_comfort_weights_a_comfortable_pace_pays_more_per_step_than_full_speed():
    """docs/rewards.md "Earning comfort": 0.2 m per step at full speed, 0.16 m at 80%."""
    weights = RewardConfig(comfort_bonus=5.0, smooth_movement=0.0, discomfort_penalty=-3.0)
    full = one_step(weights, 10.0, 9.8, velocity=(2.0, 0.0, 0.0)).total[0]
    comfortable = one_step(weights, 10.0, 9.84, velocity=(1.6, 0.0, 0.0)).total[0]
    assert comfortable > full
    seed_weights = RewardConfig(smooth_movement=0.0)  # without the term full speed pays more per step
    assert (
        one_step(seed_weights, 10.0, 9.8, velocity=(2.0, 0.0, 0.0)).total[0]
        > one_step(seed_weights, 10.0, 9.84, velocity=(1.6, 0.0, 0.0)).total[0]
    )


def test_smooth_movement_pays_for_low_acceleration_per_metre():
    # From rest to 0.5 m/s: change 0.5 of max_speed 2 -> smoothness 0.75; 1 m of progress, weight 0.1.
    result = one_step(only(smooth_movement=0.1), 5.0, 4.0, velocity=(0.0, 0.0, -0.5))
    assert result.terms["smooth_movement"][0] == pytest.approx(0.075)
    # A jump of max_speed or more earns nothing.
    result = one_step(only(smooth_movement=0.1), 5.0, 4.0, velocity=(3.0, 0.0, 0.0))
    assert result.total[0] == 0.0


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"collisions": 2}, -20.0),
        ({"fell": True}, -50.0),
        ({"teleports": 3}, -3.0),
        ({"goal_reached": True}, 100.0),
        ({"truncated": True}, -20.0),
    ],
)
def test_event_terms(event, expected):
    result = one_step(RewardConfig(), 5.0, 5.0, **event)
    assert result.total[0] == pytest.approx(expected)
    assert sum(value[0] for value in result.terms.values()) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("action_r", "speed", "roll", "expected"),
    [
        (0.0, 0.0, 0.0, 1.0),
        (0.7, 1.6, 0.3, 1.0),  # every threshold is strict
        (-0.71, 0.0, 0.0, 0.7),
        (0.0, 1.61, 0.0, 0.8),
        (0.0, 0.0, -0.31, 0.8),
        (1.0, 2.0, 0.5, 0.3),
    ],
)
def test_comfort_score(action_r, speed, roll, expected):
    obs = observations(1.0, velocity=(speed * 0.6, -5.0, -speed * 0.8), roll=roll)  # falling is not speed
    score = comfort_score(obs, np.array([[0.0, 1.0, action_r]]), MAX_SPEED)
    assert score[0] == pytest.approx(expected)


def test_roll_ignores_yaw_and_pitch():
    yaw, pitch, roll = 1.2, -0.4, 0.25
    half = np.array([yaw, pitch, roll]) / 2
    q_yaw = np.array([0, math.sin(half[0]), 0, math.cos(half[0])])
    q_pitch = np.array([math.sin(half[1]), 0, 0, math.cos(half[1])])
    q_roll = np.array([0, 0, math.sin(half[2]), math.cos(half[2])])
    q = _multiply(_multiply(q_yaw, q_pitch), q_roll)  # Godot's YXZ order
    assert roll_angle(q[None])[0] == pytest.approx(roll)


def _multiply(p, q):
    px, py, pz, pw = p
    qx, qy, qz, qw = q
    return np.array(
        [
            pw * qx + px * qw + py * qz - pz * qy,
            pw * qy - px * qz + py * qw + pz * qx,
            pw * qz + px * qy - py * qx + pz * qw,
            pw * qw - px * qx - py * qy - pz * qz,
        ]
    )


def shaped_return(config, distances, velocities, actions):
    n = distances.shape[1]
    calculator = RewardCalculator(config, n, MAX_SPEED)
    calculator.reset(observations(distances[0]))
    total = np.zeros(n)
    for t in range(1, len(distances)):
        obs = observations(distances[t])
        obs[:, OBS["camera_velocity"]] = velocities[t]
        total += calculator.step(obs, actions[t], events(n), np.zeros(n, dtype=bool)).total
    return total


@pytest.mark.parametrize(
    "reward_config", [RewardConfig(), RewardConfig(comfort_bonus=5.0, smooth_movement=0.5)]
)
def test_random_walks_never_earn_more_than_the_bound(reward_config):
    rng = np.random.default_rng(0)
    steps, agents, start = 300, 64, 30.0
    distances = start + np.cumsum(rng.normal(0.0, 0.5, size=(steps, agents)), axis=0)
    distances[0] = start
    distances = np.abs(distances)
    velocities = rng.normal(0.0, 0.3, size=(steps, agents, 3))
    actions = rng.uniform(-1.0, 1.0, size=(steps, agents, 3))
    total = shaped_return(reward_config, distances, velocities, actions)
    weight = reward_config.progress + reward_config.comfort_bonus + reward_config.smooth_movement
    assert np.all(total <= weight * (start - distances.min(axis=0)) + 1e-9)
    if reward_config == RewardConfig():
        assert np.all(total < reward_config.goal_reached)  # (1 + 2 + 0.1) x 30 m = 93 < 100


def test_standing_still_circling_and_oscillating_earn_nothing_after_the_first_approach():
    steps = 200
    still = np.full(steps, 8.0)
    circle = 8.0 + 0.0 * np.arange(steps)  # constant distance around the goal
    oscillate = 8.0 - 0.5 * (np.arange(steps) % 2)  # 8, 7.5, 8, 7.5, ...
    distances = np.stack([still, circle, oscillate], axis=1)
    velocities = np.zeros((steps, 3, 3))
    actions = np.zeros((steps, 3, 3))
    total = shaped_return(RewardConfig(), distances, velocities, actions)
    np.testing.assert_allclose(total, [0.0, 0.0, 0.5 * 3.1])


def test_several_tasks_weights_need_each_agent_s_task():
    calculator = RewardCalculator([only(time_penalty=-1.0), only(time_penalty=-10.0)], 2, MAX_SPEED)
    calculator.reset(observations(np.array([5.0, 5.0])))
    step = (observations(np.array([5.0, 5.0])), np.zeros((2, 3)), events(2), np.zeros(2, dtype=bool))
    with pytest.raises(ValueError, match="2 tasks' reward weights: pass each agent's task"):
        calculator.step(*step)
    np.testing.assert_array_equal(calculator.step(*step, tasks=np.array([1, 0])).total, [-10.0, -1.0])
