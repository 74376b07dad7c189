"""Several sweep processes (workers) on one study: exactly n_trials between them, unique trial numbers,
and a killed worker's trial failed through its missing heartbeat while the others finish.

The workers run `fake_train_app.py` (train.py with a fake `train()`, a second per trial);
tests/e2e/test_sweep_cli.py runs real training against PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
from fake_sweep import fake_sweep_command

from spacetime_rl.studies.storage import open_storage

FAST_HEARTBEAT = ("sweep.heartbeat_interval=1", "sweep.grace_period=3")


def start_worker(sweep_dir: Path, storage: str, n_trials: int, hang: bool = False) -> subprocess.Popen[str]:
    command = fake_sweep_command(
        sweep_dir,
        f"sweep.storage={storage}",
        "sweep.study_name=shared",
        f"hydra.sweeper.n_trials={n_trials}",
        *FAST_HEARTBEAT,
    )
    return subprocess.Popen(
        command,
        cwd=sweep_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ | ({"FAKE_HANG": "1"} if hang else {}),
    )


def finish(worker: subprocess.Popen[str]) -> str:
    out, err = worker.communicate(timeout=300)
    assert worker.returncode == 0, err
    return out


def stored_states(storage: str) -> dict[int, str]:
    study = optuna.load_study(study_name="shared", storage=open_storage(storage))
    return {trial.number: trial.state.name for trial in study.trials}


@pytest.mark.slow
def test_two_workers_on_a_journal_file_run_exactly_n_trials(tmp_path: Path) -> None:
    storage = f"journal://{tmp_path / 'shared' / 'study.log'}"
    workers = [start_worker(tmp_path / "sweep", storage, n_trials=5) for _ in range(2)]
    outputs = [finish(worker) for worker in workers]

    assert stored_states(storage) == dict.fromkeys(range(5), "COMPLETE")
    told = [line for out in outputs for line in out.splitlines() if "] trial " in line]
    assert sorted(int(line.split("] trial ")[1].split(":")[0]) for line in told) == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.name.isdigit()) == [
        "0",
        "1",
        "2",
        "3",
        "4",
    ]
    trials = pd.read_csv(tmp_path / "sweep" / "trials.csv")  # the report, by whichever worker ended last
    assert trials["number"].tolist() == [0, 1, 2, 3, 4]


@pytest.mark.slow
def test_a_killed_workers_trial_fails_and_the_others_finish_the_study(
    tmp_path: Path, postgres_url: str
) -> None:
    killed = start_worker(tmp_path / "killed", postgres_url, n_trials=3, hang=True)
    hanging = tmp_path / "killed" / "0" / "seed_0" / "hanging"
    while not hanging.exists():
        assert killed.poll() is None, killed.communicate()
        time.sleep(0.1)
    survivor = start_worker(tmp_path / "survivor", postgres_url, n_trials=3)
    killed.send_signal(signal.SIGKILL)
    killed.communicate()

    out = finish(survivor)
    assert "0 of 3 trials finished, 2 to run" in out  # trial 0 was running
    assert "trial 0 failed: no heartbeat from its worker" in out
    assert stored_states(postgres_url) == {0: "FAIL", 1: "COMPLETE", 2: "COMPLETE"}
    trials = pd.read_csv(tmp_path / "survivor" / "trials.csv")
    assert trials["state"].tolist() == ["FAIL", "COMPLETE", "COMPLETE"]
