"""`hydra/launcher=ray` against a real Ray cluster: a head started here on 127.0.0.1 (`ray start --head`),
a two-trial sweep whose trials run as Ray tasks in the cluster's workers and report to one study."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from ray_cluster import ray_head

from spacetime_rl.studies.storage import open_storage

FAKE_APP = Path(__file__).with_name("fake_train_app.py")


@pytest.fixture
def ray_address() -> Iterator[str]:
    """A one-node Ray cluster with 2 CPUs, started and ended here (tests/ray_cluster.py)."""
    with ray_head() as head:
        yield head.address


def test_a_sweeps_trials_run_on_the_ray_cluster_and_report_to_one_study(
    tmp_path: Path, ray_address: str
) -> None:
    storage = f"journal://{tmp_path / 'study.log'}"
    sweep = subprocess.Popen(
        [
            sys.executable,
            str(FAKE_APP),
            "-m",
            "sweep=ppo",
            "hydra/launcher=ray",
            f"hydra.launcher.address={ray_address}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            f"sweep.storage={storage}",
            "sweep.study_name=on_ray",
            "hydra.sweeper.n_trials=2",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err
    assert f"Launching 2 jobs on Ray ({ray_address})" in out

    study = optuna.load_study(study_name="on_ray", storage=open_storage(storage))
    assert [(t.number, t.state.name) for t in study.trials] == [(0, "COMPLETE"), (1, "COMPLETE")]
    pids = {int((tmp_path / "sweep" / str(n) / "seed_0" / "pid").read_text()) for n in (0, 1)}
    assert sweep.pid not in pids  # run by Ray's workers, not in the sweep's process
    for n in (0, 1):
        assert "sweep.trial=" in (tmp_path / "sweep" / str(n) / ".hydra" / "overrides.yaml").read_text()
        # trials that may share a node do not pin their rollouts to its first core
        saved = yaml.safe_load((tmp_path / "sweep" / str(n) / ".hydra" / "config.yaml").read_text())
        assert saved["training"]["cpu_affinity"] is False
    assert (tmp_path / "sweep" / "trials.csv").is_file()


def test_a_plain_multirun_on_ray_leaves_its_trials_unpinned(tmp_path: Path, ray_address: str) -> None:
    """Hydra's own sweeper passes no sharing overrides: the launcher turns training.cpu_affinity off
    itself, since Ray places tasks by CPU count, not on cores, and trials share nodes."""
    result = subprocess.run(
        [
            sys.executable,
            str(FAKE_APP),
            "-m",
            "ppo.n_epochs=3,4",
            "hydra/launcher=ray",
            f"hydra.launcher.address={ray_address}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    for job in sorted((tmp_path / "sweep").glob("*/.hydra")):
        assert "cpu_affinity" not in (job / "overrides.yaml").read_text()
        assert yaml.safe_load((job / "config.yaml").read_text())["training"]["cpu_affinity"] is False
    assert len(list((tmp_path / "sweep").glob("*/.hydra"))) == 2


def test_without_ray_the_launcher_says_how_to_install_it(tmp_path: Path) -> None:
    """A Python where `import ray` fails (a stub on the path that raises ImportError)."""
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "ray.py").write_text("raise ImportError('No module named ray')\n")
    result = subprocess.run(
        [
            sys.executable,
            str(FAKE_APP),
            "-m",
            "sweep=ppo",
            "hydra/launcher=ray",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra.sweeper.n_trials=1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONPATH": str(stub)},
    )
    assert result.returncode == 1
    assert "hydra/launcher=ray needs Ray on this machine and every node" in result.stdout
    assert "'.[ray]'" in result.stdout
