"""`OverlappedPPO`: PPO whose rollouts step the servers in two groups, so they step while the policy thinks.

Serial PPO alternates: the policy computes every agent's action while every server idles, then
every server steps while the trainer idles. Here the servers are split into two groups (A, B;
`SpaceTimeVecEnv.server_groups`) and the rollout is a pipeline: A's answer to step t is read
and normalised, A's actions for step t+1 are computed and sent, then the same for B, so
A's servers step while the trainer handles B and the other way round (Sample Factory's
double-buffered sampling, EnvPool's async mode). Within a group the actions go out first: the
group's rewards and infos (`SpaceTimeVecEnv.score_group`), the callbacks and the buffer's
bookkeeping of step t are done while its servers step t+1, so one server (a single group) overlaps
too. A step does only what the next actions need: the critic's values and the actions'
log-probabilities, which nothing during the rollout reads, are computed at its end, in passes over
many steps (`_evaluate`; the parameters do not change during a rollout, so they are the numbers
serial PPO computes step by step, with a fraction of the per-call cost).

What PPO stores is SB3's `OnPolicyAlgorithm.collect_rollouts` to the letter: one `rollout_buffer.add`
per full step of all N agents with the observation each agent saw, the action sampled for it, its
value and log-probability under the rollout's parameters (a rollout's last step sends nothing
ahead, so no action is ever computed by parameters other than the ones it is stored with), the
episode starts, truncated episodes bootstrapped from their `terminal_observation`; callbacks'
`on_step` once per full step with every agent's infos and dones (their `locals` have no per-step
`values` or `log_probs`: those come at the rollout's end). Two things differ from serial:
the action noise is drawn per group (another order of the same draws), and `VecNormalize`'s
running statistics are updated a group at a time, so A's observations of step t are normalised
with statistics that include A's but not yet B's observations of that step (serial: both). After
every full step the statistics are the same (the running mean/variance merge is exact up to
rounding: tests/integration/test_overlapped.py); only that half-step lag differs, one step's
observations of half the agents, which moves the statistics noticeably only in a run's first steps.

With `training.cpu_affinity` (`core_split`, `Placement`) the rollout may run on one core and the
training servers on the others: unpinned, a server woken by its actions lands on the trainer's core
about as often as not and preempts the policy; pinned on a machine busy with other work, neither can
move away from it. Rollouts are timed both ways and run the faster way (docs/benchmarks.md).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any, Final, NamedTuple

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import DiagGaussianDistribution
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from spacetime_rl.config import TrainConfig
from spacetime_rl.envs import GroupAnswer, SpaceTimeVecEnv

__all__ = ["GROUPS", "CoreSplit", "OverlappedPPO", "Placement", "core_split", "rollout_groups"]

log = logging.getLogger(__name__)

#: Server groups a rollout alternates between: two keep one group stepping while the other is served.
GROUPS = 2
#: Rows (agent-steps) per pass when a rollout's values and log-probabilities are computed at its end.
EVALUATE_ROWS: Final = 65_536


class CoreSplit(NamedTuple):
    """Where an overlapped rollout runs: the trainer's collecting thread, and its training servers."""

    trainer: frozenset[int]
    servers: frozenset[int]


def rollout_groups(venv: SpaceTimeVecEnv, groups: int = GROUPS) -> list[list[int]]:
    """The env indices [start, stop) of each of the `groups` an overlapped rollout alternates between."""
    return [[agents.start, agents.stop] for agents in map(venv.agents_of, venv.server_groups(groups))]


def core_split(config: TrainConfig) -> CoreSplit | None:
    """The cores of `training.cpu_affinity` for this run: the first usable core for the rollout,
    the rest for the training servers; None when the run does not pin (serial rollouts, Ray or
    attached servers, training.cpu_affinity=false, or too few cores).

    A group's servers step together while the trainer serves the other group, so pinning pays only
    while each server of a group has a core of its own besides the trainer's: with more, the pinned
    servers queue on their cores where unpinned ones would use the trainer's core while it waits
    (8 slow servers on 2 cores: 0.93x of serial pinned, docs/benchmarks.md).
    """
    if not (config.training.cpu_affinity and config.rollout_mode == "overlapped"):
        return None
    if config.env.launcher != "local" or config.env.attached or not hasattr(os, "sched_setaffinity"):
        return None  # Ray's or someone else's servers; macOS and Windows have no affinity calls
    cores = sorted(os.sched_getaffinity(0))
    if -(-config.env.servers // GROUPS) > len(cores) - 1:  # a group's servers, ceil(servers / 2)
        return None
    return CoreSplit(frozenset(cores[:1]), frozenset(cores[1:]))


class Placement:
    """`training.cpu_affinity`: each rollout runs pinned (its thread on `split.trainer`, the training
    servers on `split.servers`) or unpinned, whichever is faster on this machine now, measured.

    Pinned keeps a server woken by its actions off the trainer's core, which pays on a quiet
    machine; on one busy with other work neither can move away from that work, which costs more
    than it gives (docs/benchmarks.md). Which holds can change during a run, so rollouts are timed
    both ways: a warm-up rollout (pinned, not timed), then unpinned and pinned in turn until each
    way has been timed twice, then the faster way (the median of its last `WINDOW` rollouts), with
    every `RETRY`th rollout run the other way to time it again. Only the timing depends on it: a
    rollout collects the same transitions wherever its processes run.

    `always=True` pins every rollout (benchmarks compare it with the choice).
    """

    WINDOW: Final = 3
    RETRY: Final = 8
    TRIALS: Final = 5  # the warm-up rollout and two each way

    def __init__(
        self,
        split: CoreSplit,
        place_servers: Callable[[frozenset[int] | None], None],
        *,
        always: bool = False,
    ) -> None:
        self.split = split
        self.always = always
        self._place_servers = place_servers  # ServerPool.place
        self._servers_pinned = True  # they start on split.servers
        self._seconds: dict[bool, collections.deque[float]] = {
            True: collections.deque(maxlen=self.WINDOW),
            False: collections.deque(maxlen=self.WINDOW),
        }
        self.rollouts = {True: 0, False: 0}
        self._preferred: bool | None = None

    def next(self) -> bool:
        """Whether the next rollout runs pinned."""
        count = sum(self.rollouts.values())
        if self.always:
            return True
        if count < self.TRIALS or not all(self._seconds.values()):
            return count % 2 == 0
        faster = statistics.median(self._seconds[True]) <= statistics.median(self._seconds[False])
        if faster != self._preferred:
            self._preferred = faster
            log.info("training.cpu_affinity: rollouts run %s from now on (%s)", _way(faster), self._timings())
        return faster != (count % self.RETRY == 0)

    @contextlib.contextmanager
    def rollout(self, pinned: bool) -> Iterator[None]:
        """Run the block's rollout `pinned` or not: the servers are moved if they are not there yet,
        and this thread's own cores are back after it (the PPO updates use every core)."""
        if pinned != self._servers_pinned:
            self._place_servers(self.split.servers if pinned else None)
            self._servers_pinned = pinned
        self.rollouts[pinned] += 1
        if not pinned:
            yield
            return
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.split.trainer)  # 0: this thread only
        try:
            yield
        finally:
            os.sched_setaffinity(0, saved)

    def record(self, pinned: bool, seconds: float) -> None:
        """A rollout's own time (callbacks' time left out) run `pinned` or not; the warm-up is not."""
        if sum(self.rollouts.values()) > 1:
            self._seconds[pinned].append(seconds)

    def summary(self) -> dict[str, Any]:
        """What metrics.json records: rollouts run each way and each way's recent median seconds."""
        return {
            _way(pinned): {
                "rollouts": self.rollouts[pinned],
                "median_seconds": round(statistics.median(times), 6) if times else None,
            }
            for pinned, times in self._seconds.items()
        } | {"always_pinned": self.always}

    def _timings(self) -> str:
        return (
            ", ".join(
                f"{_way(pinned)} {statistics.median(times):.3f} s" for pinned, times in self._seconds.items()
            )
            + f" per rollout, medians of the last {self.WINDOW}"
        )


def _way(pinned: bool) -> str:
    return "pinned" if pinned else "unpinned"


class OverlappedPPO(PPO):
    """PPO over a `SpaceTimeVecEnv` (optionally under `VecNormalize`), whose rollouts overlap the
    servers' stepping with the policy's inference and the step's bookkeeping (module docstring).

    `placement`: where each rollout runs (`Placement`, training.cpu_affinity); None: wherever the
    OS puts it.
    """

    placement: Placement | None = None
    groups: int = GROUPS  # the server groups a rollout alternates between (benchmarks run one in-process)
    _callback_seconds = 0.0  # the current rollout's time in callbacks (evaluations, checkpoints)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "placement"]  # this machine's cores, not the model's

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        if self.placement is None:
            return self._collect(env, callback, rollout_buffer, n_rollout_steps)
        pinned = self.placement.next()
        with self.placement.rollout(pinned):
            start = time.perf_counter()
            collected = self._collect(env, callback, rollout_buffer, n_rollout_steps)
            seconds = time.perf_counter() - start - self._callback_seconds
        if collected:
            self.placement.record(pinned, seconds)
        return collected

    def _collect(
        self,
        env: VecEnv,
        callback: BaseCallback,
        rollout_buffer: RolloutBuffer,
        n_rollout_steps: int,
    ) -> bool:
        assert self._last_obs is not None and self._last_episode_starts is not None
        norm, venv = _layers(env)
        groups = venv.server_groups(self.groups)  # rollout_groups(venv, self.groups) records them
        agents = [venv.agents_of(g) for g in groups]
        std = self._action_std()  # before on_rollout_start: a refusal leaves the callbacks unstarted
        self.policy.set_training_mode(False)
        self._callback_seconds = 0.0
        n_steps = 0
        rollout_buffer.reset()
        callback.on_rollout_start()

        last_obs: np.ndarray = self._last_obs  # type: ignore[assignment]
        # The Gaussians' means the actions are sampled from, kept to evaluate the actions at the end
        # (recomputing them over the whole rollout can round a last bit differently: measured).
        means = np.empty((n_rollout_steps, env.num_envs, *self.action_space.shape), dtype=np.float32)  # type: ignore[misc]
        unevaluated = torch.zeros(env.num_envs)  # values and log-probabilities come in `_evaluate`
        sent = [self._act(venv, g, last_obs[a], std) for g, a in zip(groups, agents, strict=True)]
        while n_steps < n_rollout_steps:
            ahead = n_steps + 1 < n_rollout_steps  # the rollout's last step sends nothing ahead
            new_obs = np.empty_like(last_obs)
            rewards = np.empty(env.num_envs, dtype=np.float32)
            dones = np.empty(env.num_envs, dtype=bool)
            infos: list[dict[str, Any]] = [{} for _ in range(env.num_envs)]
            upcoming = []
            for servers, rows in zip(groups, agents, strict=True):
                new_obs[rows], answer = _observe_group(norm, venv, servers)
                dones[rows] = answer.ended
                if ahead:  # the group's next actions go out before its rewards are scored
                    upcoming.append(self._act(venv, servers, new_obs[rows], std))
                rewards[rows], infos[rows] = _score_group(norm, venv, answer)
            actions = np.concatenate([a for a, _ in sent])
            means[n_steps] = np.concatenate([m for _, m in sent])

            self.num_timesteps += env.num_envs
            callback.update_locals(locals())
            called = time.perf_counter()
            proceed = callback.on_step()
            self._callback_seconds += time.perf_counter() - called
            if not proceed:
                for servers in groups if ahead else ():  # answered, so no request is left in flight
                    venv.receive_group(servers)
                return False
            self._update_info_buffer(infos, dones)
            n_steps += 1

            # Timeouts bootstrap from the value of the terminal observation (SB3 issue #633).
            for idx, done in enumerate(dones):
                if (
                    done
                    and infos[idx].get("terminal_observation") is not None
                    and infos[idx].get("TimeLimit.truncated", False)
                ):
                    terminal_obs = self.policy.obs_to_tensor(infos[idx]["terminal_observation"])[0]
                    with torch.no_grad():
                        terminal_value = self.policy.predict_values(terminal_obs)[0]  # type: ignore[arg-type]
                    rewards[idx] += self.gamma * terminal_value

            rollout_buffer.add(
                last_obs, actions, rewards, self._last_episode_starts, unevaluated, unevaluated
            )
            self._last_obs = last_obs = new_obs
            self._last_episode_starts = dones
            sent = upcoming

        values = self._evaluate(rollout_buffer, means, new_obs)  # the last observations' (SB3's name)
        rollout_buffer.compute_returns_and_advantage(last_values=values, dones=dones)
        callback.update_locals(locals())
        callback.on_rollout_end()
        return True

    def _act(
        self, venv: SpaceTimeVecEnv, servers: range, obs: np.ndarray, std: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sample the actions of `servers`' agents for `obs` and send them; returns the actions and
        the means of the Gaussians they were drawn from (`_evaluate` needs them).

        `policy.get_distribution(obs).get_actions()` without building a distribution per call: the
        actor's mean, plus `std` (exp(log_std), fixed during a rollout) times a standard normal draw,
        as `torch.distributions.Normal.rsample` samples: the same numbers (a test compares them)."""
        policy = self.policy
        with torch.no_grad():
            observations = preprocess_obs(
                obs_as_tensor(obs, self.device),  # type: ignore[arg-type]
                policy.observation_space,
                normalize_images=policy.normalize_images,
            )
            mean = policy.action_net(
                policy.mlp_extractor.forward_actor(policy.pi_features_extractor(observations))
            )
            sampled = (mean + self._noise(mean) * std).cpu().numpy()
        # As SB3: the Gaussian's sample is clipped for the env and stored unclipped.
        venv.send_group(servers, np.clip(sampled, self.action_space.low, self.action_space.high))  # type: ignore[attr-defined]
        return sampled, mean.cpu().numpy()

    @staticmethod
    def _noise(mean: torch.Tensor) -> torch.Tensor:
        """A standard normal draw per action dimension, as `Normal.rsample` draws it."""
        return torch.empty(mean.shape, dtype=mean.dtype, device=mean.device).normal_()

    def _action_std(self) -> torch.Tensor:
        """The Gaussians' standard deviations (one per action dimension) for this rollout."""
        if type(self.policy.action_dist) is not DiagGaussianDistribution:  # not squashed, not gSDE
            raise TypeError(
                f"OverlappedPPO samples Gaussian actions, not {type(self.policy.action_dist).__name__}'s: "
                "use training.rollout=serial"
            )
        with torch.no_grad():
            return self.policy.log_std.exp()  # type: ignore[operator]

    def _evaluate(self, buffer: RolloutBuffer, means: np.ndarray, last_obs: np.ndarray) -> torch.Tensor:
        """Fill in `buffer`'s values and log-probabilities, a pass over up to `EVALUATE_ROWS` of its
        rows at a time, and return the critic's values of `last_obs`, the observations after its
        last step.

        Serial PPO computes them step by step (`policy(obs)`); the parameters do not change during a
        rollout, so these are the same numbers at a fraction of the per-call cost, and none of it
        delays the next step's actions. Each row goes through the same operations; a matrix product
        over more rows may round differently on some CPUs (on this project's test machines it does
        not: tests/integration/test_overlapped.py compares with serial PPO bit for bit)."""
        policy = self.policy
        n_steps, n_envs = means.shape[:2]
        chunk = max(1, EVALUATE_ROWS // n_envs)  # steps per pass: bounded memory for large rollouts
        with torch.no_grad():
            for start in range(0, n_steps, chunk):
                steps = slice(start, start + chunk)
                rows = buffer.observations[steps].reshape(-1, *buffer.obs_shape)
                values = policy.predict_values(torch.as_tensor(rows, device=self.device))
                buffer.values[steps] = values.cpu().numpy().reshape(-1, n_envs)
                gaussians = policy.action_dist.proba_distribution(  # type: ignore[attr-defined]
                    torch.as_tensor(means[steps].reshape(-1, buffer.action_dim), device=self.device),
                    policy.log_std,
                )
                actions = torch.as_tensor(
                    buffer.actions[steps].reshape(-1, buffer.action_dim), device=self.device
                )
                buffer.log_probs[steps] = gaussians.log_prob(actions).cpu().numpy().reshape(-1, n_envs)
            return policy.predict_values(obs_as_tensor(last_obs, self.device))  # type: ignore[arg-type]


def _layers(env: VecEnv) -> tuple[VecNormalize | None, SpaceTimeVecEnv]:
    """The normalisation over the `SpaceTimeVecEnv` (None without one) and the VecEnv itself."""
    norm = env if isinstance(env, VecNormalize) else None
    venv = norm.venv if norm is not None else env
    if not isinstance(venv, SpaceTimeVecEnv):
        raise TypeError(
            f"OverlappedPPO steps a SpaceTimeVecEnv, optionally under VecNormalize, not {type(venv).__name__}"
        )
    return norm, venv


def _observe_group(
    norm: VecNormalize | None, venv: SpaceTimeVecEnv, servers: range
) -> tuple[np.ndarray, GroupAnswer]:
    """`servers`' answer to their last step as far as the next actions need it (`observe_group`):
    observations through `norm` as `VecNormalize.step_wait` passes a full step's, the statistics
    updated with these agents' observations, then applied. `_score_group` the answer before the next
    group's `_observe_group`: its terminal observations are normalised with these statistics."""
    obs, answer = venv.observe_group(servers)
    if norm is None:
        return obs, answer
    norm.old_obs[answer.agents] = obs  # type: ignore[index]
    if norm.training and norm.norm_obs:
        assert isinstance(norm.obs_rms, RunningMeanStd)
        norm.obs_rms.update(obs)
    return norm.normalize_obs(obs), answer  # type: ignore[return-value]


def _score_group(
    norm: VecNormalize | None, venv: SpaceTimeVecEnv, answer: GroupAnswer
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The rewards and infos of an `_observe_group` answer (`score_group`), through `norm` as
    `VecNormalize.step_wait` passes them: the return statistics updated, then applied."""
    rewards, infos = venv.score_group(answer)
    if norm is None:
        return rewards, infos
    rows, dones = answer.agents, answer.ended
    if len(norm.old_reward) != venv.num_envs:  # VecNormalize makes it at its first step
        norm.old_reward = np.zeros(venv.num_envs, dtype=np.float32)
    norm.old_reward[rows] = rewards
    if norm.training:
        norm.returns[rows] = norm.returns[rows] * norm.gamma + rewards
        norm.ret_rms.update(norm.returns[rows])
    scaled = norm.normalize_reward(rewards)
    for index in np.flatnonzero(dones).tolist():
        if "terminal_observation" in infos[index]:
            infos[index]["terminal_observation"] = norm.normalize_obs(infos[index]["terminal_observation"])
    norm.returns[rows][dones] = 0
    return scaled, infos
