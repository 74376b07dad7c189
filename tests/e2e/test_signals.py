"""Ctrl-C and SIGTERM during `train.py`: a checkpoint is saved, the servers stop, the exit code tells which."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from .runs import ROOT, TINY_RUN

LONG_RUN = [
    *TINY_RUN,
    "ppo.n_epochs=1",
    "training.total_timesteps=100000000",  # never reached: the signal ends the run
    "training.save_freq=512",
    "training.eval_freq=100000000",
]
STARTUP_LIMIT = 180.0  # s; only bounds a broken run, never a pass condition


def wait_for(predicate, what: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + STARTUP_LIMIT
    while not predicate():
        if process.poll() is not None:
            pytest.fail(f"train.py exited with {process.returncode} before {what}: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} after {STARTUP_LIMIT} s")
        time.sleep(0.05)


def start_long_run(run_dir: Path, *overrides: str) -> subprocess.Popen[str]:
    """`train.py` with LONG_RUN and `overrides`, writing to `run_dir`, in the background."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *LONG_RUN, *overrides, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigint_and_sigterm_save_a_checkpoint_and_stop_the_servers(tmp_path: Path):
    """Two runs at once (start-up dominates): Ctrl-C exits 130, SIGTERM 143."""
    runs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        run_dir = tmp_path / sig.name
        process = start_long_run(run_dir)
        runs[sig] = (process, run_dir / "checkpoints")
    for sig, (process, checkpoints) in runs.items():
        wait_for(
            lambda c=checkpoints: any(c.glob("*_steps.zip")), f"{sig.name} run's first checkpoint", process
        )
    for sig, (process, checkpoints) in runs.items():
        servers = psutil.Process(process.pid).children(recursive=True)
        assert len(servers) == 2  # one training and one evaluation simulator
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=STARTUP_LIMIT)

        assert process.returncode == 128 + sig, stderr
        assert "Traceback" not in stderr
        assert f"interrupted by {sig.name}" in stdout + stderr and "resume=" in stdout + stderr
        saved = re.search(r"saved (\S+vr_nav_model_(\d+)_steps\.zip)", stdout + stderr)
        assert saved, stdout + stderr
        steps = int(saved.group(2))
        # the last complete state: a whole number of rollouts (64 steps x 4 agents), not the cut one
        assert steps >= 512 and steps % 256 == 0
        state = json.loads((checkpoints / f"vr_nav_model_{steps}_steps_state.json").read_text())
        assert state["num_timesteps"] == steps
        assert (checkpoints / f"vr_nav_model_{steps}_steps_vecnormalize.pkl").is_file()
        assert not list(checkpoints.glob(".*.tmp"))
        _, alive = psutil.wait_procs(servers, timeout=10)
        assert not alive


def test_ctrl_c_during_a_long_update_stops_at_once_and_saves_the_last_complete_state(tmp_path: Path) -> None:
    """An update of 200,000 epochs would take many minutes: Ctrl-C must cut it, not wait for it, and
    the checkpoint must be the state before it (its rollout untrained), so a resume ends exactly."""
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir, "ppo.n_epochs=200000", "training.save_freq=100000000")
    # The first rollout (256 steps) is collected in well under a second; then the update starts.
    wait_for(lambda: (run_dir / "tensorboard").is_dir(), "the run's start", process)
    time.sleep(5.0)  # inside the first update by now (it lasts minutes)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=STARTUP_LIMIT)  # without the fix: minutes

    assert process.returncode == 130, stderr
    saved = re.search(r"saved (\S+vr_nav_model_(\d+)_steps\.zip)", stdout + stderr)
    assert saved and int(saved.group(2)) == 0, stdout + stderr  # the first update was cut and undone
    state = json.loads(Path(saved.group(1).replace(".zip", "_state.json")).read_text())
    assert state["num_timesteps"] == 0


def test_ctrl_c_in_an_overlapped_rollout_saves_a_checkpoint_and_exits_130(tmp_path: Path) -> None:
    """Two servers, training.rollout=overlapped: steps are in flight when the signal comes."""
    run_dir = tmp_path / "run"
    process = start_long_run(run_dir, "env.num_environments=2", "training.rollout=overlapped")
    checkpoints = run_dir / "checkpoints"
    wait_for(lambda: any(checkpoints.glob("*_steps.zip")), "the first checkpoint", process)
    servers = psutil.Process(process.pid).children(recursive=True)
    assert len(servers) == 3  # two training and one evaluation simulator
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=STARTUP_LIMIT)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    output = stdout + stderr
    assert "training.rollout=overlapped" in output and "interrupted by SIGINT" in output
    saved = re.search(r"saved (\S+vr_nav_model_(\d+)_steps\.zip)", output)
    assert saved, output
    steps = int(saved.group(2))
    assert steps >= 512 and steps % 512 == 0  # whole rollouts: 64 steps x 8 agents
    state = json.loads((checkpoints / f"vr_nav_model_{steps}_steps_state.json").read_text())
    assert state["num_timesteps"] == steps
    assert (
        yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())["training"]["rollout"]
        == "overlapped"
    )
    _, alive = psutil.wait_procs(servers, timeout=10)
    assert not alive
