"""One sweep trial, run in its Hydra job: train `sweep.seeds_per_trial` seeds, average, report for pruning.

Trial folder layout (`<sweep dir>/<trial number>/`):

    seed_<k>/      a full `train()` output folder (model, checkpoints, metrics.json) for seed training.seed + k
    metrics.json   as train() writes it, over the seeds: the mean objective, the mean final and best
                   evaluations, the steps trained by all seeds, and each seed's objective (or the
                   step where the trial was pruned)
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import optuna
from hydra.utils import instantiate

from spacetime_rl.artifacts import write_json
from spacetime_rl.budget import plan_budget
from spacetime_rl.config import SweepConfig, TrainConfig
from spacetime_rl.errors import ConfigError
from spacetime_rl.metrics import EvalHook
from spacetime_rl.studies.storage import open_storage, trial_id

log = logging.getLogger(__name__)


class TrainFn(Protocol):
    def __call__(self, config: TrainConfig, output_dir: Path, on_eval: EvalHook | None = None) -> float: ...


class PruningReporter:
    """Reports every evaluation to the Optuna trial and says stop once its pruner prunes the trial.

    Seed k's evaluation at agent-step t is reported as step k * steps_per_seed + t (steps_per_seed:
    the steps a seed trains, whole rollouts): trials are then
    compared seed for seed at equal budgets, and no two evaluations of a trial share a step.
    """

    def __init__(self, trial: optuna.trial.Trial, objective: str, steps_per_seed: int) -> None:
        self.trial = trial
        self.objective = objective
        self.steps_per_seed = steps_per_seed
        self.pruned_at: int | None = None

    def hook(self, seed_index: int) -> EvalHook:
        def on_eval(timesteps: int, metrics: dict[str, float]) -> bool:
            step = seed_index * self.steps_per_seed + timesteps
            self.trial.report(metrics[self.objective], step)
            if self.trial.should_prune():
                self.pruned_at = step
                return False
            return True

        return on_eval


def open_trial(sweep: SweepConfig) -> optuna.trial.Trial:
    """The running trial `sweep.trial` of the study, with `sweep.pruner` as the study's pruner."""
    if sweep.trial is None or sweep.study_name is None or sweep.storage is None:
        raise ConfigError(
            f"sweep.trial={sweep.trial} needs sweep.study_name and sweep.storage: run trials through the "
            "spacetime_optuna sweeper (python train.py -m sweep=<name>), which sets all three"
        )
    pruner = instantiate(sweep.pruner) if sweep.pruner else optuna.pruners.NopPruner()
    storage = open_storage(sweep.storage)
    study = optuna.load_study(study_name=sweep.study_name, storage=storage, pruner=pruner)
    return optuna.trial.Trial(study, trial_id(storage, sweep.study_name, sweep.trial))


def run_trial(config: TrainConfig, output_dir: Path, train: TrainFn) -> float | list[float]:
    """Train each seed of the trial into `output_dir/seed_<k>/` with `train` and return the mean objective
    (multi-objective: the mean of each of `sweep.objectives`, from each seed's final evaluation).

    `train` is the training job (`spacetime_rl.training.train`), passed in so that this job does
    not import that one. A pruned trial is told PRUNED here and returns NaN; so does a seed whose
    objective is not finite. Any other error is logged with its traceback (in the job's log) and
    re-raised: the sweeper records FAIL.
    """
    sweep = config.sweep
    metrics = [o.metric for o in sweep.objectives] if sweep.multi_objective else [config.training.objective]
    # Optuna reports and prunes single-objective trials only (SweepConfig refuses a pruner otherwise).
    trial = open_trial(sweep) if sweep.trial is not None and not sweep.multi_objective else None
    reporter = (
        PruningReporter(trial, config.training.objective, plan_budget(config).trained)
        if trial is not None
        else None
    )
    values: list[list[float]] = []
    summary: dict[str, Any] = {"trial": sweep.trial, "seeds": []}
    for k in range(sweep.seeds_per_trial):
        seed = config.training.seed + k
        seed_config = replace(config, training=replace(config.training, seed=seed))
        seed_dir = Path(output_dir) / f"seed_{k}"
        try:
            value = train(seed_config, seed_dir, reporter.hook(k) if reporter else None)
            seed_values = _final_values(seed_dir, metrics) if sweep.multi_objective else [value]
        except Exception:
            log.exception("trial %s: seed %d failed", sweep.trial, seed)
            raise
        # one objective: its value; several: each by name (train()'s own value is training.objective's)
        scored = (
            {"values": dict(zip(metrics, seed_values, strict=True))}
            if sweep.multi_objective
            else {"value": value}
        )
        summary["seeds"].append({"seed": seed} | scored)
        if reporter is not None and reporter.pruned_at is not None:
            assert trial is not None
            trial.study.tell(trial.number, state=optuna.trial.TrialState.PRUNED)
            log.info("trial %d pruned at step %d", trial.number, reporter.pruned_at)
            _write_summary(output_dir, config, summary | {"pruned_at": reporter.pruned_at}, None)
            return math.nan
        if not all(math.isfinite(v) for v in seed_values):
            log.error("trial %s: seed %d ended with %s = %s", sweep.trial, seed, metrics, seed_values)
            _write_summary(output_dir, config, summary, None)
            return math.nan
        values.append(seed_values)
    means = [sum(column) / len(column) for column in zip(*values, strict=True)]
    _write_summary(output_dir, config, summary, means)
    return means if sweep.multi_objective else means[0]


def _final_values(seed_dir: Path, metrics: list[str]) -> list[float]:
    """The final evaluation's value of each metric, from the metrics.json train() wrote."""
    final = json.loads((seed_dir / "metrics.json").read_text()).get("final", {})
    missing = [metric for metric in metrics if metric not in final]
    if missing:
        raise ConfigError(
            f"sweep.objectives names {missing}, which {seed_dir / 'metrics.json'}'s final evaluation "
            f"does not hold (it has {sorted(final)}): use eval/* metrics the evaluation reports"
        )
    return [float(final[metric]) for metric in metrics]


def _mean_metrics(runs: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric every run has."""
    shared = set.intersection(*(set(run) for run in runs)) if runs else set()
    return {key: sum(run[key] for run in runs) / len(runs) for key in sorted(shared)}


def _write_summary(
    output_dir: Path, config: TrainConfig, summary: dict[str, Any], values: list[float] | None
) -> None:
    """The trial's metrics.json, in train()'s layout so `spacetime_rl.compare` reads a trial like a run."""
    seeds = []
    for k in range(len(summary["seeds"])):
        seed_metrics = Path(output_dir) / f"seed_{k}" / "metrics.json"
        if seed_metrics.is_file():
            seeds.append(json.loads(seed_metrics.read_text()))
    metrics = {
        # multi-objective: the first of sweep.objectives here (compare sorts by it), all of them below
        "objective": _objective(config, values),
        "final": _mean_metrics([seed.get("final", {}) for seed in seeds]),
        "best": _mean_metrics([seed.get("best", {}) for seed in seeds]),
        "num_timesteps": sum(seed.get("num_timesteps", 0) for seed in seeds),  # over all seeds
        "requested_timesteps": config.training.total_timesteps * config.sweep.seeds_per_trial,
        **summary,
    }
    if config.sweep.multi_objective:
        metrics["objectives"] = [
            {"metric": o.metric, "direction": o.direction, "value": None if values is None else values[i]}
            for i, o in enumerate(config.sweep.objectives)
        ]
    write_json(Path(output_dir) / "metrics.json", metrics)


def _objective(config: TrainConfig, values: list[float] | None) -> dict[str, Any]:
    sweep = config.sweep
    name = sweep.objectives[0].metric if sweep.multi_objective else config.training.objective
    return {"name": name, "value": None if values is None else values[0]}
