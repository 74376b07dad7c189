"""evaluate.py, `python -m spacetime_rl.compare` and `python -m spacetime_rl.export` as users run them,
on a two-run multirun of train.py with tiny settings."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from spacetime_rl.compare import learning_curves_figure, read_run

from .runs import ROOT, TINY_RUN

TINY = [
    *TINY_RUN,
    "ppo.n_epochs=2",
    "training.eval_freq=500",
]


#: The multirun's job folders: <job number>_<run name>, the name defaulting to the preset.
FIRST, SECOND = "0_quick_test", "1_quick_test"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def multirun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("multirun")
    result = run(
        "train.py", "-m", "training.total_timesteps=1000,1500", *TINY, f"hydra.sweep.dir={sweep_dir}"
    )
    assert result.returncode == 0, result.stderr
    return sweep_dir


def test_compare_writes_sorted_csv_and_learning_curves(multirun: Path) -> None:
    result = run("-m", "spacetime_rl.compare", str(multirun))
    assert result.returncode == 0, result.stderr
    with open(multirun / "comparison.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert sorted(row["run"] for row in rows) == [FIRST, SECOND]
    assert {row["name"] for row in rows} == {"quick_test"}  # the preset's, as no name= was given
    values = [float(row["value"]) for row in rows]
    assert values == sorted(values, reverse=True)
    assert {row["num_timesteps"] for row in rows} == {"1024", "1536"}
    assert all("training.total_timesteps=" in row["overrides"] for row in rows)
    assert all(row["best/eval/success_rate"] != "" for row in rows)
    with Image.open(multirun / "learning_curves.png") as image:
        assert image.format == "PNG" and 500 <= image.width <= 2000


def test_evaluate_a_run_directory_with_its_own_settings(multirun: Path, tmp_path: Path) -> None:
    result = run(
        "evaluate.py",
        f"model={multirun / FIRST}",
        "episodes=4",
        "plot_episodes=2",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr
    assert "eval/success_rate" in result.stdout
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["run_dir"] == str(multirun / FIRST)
    assert metrics["env"]["agents_per_environment"] == 4  # the run's, not conf/env/sim.yaml's 16
    assert len(metrics["per_episode"]) == 4
    assert (tmp_path / "eval" / "paths.png").stat().st_size > 1000


def test_evaluate_reports_a_bad_model_cleanly(tmp_path: Path) -> None:
    result = run("evaluate.py", f"model={tmp_path / 'missing'}", f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert "model=" in result.stderr + result.stdout and "Traceback" not in result.stderr


def test_export_cli(multirun: Path, tmp_path: Path) -> None:
    out = tmp_path / "policy.onnx"
    result = run("-m", "spacetime_rl.export", str(multirun / SECOND), str(out))
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0 and json.loads(out.with_suffix(".json").read_text())["protocol"] == 1


def test_a_curve_no_run_logged_says_so_in_the_picture(multirun: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(multirun / FIRST / ".hydra", bare / ".hydra")
    (ax, _) = learning_curves_figure([read_run(bare, None)], ["bare"]).axes
    assert not ax.lines and ax.texts[0].get_text() == "no data: no run logged eval/success_rate"


def test_evaluate_help_lists_only_the_groups_it_takes() -> None:
    result = run("evaluate.py", "--help")
    assert result.returncode == 0, result.stderr
    for rejected in ("preset:", "ppo:", "sweep:", "network:", "curriculum:"):
        assert rejected not in result.stdout, rejected
    conf = ROOT / "conf"
    for group in ("env", "reward", "task"):
        for option in sorted(p.stem for p in (conf / group).glob("*.yaml")):
            assert option in result.stdout, f"{group}={option}"


def test_evaluations_go_beside_the_run_and_compare_ignores_them(multirun: Path) -> None:
    result = run("evaluate.py", f"model={multirun / FIRST}", "episodes=2", "plot_episodes=0")
    assert result.returncode == 0, result.stderr
    (written,) = (multirun / FIRST / "evaluations").iterdir()
    assert (written / "eval" / "metrics.json").is_file()
    assert str(written / "eval") in result.stdout + result.stderr  # says where it went
    compared = run("-m", "spacetime_rl.compare", str(multirun), "--out", str(written / "cmp"))
    assert compared.returncode == 0, compared.stderr
    with open(written / "cmp" / "comparison.csv", newline="") as file:
        assert sorted(row["run"] for row in csv.DictReader(file)) == [FIRST, SECOND]
