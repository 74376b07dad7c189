"""Sweeps against a real SQLite study: pruning, seed averaging, trial states, resume, report.

The command-line tests run `fake_train_app.py` (train.py with a fake `train()`) so the sweeper, the
`sweep` config group, trial jobs and the report run end to end in seconds; tests/e2e/test_sweep_cli.py
runs real training.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from spacetime_rl.budget import plan_budget
from spacetime_rl.config import SweepConfig, TrainConfig, TrainingConfig
from spacetime_rl.studies import is_sweep_dir, write_sweep_report
from spacetime_rl.studies.report import importances_figure, param_importances
from spacetime_rl.studies.storage import default_storage, open_storage, tell_result
from spacetime_rl.sweeps import PruningReporter, run_trial
from spacetime_rl.sweeps.search_space import SearchSpace
from spacetime_rl.sweeps.sweeper import OptunaSweep

FAKE_APP = Path(__file__).with_name("fake_train_app.py")
TrialState = optuna.trial.TrialState


@pytest.fixture
def storage(tmp_path: Path) -> str:
    return default_storage(tmp_path)


def median_study(storage: str, *finished: list[float]) -> optuna.Study:
    """A study whose first trials completed with these intermediate values (one per step 1, 2, ...)."""
    study = optuna.create_study(
        study_name="s",
        storage=storage,
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=1),
    )
    for values in finished:
        trial = study.ask()
        for step, value in enumerate(values, start=1):
            trial.report(value, step)
        study.tell(trial, values[-1])
    return study


def stored_trials(storage: str) -> list[optuna.trial.FrozenTrial]:
    """The trials as stored: a study caches the trials it asked for and misses what jobs wrote."""
    return optuna.load_study(study_name="s", storage=storage).trials


def trial_config(storage: str, trial: int, seeds: int = 1) -> TrainConfig:
    return TrainConfig(
        training=TrainingConfig(total_timesteps=4, seed=7),
        sweep=SweepConfig(
            study_name="s",
            storage=storage,
            seeds_per_trial=seeds,
            trial=trial,
            pruner={"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 1},
        ),
    )


class FakeTrain:
    """Stands in for `train()`: four evaluations of `value(seed)`, stopping when the hook says so."""

    def __init__(self, value: Any = lambda seed: 0.5) -> None:
        self.value = value
        self.calls: list[tuple[int, Path, int]] = []  # seed, output dir, evaluations run

    def __call__(self, config: TrainConfig, output_dir: Path, on_eval: Any = None) -> float:
        seed, value, evaluations = config.training.seed, self.value(config.training.seed), 0
        for step in (1, 2, 3, 4):
            evaluations += 1
            if on_eval is not None and not on_eval(step, {"eval/success_rate": value}):
                break
        self.calls.append((seed, output_dir, evaluations))
        return value


def test_pruning_reporter_stops_a_trial_below_the_median(storage: str) -> None:
    study = median_study(storage, [0.8, 0.9, 0.9])
    reporter = PruningReporter(study.ask(), "eval/success_rate", steps_per_seed=3)
    assert reporter.hook(0)(1, {"eval/success_rate": 0.1}) is False
    assert reporter.pruned_at == 1


def test_pruning_reporter_lets_a_better_trial_run(storage: str) -> None:
    study = median_study(storage, [0.2, 0.3])
    reporter = PruningReporter(study.ask(), "eval/success_rate", steps_per_seed=2)
    assert all(reporter.hook(0)(step, {"eval/success_rate": 0.9}) for step in (1, 2))
    assert reporter.pruned_at is None


def test_later_seeds_report_after_earlier_ones(storage: str) -> None:
    study = median_study(storage)
    trial = study.ask()
    reporter = PruningReporter(trial, "eval/success_rate", steps_per_seed=100)
    reporter.hook(0)(50, {"eval/success_rate": 0.1})
    reporter.hook(1)(50, {"eval/success_rate": 0.2})
    assert stored_trials(storage)[trial.number].intermediate_values == {50: 0.1, 150: 0.2}


def test_a_trial_averages_its_seeds_in_seed_folders(storage: str, tmp_path: Path) -> None:
    study = median_study(storage)
    trial = study.ask()
    fake = FakeTrain(lambda seed: 0.1 * (seed - 6))  # seeds 7, 8 -> 0.1, 0.2

    config = trial_config(storage, trial.number, seeds=2)
    value = run_trial(config, tmp_path / "t", fake)

    assert value == pytest.approx(0.15)
    assert [(seed, out.name, n) for seed, out, n in fake.calls] == [(7, "seed_0", 4), (8, "seed_1", 4)]
    summary = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert [s["seed"] for s in summary["seeds"]] == [7, 8]
    assert summary["objective"]["value"] == pytest.approx(0.15)
    # seed k reports at k x (the steps a seed trains: whole rollouts) + its step
    steps_per_seed = plan_budget(config).trained
    assert stored_trials(storage)[trial.number].intermediate_values[steps_per_seed + 3] == pytest.approx(0.2)


def test_a_pruned_trial_stops_training_and_is_told_pruned(storage: str, tmp_path: Path) -> None:
    study = median_study(storage, [0.9, 0.9, 0.9, 0.9])
    trial = study.ask()
    fake = FakeTrain(lambda seed: 0.0)

    value = run_trial(trial_config(storage, trial.number, seeds=3), tmp_path / "t", fake)

    assert math.isnan(value)
    assert fake.calls == [(7, tmp_path / "t" / "seed_0", 1)]  # one evaluation, no further seeds
    assert stored_trials(storage)[trial.number].state == TrialState.PRUNED
    assert json.loads((tmp_path / "t" / "metrics.json").read_text())["pruned_at"] == 1


def test_outside_a_sweep_train_py_trains_directly() -> None:
    assert not TrainConfig().sweep.per_trial  # train.py calls train(), not run_trial()
    assert SweepConfig(seeds_per_trial=2).per_trial and SweepConfig(trial=3).per_trial


def test_a_nan_objective_fails_the_trial(storage: str, tmp_path: Path) -> None:
    study = median_study(storage)
    trial = study.ask()
    value = run_trial(trial_config(storage, trial.number), tmp_path, FakeTrain(lambda seed: math.nan))
    assert math.isnan(value)
    assert tell_result(study, open_storage(storage), trial, lambda: value) == TrialState.FAIL


def test_tell_result_states(storage: str) -> None:
    study = median_study(storage)
    completed, crashed, pruned = study.ask(), study.ask(), study.ask()
    study.tell(pruned, state=TrialState.PRUNED)  # as a trial job does

    def crash() -> float:
        raise RuntimeError("diverged")

    backend = open_storage(storage)
    assert tell_result(study, backend, completed, lambda: 0.25) == TrialState.COMPLETE
    assert tell_result(study, backend, crashed, crash) == TrialState.FAIL
    assert tell_result(study, backend, pruned, lambda: math.nan) == TrialState.PRUNED
    states = [t.state for t in stored_trials(storage)]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED]


def test_param_importances_rank_the_parameter_that_explains_the_value() -> None:
    trials = pd.DataFrame(
        {
            "value": [0.1, 0.2, 0.8, 0.9, 0.15, 0.85],
            "params_lr": [1e-5, 2e-5, 1e-3, 2e-3, 1.5e-5, 1.5e-3],
            "params_act": ["relu", "tanh", "relu", "tanh", "tanh", "relu"],
        }
    )
    importances = param_importances(trials)
    assert list(importances) == ["lr", "act"]
    assert importances["lr"] > 0.9 > importances["act"]


def test_param_importances_without_variance_are_undefined_and_the_figure_says_so() -> None:
    trials = pd.DataFrame({"value": [0.5, 0.5, 0.5], "params_lr": [1e-4, 3e-4, 1e-3]})
    assert math.isnan(param_importances(trials)["lr"])
    (ax,) = importances_figure(trials, "flat").axes
    assert any("undefined: every completed trial scored 0.5" in text.get_text() for text in ax.texts)


def run_fake_sweep(
    sweep_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FAKE_APP), "-m", "sweep=ppo", f"hydra.sweep.dir={sweep_dir}", *args],
        cwd=sweep_dir.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | (env or {}),
    )


def job_log(job_dir: Path) -> str:
    (log,) = job_dir.glob("*.log")  # <hydra.job.name>.log
    return log.read_text()


def study_states(sweep_dir: Path) -> list[str]:
    return pd.read_csv(sweep_dir / "trials.csv")["state"].tolist()


def test_fake_sweep_resumes_records_failures_and_reports(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    first = run_fake_sweep(sweep_dir, "hydra.sweeper.n_trials=2", env={"FAKE_CRASH": "1"})
    assert first.returncode == 0, first.stderr
    assert study_states(sweep_dir) == ["COMPLETE", "FAIL"]
    assert "trial 1 failed: RuntimeError: trial 1 diverged" in first.stdout
    assert "trial 1 diverged" in job_log(sweep_dir / "1")  # the traceback

    again = run_fake_sweep(sweep_dir, "hydra.sweeper.n_trials=3")
    assert again.returncode == 0, again.stderr
    assert "2 of 3 trials finished, 1 to run" in again.stdout
    assert study_states(sweep_dir) == ["COMPLETE", "FAIL", "COMPLETE"]
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1", "2"]

    assert is_sweep_dir(sweep_dir)
    written = {p.name for p in write_sweep_report(sweep_dir)}
    assert written == {"trials.csv", "best_config.yaml", "optimization_history.png", "param_importances.png"}
    best = yaml.safe_load((sweep_dir / "best_config.yaml").read_text())
    trials = pd.read_csv(sweep_dir / "trials.csv")
    best_row = trials.loc[trials["value"].idxmax()]
    assert best["ppo"]["learning_rate"] == pytest.approx(best_row["params_ppo.learning_rate"])
    assert best["defaults"] == ["train_schema", "_self_"]
    assert best["sweep"]["trial"] is None and best["sweep"]["storage"] is None


def test_fake_sweep_prunes_a_trial_below_the_median(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    result = run_fake_sweep(
        sweep_dir,
        "hydra.sweeper.n_trials=3",
        "ppo.learning_rate=3e-4",  # every trial scores 1.0 times its scale
        "sweep.pruner.n_startup_trials=1",
        env={"FAKE_SCALE": json.dumps({"2": 0.1})},
    )
    assert result.returncode == 0, result.stderr
    assert study_states(sweep_dir) == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert sorted(p.name for p in (sweep_dir / "2" / "seed_0").glob("eval_*")) == ["eval_1"]
    assert "trial 2 pruned at step 1" in job_log(sweep_dir / "2")


@pytest.mark.parametrize(
    ("choice", "sweeper"),
    [
        ([], "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"),
        (["sweep=ppo"], "hydra_plugins.spacetime_rl_sweeps.spacetime_optuna_sweeper.SpacetimeOptunaSweeper"),
    ],
)
def test_only_a_sweep_file_selects_the_optuna_sweeper(
    choice: list[str], sweeper: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, str(FAKE_APP), *choice, "--cfg", "hydra"],
        cwd=tmp_path,  # the sweep group is found from any working directory
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert OmegaConf.create(result.stdout).hydra.sweeper._target_ == sweeper


@pytest.mark.parametrize(
    ("n_jobs", "fixed", "expected"),
    [
        (1, {}, []),
        (
            2,
            {},
            [
                f"training.torch_threads={max(1, (os.cpu_count() or 1) // 2)}",
                "env.busy_poll=off",
                "training.cpu_affinity=false",
            ],
        ),
        (2, {"env.busy_poll": "on", "training.torch_threads": 1, "training.cpu_affinity": True}, []),
    ],
)
def test_parallel_trials_share_the_cores(n_jobs: int, fixed: dict[str, Any], expected: list[str]) -> None:
    sweeper = OptunaSweep(
        OmegaConf.create({"_target_": "optuna.samplers.RandomSampler"}), "maximize", 4, n_jobs, None, None
    )
    sweeper.n_jobs = n_jobs
    space = SearchSpace.from_overrides([f"{key}={value}" for key, value in fixed.items()])
    assert sweeper._shared_overrides(space) == expected


def test_a_storage_the_sweeper_cannot_share_fails_in_one_line_without_the_password(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_dir.parent.mkdir(exist_ok=True)
    result = run_fake_sweep(sweep_dir, "sweep.storage=mysql://me:secret@db/optuna")
    assert result.returncode == 1
    assert "sweep.storage=mysql://me:***@db/optuna is not a storage the sweeper supports" in result.stdout
    assert "secret" not in result.stdout + result.stderr and "Traceback" not in result.stderr
