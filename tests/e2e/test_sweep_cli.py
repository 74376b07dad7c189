"""`python train.py -m sweep=<name>` as users run it: real training on the embedded simulator, tiny budgets.

Run from a temporary working directory, so the `sweep` group must be found from anywhere and the
sweep folder (multirun/sweeps/<study>) lands under it.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from spacetime_rl.compare import learning_curves

from .runs import ROOT

TINY = [
    "env.agents_per_environment=4",
    "env.max_episode_steps=50",
    "ppo.n_steps=64",
    "ppo.batch_size=64",
    "ppo.n_epochs=2",
    "training.total_timesteps=256",
    "training.eval_freq=256",
    "training.save_freq=256",
    "training.eval_episodes=4",
]


def sweep_command(*args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), "-m", *args, *TINY]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(sweep_command(*args), cwd=cwd, capture_output=True, text=True, timeout=900)


def states(sweep_dir: Path, study_name: str) -> list[str]:
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{sweep_dir / 'study.db'}")
    return [trial.state.name for trial in study.trials]


def run_best_config(sweep_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "--config-dir",
            str(sweep_dir),
            "--config-name",
            "best_config",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_two_trial_sweep_trains_and_reports(tmp_path: Path) -> None:
    result = run(tmp_path, "sweep=ppo", "hydra.sweeper.n_trials=2")
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr  # as `... 2> sweep.log` would keep it
    assert "A new study created" in output  # Optuna's lines, through the job's logging: plain
    assert "\x1b[" not in output and "setup plugin" not in output  # no colour codes, no alembic noise

    sweep_dir = tmp_path / "multirun" / "sweeps" / "ppo"
    for log in sweep_dir.glob("*/train.log"):
        assert "\x1b[" not in log.read_text(), log
    assert states(sweep_dir, "ppo") == ["COMPLETE", "COMPLETE"]
    for trial in ("0", "1"):
        assert (sweep_dir / trial / "seed_0" / "final_model.zip").is_file()
        metrics = json.loads((sweep_dir / trial / "metrics.json").read_text())
        assert metrics["final"]["eval/success_rate"] == metrics["objective"]["value"]
    for name in ("trials.csv", "best_config.yaml", "optimization_history.png", "param_importances.png"):
        assert (sweep_dir / name).is_file(), name
    shown = run_best_config(sweep_dir, tmp_path, "--cfg", "job")  # training it is the slow test's job
    assert shown.returncode == 0, shown.stderr
    assert "trial: null" in shown.stdout

    compared = subprocess.run(
        [sys.executable, "-m", "spacetime_rl.compare", str(sweep_dir), "--out", str(tmp_path / "report")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert compared.returncode == 0, compared.stderr
    with open(tmp_path / "report" / "comparison.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["run"] for row in rows) == ["0", "1"]
    assert all(row["best/eval/success_rate"] != "" for row in rows)  # the trials' seeds' best
    assert {row["num_timesteps"] for row in rows} == {"256"}  # trained, over the trial's one seed
    for trial in ("0", "1"):
        curves = learning_curves(sweep_dir / trial)  # from seed_0/tensorboard
        assert curves["eval/success_rate"], trial


@pytest.mark.slow
def test_running_the_command_again_resumes_and_the_best_config_trains(tmp_path: Path) -> None:
    assert run(tmp_path, "sweep=network", "hydra.sweeper.n_trials=2").returncode == 0
    again = run(tmp_path, "sweep=network", "hydra.sweeper.n_trials=3")
    assert again.returncode == 0, again.stderr
    assert "2 of 3 trials finished, 1 to run" in again.stdout
    sweep_dir = tmp_path / "multirun" / "sweeps" / "network"
    assert states(sweep_dir, "network") == ["COMPLETE"] * 3
    assert sorted(p.name for p in sweep_dir.iterdir() if p.name.isdigit()) == ["0", "1", "2"]

    best = run_best_config(sweep_dir, tmp_path, f"hydra.run.dir={tmp_path / 'best'}")
    assert best.returncode == 0, best.stderr
    assert (tmp_path / "best" / "final_model.zip").is_file()


@pytest.mark.slow
def test_two_sweeps_started_together_keep_their_own_folders_and_ports(tmp_path: Path) -> None:
    processes = [
        subprocess.Popen(
            sweep_command("sweep=reward", f"sweep.study_name={name}", "hydra.sweeper.n_trials=1"),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("first", "second")
    ]
    outputs = [process.communicate(timeout=900) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    for name in ("first", "second"):
        sweep_dir = tmp_path / "multirun" / "sweeps" / name
        assert states(sweep_dir, name) == ["COMPLETE"]
        assert (sweep_dir / "0" / "seed_0" / "final_model.zip").is_file()


@pytest.mark.slow
def test_two_workers_on_postgresql_train_exactly_n_trials_between_them(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two `train.py -m` processes on one study in a PostgreSQL server, as on two machines."""
    args = (
        "sweep=ppo",
        f"sweep.storage={postgres_url}",
        "sweep.study_name=workers",
        "hydra.sweeper.n_trials=3",
    )
    workers = [
        subprocess.Popen(
            sweep_command(*args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outputs = [worker.communicate(timeout=900) for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0], "\n".join(err for _, err in outputs)

    study = optuna.load_study(study_name="workers", storage=postgres_url)
    assert sorted((trial.number, trial.state.name) for trial in study.trials) == [
        (0, "COMPLETE"),
        (1, "COMPLETE"),
        (2, "COMPLETE"),
    ]
    sweep_dir = tmp_path / "multirun" / "sweeps" / "workers"
    for trial in ("0", "1", "2"):
        assert (sweep_dir / trial / "seed_0" / "final_model.zip").is_file()
    assert "study.db" not in {p.name for p in sweep_dir.iterdir()}  # the study is in the server


@pytest.mark.slow
def test_a_two_objective_sweep_scores_trials_on_their_final_evaluation(tmp_path: Path) -> None:
    result = run(tmp_path, "sweep=safety", "hydra.sweeper.n_trials=2", "sweep.front_configs=true")
    assert result.returncode == 0, result.stderr
    sweep_dir = tmp_path / "multirun" / "sweeps" / "safety"
    study = optuna.load_study(study_name="safety", storage=f"sqlite:///{sweep_dir / 'study.db'}")
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]
    for trial in study.trials:  # train()'s own final evaluation, both objectives
        final = json.loads((sweep_dir / str(trial.number) / "seed_0" / "metrics.json").read_text())["final"]
        assert trial.values == [final["eval/success_rate"], final["eval/collisions"]]
    with open(sweep_dir / "pareto_front.csv", newline="") as file:
        front = [int(row["number"]) for row in csv.DictReader(file)]
    assert front and set(front) <= {0, 1}
    assert sorted(p.name for p in sweep_dir.glob("best_config*.yaml")) == [
        f"best_config_{n}.yaml" for n in front
    ]
    assert (sweep_dir / "pareto_front.png").is_file()
