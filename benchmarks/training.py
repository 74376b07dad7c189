"""PPO training speed over HTTP vs in-process, and the wall time and peak RSS of `train.py preset=quick_test`.

The PPO runs are built from the real config (`conf/`, quick_test preset) with the training job's own
model constructor (PPO, or OverlappedPPO with `training.rollout=overlapped`); only the VecEnv's
transports differ: `GodotClient`s to simulator subprocesses, or `InProcessTransport`s over worlds in
this process.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecNormalize

from benchmarks.inprocess import InProcessTransport
from benchmarks.memory import ROOT, run_sampled
from spacetime_rl.config import TrainConfig, compose_train_config, torch_threads
from spacetime_rl.envs import SpaceTimeVecEnv, make_clients
from spacetime_rl.godot.launcher import ServerPool
from spacetime_rl.training.callbacks import RolloutTorch
from spacetime_rl.training.job import _new_model
from spacetime_rl.training.overlapped import CoreSplit, OverlappedPPO, Placement, core_split

TRANSPORTS: Final = ("http", "in-process")
#: How rollouts are collected, by the name a table row gives it: its config overrides.
MODES: Final = {
    "serial": ["training.rollout=serial"],
    "overlapped": ["training.rollout=overlapped"],  # training.cpu_affinity=true, the default
    "overlapped_unpinned": ["training.rollout=overlapped", "training.cpu_affinity=false"],
}
#: What a repeat of the PPO comparison runs with N servers, in this order: (transport, mode).
#: One server overlaps as a single group. In-process there is nothing to overlap with: serial is
#: SB3's loop, the baseline; "overlapped" is OverlappedPPO's loop with every agent in one group,
#: which measures what the loop itself does differently (values and log-probabilities evaluated at
#: the rollout's end), so the HTTP rows over it show what the overlap gives net of its own costs.
RUNS: Final = {
    servers: (
        ("http", "overlapped"),
        ("http", "overlapped_unpinned"),
        ("http", "serial"),
        ("in-process", "serial"),
        ("in-process", "overlapped"),
    )
    for servers in (1, 2)
}


class RolloutTimer(BaseCallback):
    """Wall seconds spent collecting rollouts (policy and environment), the rest being PPO updates."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0
        self._start = 0.0

    def _on_rollout_start(self) -> None:
        self._start = time.perf_counter()

    def _on_rollout_end(self) -> None:
        self.seconds += time.perf_counter() - self._start

    def _on_step(self) -> bool:
        return True


def train_config(overrides: list[str]) -> TrainConfig:
    return compose_train_config(["preset=quick_test", *overrides])


@contextlib.contextmanager
def vec_env(
    config: TrainConfig, transport: str, split: CoreSplit | None = None
) -> Iterator[tuple[SpaceTimeVecEnv, ServerPool | None]]:
    """The VecEnv over `transport`, and over HTTP the pool of its servers (placed on `split.servers`)."""
    env = config.env
    seed = config.training.seed
    with contextlib.ExitStack() as stack:
        pool = None
        if transport == "http":
            pool = ServerPool(env, seed=seed, cores=split.servers if split else None)
            transports: list[Any] = make_clients(stack.enter_context(pool), env)
        else:
            transports = [
                InProcessTransport(env.agents_per_environment, seed=seed + i, action_repeat=env.action_repeat)
                for i in range(env.servers)
            ]
        venv = SpaceTimeVecEnv(transports, env, config.reward, seed=seed)
        stack.callback(venv.close)
        yield venv, pool


@dataclass(frozen=True)
class TrainingRate:
    steps_per_second: float  # whole learn(): rollouts and updates
    rollout_steps_per_second: float  # rollout collection alone
    placement: dict[str, Any] | None = None  # an overlapped run's `Placement.summary()`


def measure_training(
    config: TrainConfig, transport: str, rollouts: int, *, choose_placement: bool = False
) -> TrainingRate:
    """Steps per second of `model.learn` for `rollouts` rollouts, set-up excluded; the rollouts are
    collected as `config.training.rollout` says (resolved as training resolves it). Where
    `training.cpu_affinity` pins, every rollout runs pinned unless `choose_placement` (then the
    training job's `Placement` times both ways and picks, which takes `Placement.TRIALS` rollouts)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads(config))  # as the training job does
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_num_threads, threads)
        split = core_split(config) if transport == "http" else None  # as the training job places them
        venv, pool = stack.enter_context(vec_env(config, transport, split))
        env = VecNormalize(
            venv,
            norm_obs=config.env.normalize_observations,
            norm_reward=config.env.normalize_reward,
            clip_obs=config.env.clip_observations,
            gamma=config.ppo.gamma,
        )
        model = _new_model(env, config, verbose=0)
        if transport == "in-process" and isinstance(model, OverlappedPPO):
            model.groups = 1  # nothing steps beside the trainer: its loop alone, one call per step
        if split and pool and isinstance(model, OverlappedPPO):
            model.placement = Placement(split, pool.place, always=not choose_placement)
        # Set-up: the first reset opens each transport's step connection and session (~0.1 s over
        # HTTP, once per run); learn() resets again, warm, inside the timing.
        env.reset()
        steps = rollouts * config.ppo.n_steps * venv.num_envs
        timer = RolloutTimer()
        start = time.perf_counter()
        model.learn(steps, callback=[timer, RolloutTorch(config.training.rollout_torch_threads)])
        elapsed = time.perf_counter() - start
    placement = model.placement.summary() if isinstance(model, OverlappedPPO) and model.placement else None
    return TrainingRate(model.num_timesteps / elapsed, model.num_timesteps / timer.seconds, placement)


@dataclass(frozen=True)
class CommandRun:
    seconds: float
    peak_rss_mib: float  # trainer plus its simulators, sampled
    status: int


def quick_test_run(interval: float = 0.1, overrides: Sequence[str] = ()) -> CommandRun:
    """`python train.py preset=quick_test` from command to final checkpoint, in a fresh output dir."""
    with tempfile.TemporaryDirectory(prefix="bench-quick-test-") as out:
        command = [
            sys.executable,
            "train.py",
            "preset=quick_test",
            "training.progress_bar=false",
            *overrides,
            f"hydra.run.dir={out}",
        ]
        start = time.perf_counter()
        samples, _, status = run_sampled(command, interval, ROOT)
        seconds = time.perf_counter() - start
        if status == 0 and not (Path(out) / "final_model.zip").is_file():
            status = -1
    peak = max((s.trainer_mib + s.servers_mib for s in samples), default=0.0)
    return CommandRun(seconds, peak, status)
