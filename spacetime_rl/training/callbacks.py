"""Training callbacks: episode metrics, checkpoints, evaluation with best-model keeping, curriculum.

Frequencies are in agent-steps (SB3's num_timesteps), whatever the number of agents.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HParam, Logger
from stable_baselines3.common.vec_env import VecEnv, VecNormalize, sync_envs_normalization
from torch.distributions import Distribution

from spacetime_rl.artifacts import checkpoint_path, save_snapshot
from spacetime_rl.curriculum import Curriculum, TaskCurricula
from spacetime_rl.metrics import EVAL_METRICS, EvalHook, model_policy, play_episodes, summarize
from spacetime_rl.rewards import REWARD_TERMS


def evaluate(model: BaseAlgorithm, env: VecEnv, episodes: int, seed: int) -> dict[str, float]:
    """The `EVAL_METRICS` of the deterministic policy over `episodes` episodes (`play_episodes`),
    and with several tasks the same per task (`eval/<task>/success_rate`, ...)."""
    metrics = summarize(play_episodes(env, model_policy(model), episodes, seed))
    names = {key.removeprefix("eval/") for key in EVAL_METRICS}
    return {
        key: value for key, value in metrics.items() if key in EVAL_METRICS or key.split("/")[-1] in names
    }


@dataclass
class EvalRecord:
    """Evaluations so far: the latest and the best (later curriculum stage first, then success, then return)."""

    last: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def rank(metrics: dict[str, float]) -> tuple[float, float, float]:
        return (metrics["curriculum/stage"], metrics["eval/success_rate"], metrics["eval/mean_reward"])

    def improves(self, metrics: dict[str, float]) -> bool:
        return not self.best or self.rank(metrics) > self.rank(self.best)


class Evaluator:
    """Evaluates on the eval env with the training env's normalisation and keeps the best model."""

    def __init__(
        self,
        eval_env: VecNormalize,
        *,
        episodes: int,
        seed: int,
        best_dir: Path,
        curriculum: Curriculum,
        record: EvalRecord,
        after: Callable[[BaseAlgorithm], None] | None = None,
    ) -> None:
        self.eval_env = eval_env
        self.episodes = episodes
        self.seed = seed
        self.best_dir = best_dir
        self.curriculum = curriculum
        self.record = record
        self.after = after  # e.g. restart training episodes when eval shares the training server

    def __call__(self, model: BaseAlgorithm, logger: Logger) -> dict[str, float]:
        train_env = model.get_env()
        assert train_env is not None
        sync_envs_normalization(train_env, self.eval_env)
        metrics = evaluate(model, self.eval_env, self.episodes, self.seed)
        for key, value in metrics.items():
            logger.record(key, value)
        metrics |= {
            "curriculum/stage": float(self.curriculum.stage),
            "time/total_timesteps": model.num_timesteps,
        }
        self.record.last = metrics
        if self.record.improves(metrics):
            self.record.best = metrics
            assert isinstance(train_env, VecNormalize)
            save_snapshot(model, train_env, self.best_dir / "best_model.zip", {"metrics": metrics})
        if self.after is not None:
            self.after(model)
        return metrics


class RolloutTorch(BaseCallback):
    """How torch runs while rollouts are collected: on `threads` threads, and without checking the
    action distribution's parameters each step; both restored for the PPO updates.

    A rollout alternates between the policy and the environment: more threads barely speed up a
    forward pass on a few dozen observations, but torch's idle workers spin on the cores the
    simulator or Godot needs. The check (`torch.distributions` argument validation: loc finite,
    scale positive) costs ~80 us of each forward pass, a sixth of it on 16 observations; the updates
    keep it, so a policy that diverges is still named there, with torch's own message, before it
    acts. Put this first in a CallbackList so evaluations at the start of a rollout run so too.
    """

    def __init__(self, threads: int) -> None:
        super().__init__()
        self.threads = threads
        self._saved = (0, True)

    def _on_rollout_start(self) -> None:
        self._saved = (torch.get_num_threads(), bool(Distribution._validate_args))
        if self.threads:
            torch.set_num_threads(self.threads)
        Distribution.set_default_validate_args(False)

    def _on_rollout_end(self) -> None:
        threads, validate = self._saved
        torch.set_num_threads(threads)
        Distribution.set_default_validate_args(validate)

    def _on_step(self) -> bool:
        return True


class HParamsCallback(BaseCallback):
    """Put the run's config in TensorBoard's HPARAMS tab, beside the metrics it is judged by.

    `metrics` must be tags the run logs as scalars (the tab reads their values from the run).
    """

    def __init__(self, hparams: dict[str, bool | int | float | str], metrics: list[str]) -> None:
        super().__init__()
        self.hparams = hparams
        self.metrics = metrics

    def _on_training_start(self) -> None:
        self.logger.record(
            "hparams",
            HParam(dict(self.hparams), dict.fromkeys(self.metrics, 0.0)),
            exclude=("stdout", "log", "json", "csv", "wandb", "mlflow"),
        )

    def _on_step(self) -> bool:
        return True


class _PeriodicCallback(BaseCallback):
    """Base of callbacks due every `every` agent-steps, counted from where training (re)starts."""

    def __init__(self, every: int, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.every = every
        self._next = 0

    def _on_training_start(self) -> None:
        self._next = (self.num_timesteps // self.every + 1) * self.every

    def _due(self) -> bool:
        """True once per crossed multiple of `every` (a rollout may cross several: still once)."""
        if self.num_timesteps < self._next:
            return False
        self._next = (self.num_timesteps // self.every + 1) * self.every
        return True


class EvalCallback(_PeriodicCallback):
    """Evaluate every `eval_freq` agent-steps, once the rollout that crosses the mark has trained.

    The evaluation runs at the start of the next rollout, after PPO's update with the crossing
    rollout: the policy evaluated is the one a snapshot at that step holds (at a rollout's end the
    update is still to come). Its metrics are written at that step. Evaluating between rollouts
    keeps a rollout's data from one policy and lets an evaluation that shares the training server
    restart the training episodes cleanly. When `on_eval` returns False (a sweep pruning the
    trial) training stops at the first step of that rollout. The last rollout's mark is left to
    train()'s final evaluation.
    """

    def __init__(
        self,
        evaluator: Evaluator,
        eval_freq: int,
        curriculum_callback: CurriculumCallback,
        on_eval: EvalHook | None = None,
    ) -> None:
        super().__init__(eval_freq)
        self.evaluator = evaluator
        self.curriculum_callback = curriculum_callback
        self.on_eval = on_eval
        self.stopped = False

    def _on_step(self) -> bool:
        return not self.stopped

    def _on_rollout_start(self) -> None:
        if not self._due():
            return
        metrics = self.evaluator(self.model, self.logger)
        self.logger.dump(self.num_timesteps)
        self.curriculum_callback.advance(self.num_timesteps, metrics["eval/success_rate"])
        if self.on_eval is not None and not self.on_eval(self.num_timesteps, metrics):
            self.stopped = True


class CurriculumCallback(BaseCallback):
    """Apply the curricula's goal distances to the training and eval envs whenever a stage changes."""

    def __init__(
        self, curriculum: Curriculum, eval_env: VecEnv, task_curricula: TaskCurricula, verbose: int = 0
    ) -> None:
        super().__init__(verbose)
        self.curriculum = curriculum
        self.eval_env = eval_env
        self.task_curricula = task_curricula

    def _on_step(self) -> bool:
        self.advance(self.num_timesteps)
        return True

    def _on_rollout_end(self) -> None:
        self.logger.record("curriculum/stage", self.curriculum.stage)
        self.logger.record("curriculum/max_goal_distance", self.curriculum.max_goal_distance)
        for task, distance in self.task_curricula.max_goal_distances.items():
            self.logger.record(f"curriculum/{task}/max_goal_distance", distance)

    def advance(self, timesteps: int, success_rate: float | None = None) -> None:
        if self.curriculum.update(timesteps, success_rate):
            for env in (self.training_env, self.eval_env):
                env.env_method("set_max_goal_distance", self.curriculum.max_goal_distance, indices=[0])
            if self.verbose:
                print(
                    f"curriculum: stage {self.curriculum.stage} ({self.curriculum.stage_name}) at {timesteps} steps"
                )
        if self.task_curricula.update(timesteps):
            distances = self.task_curricula.max_goal_distances
            for env in (self.training_env, self.eval_env):
                env.env_method("set_task_max_goal_distances", distances, indices=[0])


class CheckpointCallback(_PeriodicCallback):
    """Every `save_freq` agent-steps write `vr_nav_model_<steps>_steps.zip` and its companions.

    Like evaluations, a checkpoint is written once the rollout that crosses the mark has been
    trained on (at the next rollout's start; train() calls `save_if_due` after the last one), so
    `<steps>` is what the saved policy has learned from and a resume starts on a rollout boundary.
    """

    def __init__(self, directory: Path, save_freq: int, state: Callable[[], dict[str, Any]]) -> None:
        super().__init__(save_freq)
        self.directory = directory
        self.state = state

    def _on_rollout_start(self) -> None:
        self.save_if_due()

    def _on_step(self) -> bool:
        return True

    def save_if_due(self) -> None:
        if self._due():
            env = self.model.get_env()
            assert isinstance(env, VecNormalize)
            save_snapshot(self.model, env, checkpoint_path(self.directory, self.num_timesteps), self.state())


class EpisodeMetricsCallback(BaseCallback):
    """Per-rollout means of the finished episodes' stats, and the servers' engine FPS.

    Logs `reward/<term>` (mean per-episode sum of each term), `rollout/collisions`, `rollout/falls`,
    `rollout/comfort_score`, `rollout/goal_distance` (final), `rollout/ep_len`, and every
    `engine_every` rollouts `engine/fps` and `engine/physics_fps` (means over servers).
    SB3 itself logs `rollout/success_rate` from `is_success`. Episodes of several tasks add
    `rollout/<task>/{success_rate,ep_rew_mean,ep_len,collisions,falls}` over this rollout's episodes.
    """

    def __init__(self, engine_every: int = 5) -> None:
        super().__init__()
        self.engine_every = engine_every
        self._episodes: list[dict[str, Any]] = []
        self._rollouts = 0

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode_stats" in info:
                self._episodes.append(info)
        return True

    def _on_rollout_end(self) -> None:
        if self._episodes:
            stats = [info["episode_stats"] for info in self._episodes]
            for term in REWARD_TERMS:
                self.logger.record(f"reward/{term}", float(np.mean([s["terms"][term] for s in stats])))
            for key, name in (
                ("collisions", "collisions"),
                ("falls", "falls"),
                ("comfort_score", "comfort"),
                ("goal_distance", "goal_distance"),
            ):
                self.logger.record(f"rollout/{key}", float(np.mean([s[name] for s in stats])))
            self.logger.record("rollout/ep_len", float(np.mean([i["episode"]["l"] for i in self._episodes])))
            self._record_per_task()
            self._episodes.clear()
        if self._rollouts % self.engine_every == 0:
            reports = self.training_env.unwrapped.performance()  # type: ignore[attr-defined]
            if reports:
                for key in ("fps", "physics_fps"):
                    self.logger.record(f"engine/{key}", float(np.mean([r["engine"][key] for r in reports])))
        self._rollouts += 1

    def _record_per_task(self) -> None:
        tasks = sorted({str(info["task"]) for info in self._episodes if "task" in info})
        for task in tasks if len(tasks) > 1 else ():
            own = [info for info in self._episodes if info.get("task") == task]
            for key, values in (
                ("success_rate", [info["is_success"] for info in own]),
                ("ep_rew_mean", [info["episode"]["r"] for info in own]),
                ("ep_len", [info["episode"]["l"] for info in own]),
                ("collisions", [info["episode_stats"]["collisions"] for info in own]),
                ("falls", [info["episode_stats"]["falls"] for info in own]),
            ):
                self.logger.record(f"rollout/{task}/{key}", float(np.mean(values)))
