"""Launching headless Godots (env.executable + env.project), with the simulator standing in for Godot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest

from spacetime_rl.config import EnvConfig
from spacetime_rl.envs import ServerPool

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "launcher-secret"


@pytest.fixture
def godot(tmp_path: Path) -> Path:
    """A stand-in `godot` binary: prints Godot's banner, then runs the simulator with Godot's flags."""
    script = tmp_path / "godot"
    script.write_text(
        "#!/bin/sh\n"
        'echo "Godot Engine v4.5.1.stable.official - https://godotengine.org"\n'
        f'exec "{sys.executable}" -m spacetime_rl.sim "$@"\n'
    )
    script.chmod(0o755)
    return script


def launched_by(project: Path) -> list[psutil.Process]:
    """Running processes whose command line names `project` (the instances' --path)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if str(project) in (process.info["cmdline"] or []):
            found.append(process)
    return found


def get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_pool_launches_godot_style_instances_and_stops_their_process_groups(godot: Path, tmp_path: Path):
    project = tmp_path / "project"
    project.mkdir()
    config = EnvConfig(
        kind="godot", executable=str(godot), project=str(project), num_environments=2, token=TOKEN
    )
    pool = ServerPool(config, agents=3, seed=5)
    urls = pool.start()
    try:
        assert len(set(urls)) == 2
        processes = [psutil.Process(pid) for pid in pool.pids]
        for process, url in zip(processes, urls, strict=True):
            assert os.getpgid(process.pid) == process.pid  # its own process group
            command = process.cmdline()
            assert command[-7:-5] == ["--path", str(project)] or str(project) in command
            assert "--headless" in command and "--rl-port=0" in command and "--rl-agents=3" in command
            assert not any(TOKEN in arg for arg in command)  # the token travels in the environment
            assert get(f"{url}/health") == 200
            assert get(f"{url}/rl/spec") == 401
            assert get(f"{url}/rl/spec", TOKEN) == 200
        assert ["--rl-seed=5" in p.cmdline() for p in processes] == [True, False]
    finally:
        pool.stop()
    _, alive = psutil.wait_procs(processes, timeout=10)
    assert not alive and not launched_by(project)


def test_a_missing_executable_names_the_key(tmp_path: Path):
    config = EnvConfig(kind="godot", executable=str(tmp_path / "no-godot"), project=str(tmp_path))
    with pytest.raises(Exception, match=r"env\.executable="):
        ServerPool(config).start()


def test_train_py_trains_on_launched_instances_and_leaves_no_orphans(godot: Path, tmp_path: Path):
    project, run_dir = tmp_path / "project", tmp_path / "run"
    project.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "env=godot",
            f"env.executable={godot}",
            f"env.project={project}",
            "env.num_environments=2",
            "env.agents_per_environment=2",
            "env.max_episode_steps=20",
            "ppo.n_steps=64",
            "ppo.batch_size=64",
            "ppo.n_epochs=1",
            "network=small",
            "training.total_timesteps=512",
            "training.save_freq=256",
            "training.eval_freq=512",
            "training.eval_episodes=2",
            "training.progress_bar=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert (run_dir / "checkpoints" / "vr_nav_model_256_steps.zip").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["num_timesteps"] == 512
    assert not launched_by(project)
