"""optuna-dashboard on a finished sweep's study, through `python -m spacetime_rl.studies.dashboard`:
the trials of a real (fake-training) sweep come back from the dashboard's HTTP API."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from fake_sweep import fake_sweep_command
from postgres import free_port

ROOT = Path(__file__).resolve().parents[2]


def run_sweep(sweep_dir: Path, study_name: str, *overrides: str) -> None:
    command = fake_sweep_command(
        sweep_dir, f"sweep.study_name={study_name}", "hydra.sweeper.n_trials=2", *overrides
    )
    result = subprocess.run(command, cwd=sweep_dir.parent, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


def get(port: int, path: str, server: subprocess.Popen[str]) -> Any:
    """GET the dashboard's JSON at `path`, waiting for the server to listen (while it runs)."""
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
                return json.load(answer)
        except urllib.error.URLError as err:
            if not isinstance(err.reason, ConnectionRefusedError):
                raise
            assert server.poll() is None, server.communicate()
            time.sleep(0.2)


@pytest.mark.parametrize("storage", ["sqlite", "journal", pytest.param("postgresql", marks=pytest.mark.slow)])
def test_the_dashboard_shows_a_finished_sweeps_trials(
    tmp_path: Path, storage: str, request: pytest.FixtureRequest
) -> None:
    sweep_dir, study_name = tmp_path / "sweep", f"seen_on_{storage}"
    if storage == "journal":
        target = f"journal://{tmp_path / 'studies' / 'seen.log'}"
    elif storage == "postgresql":  # the session's server: other tests' studies are there too
        target = request.getfixturevalue("postgres_url")
    else:
        target = str(sweep_dir)  # the folder: its study.db, found through multirun.yaml
    run_sweep(sweep_dir, study_name, *([f"sweep.storage={target}"] if storage != "sqlite" else []))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "spacetime_rl.studies.dashboard", target, "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        studies = get(port, "/api/studies", server)["study_summaries"]
        names = {study["study_name"]: study["study_id"] for study in studies}
        assert study_name in names, names
        assert storage == "postgresql" or len(names) == 1, names
        detail = get(port, f"/api/studies/{names[study_name]}", server)
        assert [(trial["number"], trial["state"]) for trial in detail["trials"]] == [
            (0, "Complete"),
            (1, "Complete"),
        ]
        assert all(
            {param["name"] for param in trial["params"]} >= {"ppo.learning_rate"}
            for trial in detail["trials"]
        )
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_a_target_that_is_neither_a_storage_nor_a_sweep_folder_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "spacetime_rl.studies.dashboard", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"{tmp_path} is neither a storage URL nor a sweep folder" in result.stderr
