"""Multi-objective sweeps (`sweep.objectives`): the study's directions, the trials' values, the Pareto
front in the report, and the refusals (pruning, a lone objective, directions without objectives).

The command-line tests run `fake_train_app.py`: its success rate peaks at ppo.learning_rate = 3e-4
and its collisions grow with the learning rate, so trials below 3e-4 trade one for the other.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from spacetime_rl.config import ObjectiveConfig, SweepConfig
from spacetime_rl.errors import ConfigError
from spacetime_rl.studies import write_sweep_report
from spacetime_rl.studies.storage import default_storage, open_storage, tell_result

FAKE_APP = Path(__file__).with_name("fake_train_app.py")
SUCCESS, COLLISIONS = "values_eval/success_rate", "values_eval/collisions"
TWO = [ObjectiveConfig("eval/success_rate", "maximize"), ObjectiveConfig("eval/collisions", "minimize")]


def run_fake_sweep(sweep_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(FAKE_APP), "-m", f"hydra.sweep.dir={sweep_dir}", *args],
        cwd=sweep_dir.parent,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ,
    )


def pareto_numbers(trials: pd.DataFrame) -> list[int]:
    """The completed trials no other one matches or beats on both objectives and beats on one."""
    complete = trials[trials["state"] == "COMPLETE"]

    def dominated(row: pd.Series) -> bool:
        better_or_equal = (complete[SUCCESS] >= row[SUCCESS]) & (complete[COLLISIONS] <= row[COLLISIONS])
        better = (complete[SUCCESS] > row[SUCCESS]) | (complete[COLLISIONS] < row[COLLISIONS])
        return bool((better_or_equal & better).any())

    return sorted(int(row["number"]) for _, row in complete.iterrows() if not dominated(row))


def test_a_two_objective_sweep_reports_its_pareto_front(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_dir.parent.mkdir(exist_ok=True)
    result = run_fake_sweep(
        sweep_dir,
        "sweep=safety",
        "hydra.sweeper.n_trials=5",
        "sweep.front_configs=true",
        "ppo.learning_rate=choice(1e-5,1e-4,3e-4,1e-3,3e-3)",
        "hydra/sweeper/sampler=random",
    )
    assert result.returncode == 0, result.stderr

    study = optuna.load_study(study_name="safety", storage=default_storage(sweep_dir))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["eval/success_rate", "eval/collisions"]
    trials = pd.read_csv(sweep_dir / "trials.csv")
    assert trials["state"].tolist() == ["COMPLETE"] * 5
    for _, row in trials.iterrows():  # each trial's values are its seeds' final evaluations
        metrics = json.loads((sweep_dir / str(row["number"]) / "metrics.json").read_text())
        values = {o["metric"]: o["value"] for o in metrics["objectives"]}
        assert values == {"eval/success_rate": row[SUCCESS], "eval/collisions": row[COLLISIONS]}
        for seed in metrics["seeds"]:  # each seed's values by name, no unnamed single value beside them
            assert set(seed) == {"seed", "values"}
            assert set(seed["values"]) == {"eval/success_rate", "eval/collisions"}

    front = pd.read_csv(sweep_dir / "pareto_front.csv")
    expected = pareto_numbers(trials)
    assert front["number"].tolist() == expected
    assert {SUCCESS, COLLISIONS, "params_ppo.learning_rate"} <= set(front.columns)
    assert (sweep_dir / "pareto_front.png").stat().st_size > 0
    configs = sorted(p.name for p in sweep_dir.glob("best_config*.yaml"))
    assert configs == sorted(f"best_config_{n}.yaml" for n in expected)
    for _, row in front.iterrows():
        config = yaml.safe_load((sweep_dir / f"best_config_{row['number']}.yaml").read_text())
        assert config["ppo"]["learning_rate"] == pytest.approx(row["params_ppo.learning_rate"])
        assert config["sweep"]["trial"] is None
    assert not (sweep_dir / "param_importances.png").exists()  # one objective's figures

    again = write_sweep_report(sweep_dir, tmp_path / "report")  # compare's way; no front configs asked
    assert sorted(p.name for p in again if "best_config" in p.name) == configs


def test_without_front_configs_the_report_writes_no_configs(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_dir.parent.mkdir(exist_ok=True)
    result = run_fake_sweep(sweep_dir, "sweep=safety", "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr
    assert (sweep_dir / "pareto_front.csv").is_file()
    assert not list(sweep_dir.glob("best_config*.yaml"))


def test_pruning_a_multi_objective_sweep_is_refused_with_the_fix(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_dir.parent.mkdir(exist_ok=True)
    objectives = "[{metric:eval/success_rate,direction:maximize},{metric:eval/collisions,direction:minimize}]"
    result = run_fake_sweep(sweep_dir, "sweep=ppo", f"sweep.objectives={objectives}")  # ppo.yaml prunes
    assert result.returncode == 1
    assert "sweep.pruner='optuna.pruners.MedianPruner' is invalid: Optuna cannot prune" in result.stdout
    assert "set sweep.pruner=null" in result.stdout
    assert not (sweep_dir / "0").exists()


def test_several_directions_without_objectives_are_refused(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_dir.parent.mkdir(exist_ok=True)
    result = run_fake_sweep(sweep_dir, "sweep=ppo", "hydra.sweeper.direction=[maximize,minimize]")
    assert result.returncode == 1
    assert "hydra.sweeper.direction=['maximize', 'minimize'] names 2 directions" in result.stdout
    assert "sweep.objectives" in result.stdout


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"objectives": TWO[:1], "pruner": None}, "sweep.objectives=['eval/success_rate'] is invalid"),
        ({"objectives": TWO}, "set sweep.pruner=null"),
    ],
)
def test_sweep_settings_refused(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SweepConfig(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("metric", "direction", "message"),
    [
        ("eval/crashes", "maximize", "sweep.objectives[].metric='eval/crashes' is invalid"),
        ("eval/falls", "lower", "direction (of eval/falls)='lower' is invalid: use one of"),
    ],
)
def test_an_objective_names_a_known_metric_and_direction(metric: str, direction: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ObjectiveConfig(metric, direction)
    assert message in str(raised.value)


def test_tell_result_takes_one_finite_value_per_objective(tmp_path: Path) -> None:
    storage = default_storage(tmp_path)
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    backend = open_storage(storage)
    told = [
        tell_result(study, backend, study.ask(), lambda v=v: v) for v in ([0.5, 2.0], [0.5], [math.nan, 1.0])
    ]
    assert told == [
        optuna.trial.TrialState.COMPLETE,
        optuna.trial.TrialState.FAIL,
        optuna.trial.TrialState.FAIL,
    ]
    assert optuna.load_study(study_name="s", storage=storage).trials[0].values == [0.5, 2.0]


def test_resuming_a_study_with_other_objectives_is_refused(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    sweep_dir.parent.mkdir(exist_ok=True)
    assert run_fake_sweep(sweep_dir, "sweep=safety", "hydra.sweeper.n_trials=1").returncode == 0
    single = run_fake_sweep(sweep_dir, "sweep=ppo", "sweep.study_name=safety", "hydra.sweeper.n_trials=2")
    assert single.returncode == 1
    assert (
        "study safety in sqlite:///" in single.stdout
        and "began with ['eval/success_rate', 'eval/collisions'] in directions ['maximize', 'minimize']"
        in single.stdout
    )
    assert "sweep.objectives=none with directions ['maximize'] do not match" in single.stdout
    assert not (sweep_dir / "1").exists()
