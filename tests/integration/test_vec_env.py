"""SpaceTimeVecEnv against simulator subprocesses: SB3 semantics, episode infos, curriculum, servers."""

from __future__ import annotations

import dataclasses
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv

from spacetime_rl.config import EnvConfig, RewardConfig
from spacetime_rl.envs import ENV_ID, SpaceTimeEnv, SpaceTimeVecEnv, make_clients
from spacetime_rl.errors import GodotConnectionError, GodotTimeoutError
from spacetime_rl.godot.launcher import ServerPool, launch_servers
from spacetime_rl.protocol.wire import OBS

# Short episodes and near goals, so a few dozen steps see goals reached and time limits hit.
ENV = EnvConfig(
    agents_per_environment=1,
    max_episode_steps=12,
    min_goal_distance=0.8,
    max_goal_distance=2.0,
    action_smoothing=0.2,
)
SEED = 7


def seek_goal(obs: np.ndarray, agent_mask: np.ndarray) -> np.ndarray:
    """Strafe/walk towards the goal (heading frame) for agents in `agent_mask`, stand still otherwise."""
    direction = obs[:, OBS["goal_direction"]]
    actions = np.stack([direction[:, 0], -direction[:, 2], np.zeros(len(obs))], axis=1)
    return (actions * agent_mask[:, None]).astype(np.float32)


def test_vec_env_matches_dummy_vec_env_over_the_gym_env():
    steps, mask = 40, np.array([True, False])  # agent 0 reaches goals, agent 1 hits the time limit
    config = dataclasses.replace(ENV, num_environments=2)
    with launch_servers(config) as urls:
        ours = SpaceTimeVecEnv(make_clients(urls, config), config, RewardConfig(), seed=SEED)
        reference = DummyVecEnv([lambda: SpaceTimeEnv(config)] * 2)  # each starts its own server
        try:
            reference.seed(SEED)
            obs_ours, obs_ref = ours.reset(), reference.reset()
            np.testing.assert_allclose(obs_ours, obs_ref)
            outcomes = {"terminated": 0, "truncated": 0}
            for _ in range(steps):
                actions = seek_goal(obs_ours, mask)
                obs_ours, rew_ours, done_ours, info_ours = ours.step(actions)
                obs_ref, rew_ref, done_ref, info_ref = reference.step(actions)
                np.testing.assert_allclose(obs_ours, obs_ref, atol=1e-6)
                np.testing.assert_allclose(rew_ours, rew_ref, atol=1e-5)
                np.testing.assert_array_equal(done_ours, done_ref)
                for i in np.flatnonzero(done_ours):
                    np.testing.assert_allclose(
                        info_ours[i]["terminal_observation"], info_ref[i]["terminal_observation"], atol=1e-6
                    )
                    truncated = info_ours[i]["TimeLimit.truncated"]
                    assert truncated == info_ref[i]["TimeLimit.truncated"]
                    assert info_ours[i]["episode"] == pytest.approx(info_ref[i]["episode"])
                    outcomes["truncated" if truncated else "terminated"] += 1
            assert outcomes["terminated"] >= 1 and outcomes["truncated"] >= 1, outcomes
        finally:
            ours.close()
            reference.close()


@pytest.fixture(scope="module")
def vec_env():
    config = dataclasses.replace(ENV, agents_per_environment=4, num_environments=2)
    with launch_servers(config, seed=SEED) as urls:
        env = SpaceTimeVecEnv(make_clients(urls, config), config, RewardConfig(), seed=SEED)
        yield env
        env.close()


def test_episode_infos_add_up(vec_env):
    obs = vec_env.reset()
    assert obs.shape == (8, 48) and obs.dtype == np.float32
    returns = np.zeros(vec_env.num_envs)
    finished = []
    mask = np.arange(vec_env.num_envs) % 2 == 0
    for _ in range(30):
        obs, rewards, dones, infos = vec_env.step(seek_goal(obs, mask))
        assert rewards.dtype == np.float32 and len(infos) == vec_env.num_envs
        returns += rewards
        for i in np.flatnonzero(dones):
            info = infos[i]
            assert info["episode"]["r"] == pytest.approx(returns[i], rel=1e-5, abs=1e-4)
            assert sum(info["episode_stats"]["terms"].values()) == pytest.approx(info["episode"]["r"])
            assert info["is_success"] == (info["episode_stats"]["terms"]["goal_reached"] > 0)
            assert 0.3 <= info["episode_stats"]["comfort"] <= 1.0
            finished.append(info)
            returns[i] = 0.0
        assert all(not infos[i] for i in np.flatnonzero(~dones))
    assert any(info["is_success"] for info in finished)
    assert any(info["TimeLimit.truncated"] for info in finished)


def test_curriculum_distance_applies_from_the_next_episodes(vec_env):
    vec_env.set_max_goal_distance(1.0)
    assert vec_env.env_method("set_max_goal_distance", 1.0) == [None] * vec_env.num_envs
    assert vec_env.get_attr("max_goal_distance", indices=[0, 1]) == [1.0, 1.0]
    obs = vec_env.reset()
    assert np.all(obs[:, OBS["goal_distance"]] <= 1.0 + 1e-5)
    vec_env.set_max_goal_distance(3.0)
    # Episodes under way keep their goal; each one that ends restarts with the new range.
    before = obs[:, OBS["goal_distance"]].copy()
    first_goals = {}
    for _ in range(15):
        obs, _, dones, _ = vec_env.step(np.zeros((vec_env.num_envs, 3), dtype=np.float32))
        for i in np.flatnonzero(dones):
            first_goals.setdefault(i, obs[i, OBS["goal_distance"]][0])
    assert len(first_goals) == vec_env.num_envs  # every agent timed out once (12 steps)
    assert max(first_goals.values()) > 1.0 >= before.max() - 1e-5
    assert max(first_goals.values()) <= 3.0 + 1e-5


def test_seed_makes_resets_reproducible(vec_env):
    vec_env.seed(3)
    first = vec_env.reset()
    vec_env.seed(3)
    np.testing.assert_array_equal(vec_env.reset(), first)
    assert vec_env.env_is_wrapped(gym.Wrapper) == [False] * vec_env.num_envs
    vec_env.set_attr("probe", 1)  # every agent shares the VecEnv's attributes
    assert vec_env.get_attr("probe", indices=[2, 5]) == [1, 1]
    with pytest.raises(ValueError, match="share"):
        vec_env.set_attr("probe", 2, indices=[0])


def test_performance_reports_engine_fps(vec_env):
    reports = vec_env.performance()
    assert len(reports) == 2 and all("fps" in report["engine"] for report in reports)


def test_gym_env_passes_gymnasium_and_sb3_checks():
    env = gym.make(ENV_ID, config=ENV)
    try:
        with pytest.warns(UserWarning, match="infinity"):  # observations are unbounded by design
            gym_check_env(env.unwrapped)
        sb3_check_env(env.unwrapped, warn=True)
    finally:
        env.close()


def test_server_that_never_gets_ready_names_the_timeout(monkeypatch):
    pool = ServerPool(dataclasses.replace(ENV, connect_timeout=0.3))
    monkeypatch.setattr(pool, "_command", lambda index: [sys.executable, "-c", "import time; time.sleep(30)"])
    with pytest.raises(GodotTimeoutError, match=r"env\.connect_timeout=0\.3"):
        pool.start()


def test_server_that_exits_reports_its_stderr():
    pool = ServerPool(dataclasses.replace(ENV, scene="res://no/such/scene.tscn"))
    with pytest.raises(GodotConnectionError, match="stderr"):
        pool.start()
