"""Overlapped rollouts (training.rollout=overlapped) over simulator subprocesses and real SB3 PPO:
the rollout buffer holds what serial PPO would store, and faults are recovered the same way."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from fault_injection import server_process
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from spacetime_rl.config import EnvConfig, RewardConfig
from spacetime_rl.envs import SpaceTimeVecEnv, connector
from spacetime_rl.godot.launcher import ServerPool
from spacetime_rl.training import overlapped
from spacetime_rl.training.overlapped import OverlappedPPO

# Short episodes and near goals: a 40-step rollout sees goals reached and time limits hit.
ENV = EnvConfig(
    num_environments=3,  # groups of 2 and 1 servers: unequal halves
    agents_per_environment=2,
    max_episode_steps=7,
    min_goal_distance=0.5,
    max_goal_distance=1.0,
    action_smoothing=0.3,
)
SEED = 3
N_STEPS = 40


class InfoLog(BaseCallback):
    """Every step's dones and infos as the callbacks see them."""

    def __init__(self) -> None:
        super().__init__()
        self.steps: list[tuple[np.ndarray, list[dict[str, Any]]]] = []

    def _on_step(self) -> bool:
        self.steps.append((self.locals["dones"].copy(), self.locals["infos"]))
        return True


@contextlib.contextmanager
def launched(
    config: EnvConfig, cores: frozenset[int] | None = None
) -> Iterator[tuple[ServerPool, VecNormalize]]:
    pool = ServerPool(config, seed=SEED, role="train", cores=cores)
    urls = pool.start()
    connect = connector(pool)
    venv = SpaceTimeVecEnv(
        [connect(url) for url in urls], config, RewardConfig(), seed=SEED, recover=pool.recovery(connect)
    )
    try:
        yield pool, venv
    finally:
        venv.close()
        pool.stop()


def collect(
    algorithm: type[PPO],
    config: EnvConfig = ENV,
    *,
    normalize: bool = False,
    deterministic: bool = False,
    callback: BaseCallback | None = None,
) -> tuple[PPO, VecNormalize, InfoLog]:
    """One rollout of N_STEPS steps by a fresh, seeded model of `algorithm` on fresh servers."""
    with launched(config) as (_, venv):
        env = VecNormalize(venv, norm_obs=normalize, norm_reward=normalize, gamma=0.9)
        model = algorithm("MlpPolicy", env, n_steps=N_STEPS, batch_size=40, gamma=0.9, seed=0, device="cpu")
        if deterministic:  # the same actions whatever the order of the noise draws
            _deterministic(model)
        log = InfoLog()
        _, callbacks = model._setup_learn(N_STEPS * env.num_envs, [log, *([callback] if callback else [])])
        assert model.collect_rollouts(env, callbacks, model.rollout_buffer, N_STEPS)
        return model, env, log


def _deterministic(model: PPO) -> None:
    """The policy's actions are its Gaussian's mean, whether sampled by `policy(obs)` (serial PPO)
    or by the actor's mean plus noise (`OverlappedPPO._act`)."""
    model.policy.action_dist.sample = model.policy.action_dist.mode  # type: ignore[method-assign]
    model._noise = torch.zeros_like  # type: ignore[attr-defined]


BUFFER = (
    "observations",
    "actions",
    "rewards",
    "episode_starts",
    "values",
    "log_probs",
    "returns",
    "advantages",
)


#: One server: a single group, whose next step is sent before the last one's bookkeeping.
ONE_SERVER = dataclasses.replace(ENV, num_environments=1, agents_per_environment=4)


@pytest.mark.parametrize("config", [ENV, ONE_SERVER], ids=["three_servers", "one_server"])
def test_an_overlapped_rollout_stores_what_a_serial_one_does(config: EnvConfig):
    """Deterministic servers and policy, no normalisation: the same buffer, infos and episode ends."""
    serial, _, serial_log = collect(PPO, config, deterministic=True)
    ours, _, our_log = collect(OverlappedPPO, config, deterministic=True)
    for a, b in zip(serial.policy.state_dict().values(), ours.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)  # the same starting parameters
    for name in BUFFER:
        expected, got = getattr(serial.rollout_buffer, name), getattr(ours.rollout_buffer, name)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5, err_msg=name)
    np.testing.assert_array_equal(ours.rollout_buffer.episode_starts, serial.rollout_buffer.episode_starts)
    assert len(our_log.steps) == len(serial_log.steps) == N_STEPS
    kinds = {"truncated": 0, "terminated": 0}
    for (dones, infos), (want_dones, want_infos) in zip(our_log.steps, serial_log.steps, strict=True):
        np.testing.assert_array_equal(dones, want_dones)
        for agent in np.flatnonzero(dones):
            info, want = infos[agent], want_infos[agent]
            assert info["TimeLimit.truncated"] == want["TimeLimit.truncated"]
            assert info["episode"] == pytest.approx(want["episode"])
            np.testing.assert_allclose(info["terminal_observation"], want["terminal_observation"], atol=1e-6)
            kinds["truncated" if info["TimeLimit.truncated"] else "terminated"] += 1
    # Both kinds of episode end were exercised, so truncated episodes were bootstrapped from their
    # terminal observations (rewards and returns above) and finished ones were not.
    assert kinds["truncated"] and kinds["terminated"]
    np.testing.assert_array_equal(ours._last_episode_starts, serial._last_episode_starts)
    np.testing.assert_allclose(ours._last_obs, serial._last_obs, atol=1e-6)


def test_truncated_episodes_are_bootstrapped_from_their_terminal_observation():
    raw_rewards = []

    class Rewards(BaseCallback):
        def _on_step(self) -> bool:
            raw_rewards.append(self.locals["rewards"].copy())
            return True

    model, _, log = collect(OverlappedPPO, deterministic=True, callback=Rewards())
    buffer = model.rollout_buffer
    bootstrapped = 0
    for step, ((dones, infos), rewards) in enumerate(zip(log.steps, raw_rewards, strict=True)):
        for agent in range(len(dones)):
            expected = rewards[agent]
            if dones[agent] and infos[agent]["TimeLimit.truncated"]:
                terminal = model.policy.obs_to_tensor(infos[agent]["terminal_observation"])[0]
                with torch.no_grad():
                    expected += model.gamma * model.policy.predict_values(terminal).item()
                bootstrapped += 1
            assert buffer.rewards[step, agent] == pytest.approx(expected, rel=1e-5, abs=1e-5)
    assert bootstrapped


def test_each_stored_transition_is_the_policy_s_at_the_observation_seen():
    """Sampled actions and normalisation on: no serial twin to compare with (the noise is drawn in
    another order), so the invariant itself: every stored value and log-probability is the rollout
    policy's for the stored observation and action, and each stored observation is the normalised
    observation the VecEnv returned to the agent at the step before."""
    returned: list[tuple[slice, np.ndarray]] = []
    observe = overlapped._observe_group

    def spy(norm, venv, servers):
        obs, answer = observe(norm, venv, servers)
        returned.append((venv.agents_of(servers), obs.copy()))
        return obs, answer

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(overlapped, "_observe_group", spy)
        model, env, _ = collect(OverlappedPPO, normalize=True)
    buffer = model.rollout_buffer
    obs = torch.as_tensor(buffer.observations.reshape(N_STEPS * env.num_envs, -1))
    actions = torch.as_tensor(buffer.actions.reshape(N_STEPS * env.num_envs, -1))
    with torch.no_grad():
        values, log_probs, _ = model.policy.evaluate_actions(obs, actions)
    np.testing.assert_allclose(values.numpy().ravel(), buffer.values.ravel(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(log_probs.numpy(), buffer.log_probs.ravel(), rtol=1e-5, atol=1e-4)
    groups = 2
    assert len(returned) == N_STEPS * groups
    for index, (rows, seen) in enumerate(returned[:-groups]):  # the last step's go to _last_obs
        np.testing.assert_array_equal(buffer.observations[index // groups + 1, rows], seen)
    for rows, seen in returned[-groups:]:
        np.testing.assert_array_equal(model._last_obs[rows], seen)
    assert np.abs(buffer.observations).max() <= env.clip_obs
    # Every observation of the rollout went into the statistics once, as VecNormalize counts them.
    assert env.obs_rms.count == pytest.approx(1e-4 + (N_STEPS + 1) * env.num_envs)


def test_normalisation_statistics_end_as_serial_ones():
    """Actions that ignore the observation, so both modes see the same trajectory: the running
    statistics after the rollout are serial's, up to float32 rounding (a batch's mean is taken in
    the observations' float32)."""

    def constant(model: PPO) -> None:
        extractor = model.policy.features_extractor  # the actor's and the critic's (shared)
        forward = extractor.forward
        extractor.forward = lambda obs: forward(torch.zeros_like(obs))
        _deterministic(model)

    stats = []
    for algorithm in (PPO, OverlappedPPO):
        with pytest.MonkeyPatch.context() as patch:
            original = algorithm._setup_model

            def setup(self, original=original):
                original(self)
                constant(self)

            patch.setattr(algorithm, "_setup_model", setup)
            _, env, _ = collect(algorithm, normalize=True)
        stats.append(env)
    serial, ours = stats
    np.testing.assert_allclose(ours.obs_rms.mean, serial.obs_rms.mean, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.obs_rms.var, serial.obs_rms.var, rtol=1e-6, atol=1e-8)
    assert ours.obs_rms.count == serial.obs_rms.count
    np.testing.assert_allclose(ours.ret_rms.mean, serial.ret_rms.mean, rtol=1e-6)
    np.testing.assert_allclose(ours.ret_rms.var, serial.ret_rms.var, rtol=1e-6)
    np.testing.assert_allclose(ours.returns, serial.returns, rtol=1e-6)


class KillServer(BaseCallback):
    """Kills train server `server` at step `step` of the rollout, while its next step is in flight."""

    def __init__(self, pool: ServerPool, server: int, step: int) -> None:
        super().__init__()
        self.pool, self.server, self.step = pool, server, step
        self.calls = 0

    def _on_step(self) -> bool:
        self.calls += 1
        if self.calls == self.step:
            server_process(self.pool.urls[self.server]).kill()
        return True


@pytest.mark.parametrize(
    ("config", "server", "agents"),
    [(ENV, 2, [4, 5]), (ONE_SERVER, 0, [0, 1, 2, 3])],
    ids=["three_servers", "one_server"],
)
def test_a_server_killed_mid_rollout_is_restarted_and_only_its_episodes_are_truncated(
    config: EnvConfig, server: int, agents: list[int]
):
    config = dataclasses.replace(config, max_episode_steps=1000)  # every truncation is the fault's
    with launched(config) as (pool, venv):
        env = VecNormalize(venv, gamma=0.9)
        model = OverlappedPPO("MlpPolicy", env, n_steps=N_STEPS, batch_size=40, seed=0, device="cpu")
        log, kill = InfoLog(), KillServer(pool, server=server, step=10)
        _, callbacks = model._setup_learn(N_STEPS * env.num_envs, [log, kill])
        assert model.collect_rollouts(env, callbacks, model.rollout_buffer, N_STEPS)
        assert venv.faults == 1 and pool.restarts == 1 and venv.lost_agent_steps == len(agents)
        faulted = [
            (step, agent)
            for step, (_, infos) in enumerate(log.steps)
            for agent, info in enumerate(infos)
            if info.get("server_fault")
        ]
        # Killed after step 9's callbacks with its step 10 sent ahead: the answer to that one, or
        # if it was out before the kill, to step 11, is lost, and only that server's episodes end.
        step = faulted[0][0]
        assert faulted == [(step, agent) for agent in agents] and step in (10, 11)
        dones, infos = log.steps[step]
        assert infos[agents[0]]["TimeLimit.truncated"]
        assert not np.delete(dones, agents).any()
        np.testing.assert_array_equal(model.rollout_buffer.episode_starts[step + 1, agents], 1.0)
        assert np.isfinite(model.rollout_buffer.observations).all()


class StopAt(BaseCallback):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def _on_step(self) -> bool:
        return self.n_calls < self.step


def test_a_rollout_stopped_by_a_callback_leaves_no_step_in_flight():
    """As Ctrl-C does (`_StopOnSignal`): the steps sent ahead are answered before it returns, so the
    VecEnv steps on normally."""
    with launched(ENV) as (_, venv):
        env = VecNormalize(venv, gamma=0.9)
        model = OverlappedPPO("MlpPolicy", env, n_steps=N_STEPS, batch_size=40, seed=0, device="cpu")
        _, callbacks = model._setup_learn(N_STEPS * env.num_envs, [StopAt(5)])
        assert not model.collect_rollouts(env, callbacks, model.rollout_buffer, N_STEPS)
        assert model.num_timesteps == 5 * env.num_envs
        obs, *_ = env.step(np.zeros((env.num_envs, 3), dtype=np.float32))
        assert np.isfinite(obs).all() and venv.faults == 0


def test_groups_split_the_servers_in_two_contiguous_halves():
    with launched(ENV) as (_, venv):
        assert venv.server_groups(2) == [range(0, 2), range(2, 3)]
        assert [venv.agents_of(g) for g in venv.server_groups(2)] == [slice(0, 4), slice(4, 6)]
        assert venv.server_groups(5) == [range(0, 1), range(1, 2), range(2, 3)]


def _threads_cores(pid: int) -> set[frozenset[int]]:
    """The distinct CPU sets the threads of process `pid` may run on."""
    return {frozenset(os.sched_getaffinity(int(t))) for t in os.listdir(f"/proc/{pid}/task")}


CORES = sorted(os.sched_getaffinity(0))
#: the last usable core for the servers, the first for the rollout (one core: both on it)
SERVER_CORES, TRAINER_CORES = frozenset(CORES[-1:]), frozenset(CORES[:1])


def test_pinned_servers_run_every_thread_on_their_cores_and_so_do_restarted_ones():
    config = dataclasses.replace(ENV, num_environments=2)
    pool = ServerPool(config, seed=SEED, role="train", cores=SERVER_CORES)
    pool.start()
    try:
        for pid in pool.pids:
            assert _threads_cores(pid) == {SERVER_CORES}
        asyncio.run(pool.restart(1))
        assert _threads_cores(pool.pids[1]) == {SERVER_CORES}
        assert pool.record()["cores"] == sorted(SERVER_CORES)
        pool.place(None)  # an unpinned rollout: anywhere, restarted servers too
        asyncio.run(pool.restart(0))
        for pid in pool.pids:
            assert _threads_cores(pid) == {frozenset(CORES)}
        pool.place(SERVER_CORES)
        for pid in pool.pids:
            assert _threads_cores(pid) == {SERVER_CORES}
        assert pool.record()["cores"] == sorted(SERVER_CORES)  # the cores they run on when pinned
    finally:
        pool.stop()
    unpinned = ServerPool(config, seed=SEED, role="train")
    os.sched_setaffinity(0, TRAINER_CORES)  # started from a pinned rollout's thread (a restart)
    try:
        unpinned.start()
    finally:
        os.sched_setaffinity(0, CORES)
    try:
        assert _threads_cores(unpinned.pids[0]) == {frozenset(CORES)}  # every core, not the spawner's
        assert unpinned.record()["cores"] is None
    finally:
        unpinned.stop()


class Affinity(BaseCallback):
    """Per rollout, the CPU sets of the collecting thread and of the first server's threads at its steps."""

    def __init__(self, pool: ServerPool) -> None:
        super().__init__()
        self.pool = pool
        self.rollouts: list[set[tuple[frozenset[int], frozenset[frozenset[int]]]]] = []

    def _on_rollout_start(self) -> None:
        self.rollouts.append(set())

    def _on_step(self) -> bool:
        server = frozenset(_threads_cores(self.pool.pids[0]))
        self.rollouts[-1].add((frozenset(os.sched_getaffinity(0)), server))
        return True


PINNED = (TRAINER_CORES, frozenset({SERVER_CORES}))
UNPINNED = (frozenset(CORES), frozenset({frozenset(CORES)}))


@pytest.mark.parametrize("always", [True, False, None])
def test_each_rollout_runs_where_its_placement_says_and_gives_the_cores_back_after(always: bool | None):
    """Pinned rollouts collect on the trainer's core with the servers on theirs; unpinned ones (the
    placement's timing of the other way, or no placement) anywhere; the thread gets its whole CPU
    set back when a rollout ends (so PPO updates use every torch thread). The placement is not
    saved with the model (its cores are this machine's)."""
    before = os.sched_getaffinity(0)
    split = overlapped.CoreSplit(TRAINER_CORES, SERVER_CORES)
    config = dataclasses.replace(ENV, num_environments=2)
    with launched(config, cores=SERVER_CORES if always is not None else None) as (pool, venv):
        env = VecNormalize(venv, gamma=0.9)
        model = OverlappedPPO("MlpPolicy", env, n_steps=8, batch_size=32, n_epochs=1, seed=0, device="cpu")
        if always is not None:
            model.placement = overlapped.Placement(split, pool.place, always=always)
        affinity = Affinity(pool)
        model.learn(overlapped.Placement.TRIALS * 8 * env.num_envs, callback=affinity)
        expected = {  # the choosing placement's trials: a warm-up, then unpinned and pinned in turn
            True: [PINNED] * 5,
            False: [PINNED, UNPINNED, PINNED, UNPINNED, PINNED],
            None: [UNPINNED] * 5,
        }[always]
        assert affinity.rollouts == [{where} for where in expected]
        assert os.sched_getaffinity(0) == before
        assert "placement" in model._excluded_save_params()


def test_where_the_rollouts_run_changes_nothing_they_collect():
    """A run whose placement moves the rollouts between pinned and unpinned learns what one left
    where the OS puts it learns: the same last rollout and the same parameters after its updates."""

    def train(placed: bool) -> tuple[OverlappedPPO, np.ndarray]:
        config = dataclasses.replace(ENV, num_environments=2)
        with launched(config, cores=SERVER_CORES if placed else None) as (pool, venv):
            env = VecNormalize(venv, gamma=0.9)
            model = OverlappedPPO(
                "MlpPolicy", env, n_steps=8, batch_size=32, n_epochs=2, seed=0, device="cpu"
            )
            if placed:
                split = overlapped.CoreSplit(TRAINER_CORES, SERVER_CORES)
                model.placement = overlapped.Placement(split, pool.place)
            model.learn(4 * 8 * env.num_envs)
            assert not placed or model.placement.rollouts == {True: 2, False: 2}
            return model, model.rollout_buffer.observations.copy()

    (placed, placed_obs), (anywhere, anywhere_obs) = train(True), train(False)
    np.testing.assert_array_equal(placed_obs, anywhere_obs)
    np.testing.assert_array_equal(placed.rollout_buffer.actions, anywhere.rollout_buffer.actions)
    for a, b in zip(placed.policy.parameters(), anywhere.policy.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "evaluate_rows", [overlapped.EVALUATE_ROWS, 12], ids=["one_pass", "passes_of_3_steps"]
)
def test_with_one_server_overlapped_training_is_serial_training(
    evaluate_rows: int, monkeypatch: pytest.MonkeyPatch
):
    """One server (the default, which training.rollout=auto overlaps): the same noise draws and
    normalisation in the same order as serial, so two rollouts and their updates give the same
    parameters, statistics and last rollout as serial PPO's, bit for bit; whether the values and
    log-probabilities are computed in one pass at the rollout's end or in several (12 rows: 3 steps
    of 4 agents, the last pass of 16 steps a short one)."""
    monkeypatch.setattr(overlapped, "EVALUATE_ROWS", evaluate_rows)

    def train(algorithm: type[PPO]) -> tuple[PPO, VecNormalize]:
        with launched(ONE_SERVER) as (_, venv):
            env = VecNormalize(venv, gamma=0.9)
            model = algorithm("MlpPolicy", env, n_steps=16, batch_size=32, n_epochs=2, seed=0, device="cpu")
            model.learn(2 * 16 * env.num_envs)
            return model, env

    (serial, serial_env), (ours, our_env) = train(PPO), train(OverlappedPPO)
    for name in BUFFER:
        expected, got = getattr(serial.rollout_buffer, name), getattr(ours.rollout_buffer, name)
        np.testing.assert_array_equal(got, expected, err_msg=name)
    np.testing.assert_array_equal(our_env.obs_rms.mean, serial_env.obs_rms.mean)
    for a, b in zip(serial.policy.parameters(), ours.policy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_policy_without_gaussian_actions_is_refused_with_the_way_out():
    with launched(ONE_SERVER) as (_, venv):
        model = OverlappedPPO("MlpPolicy", venv, n_steps=4, batch_size=4, use_sde=True, device="cpu")
        with pytest.raises(TypeError, match=r"StateDependentNoiseDistribution.*training\.rollout=serial"):
            model.learn(4 * venv.num_envs)
