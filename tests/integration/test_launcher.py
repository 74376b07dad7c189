"""Launching headless Godots (env.executable + env.project), with the simulator standing in for Godot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest
from fake_godot import fake_godot

from spacetime_rl.config import BUSY_POLL_SECONDS, EnvConfig, RewardConfig
from spacetime_rl.envs import SpaceTimeVecEnv, make_clients
from spacetime_rl.errors import ConfigError, GodotTimeoutError
from spacetime_rl.godot.launcher import CLASS_CACHE, ServerPool

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "launcher-secret"


def invocations(godot: Path) -> list[list[str]]:
    return [line.split() for line in Path(f"{godot}.log").read_text().splitlines()]


@pytest.fixture
def godot(tmp_path: Path) -> Path:
    return fake_godot(tmp_path / "godot")


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
        with urllib.request.urlopen(request, timeout=30) as answer:
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


def test_godot_is_imported_once_then_launched_without_xr_and_heard_on_stderr(tmp_path: Path):
    """A project whose class cache predates the addon is imported once (a headless run before that
    cannot resolve the addon's class_name scripts); every run passes --xr-mode off; a ready line that
    only reaches stderr (a release export) is enough."""
    godot = fake_godot(tmp_path / "godot", stdout_to_stderr=True)
    project = tmp_path / "project"
    (project / CLASS_CACHE).parent.mkdir(parents=True)
    (project / CLASS_CACHE).write_text("list=[]\n")  # imported before the addon was copied in
    config = EnvConfig(kind="godot", executable=str(godot), project=str(project), connect_timeout=60)
    for _ in range(2):
        pool = ServerPool(config, agents=1)
        pool.start()
        try:
            assert get(f"{pool.urls[0]}/health") == 200
        finally:
            pool.stop()
    runs = invocations(godot)
    assert runs[0] == ["--headless", "--xr-mode", "off", "--path", str(project), "--import"]
    assert len(runs) == 3 and not any("--import" in run for run in runs[1:])  # once, not per start
    for run in runs[1:]:
        assert run[: run.index("--")] == ["--headless", "--xr-mode", "off", "--path", str(project)]


def test_an_import_that_does_not_register_the_addon_names_the_addon_folder(tmp_path: Path):
    godot = fake_godot(tmp_path / "godot", imports=False)
    config = EnvConfig(kind="godot", executable=str(godot), project=str(tmp_path))
    with pytest.raises(
        ConfigError, match=r"env\.project=.*--import.*exited with code 0.*addons/spacetime_rl"
    ):
        ServerPool(config).start()
    assert len(invocations(godot)) == 1  # no server was started


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


# ---------------------------------------------------------------- busy polling


ON = BUSY_POLL_SECONDS


@pytest.mark.parametrize(
    ("overrides", "cores", "client", "server"),
    [
        ({}, 2, ON, ON),  # one simulator and the trainer fit two cores
        ({"num_environments": 2}, 2, 0.0, ON),  # three processes share two cores: the client sleeps
        ({"num_environments": 2}, 3, ON, ON),
        ({"kind": "godot", "url": "http://127.0.0.1:8080"}, 8, 0.0, 0.0),  # auto never spins for Godot
        ({"busy_poll": "on", "num_environments": 4}, 2, ON, ON),
        ({"busy_poll": "off"}, 8, 0.0, 0.0),
    ],
)
def test_busy_poll_auto_spins_the_client_only_when_every_process_has_a_core(
    monkeypatch, overrides, cores, client, server
):
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(cores)))
    config = EnvConfig(**overrides)
    assert (config.client_busy_poll(), config.server_busy_poll()) == (client, server)


def test_busy_polling_servers_and_clients_step_exactly_as_sleeping_ones():
    observations = {}
    for mode in ("on", "off"):
        config = EnvConfig(num_environments=1, agents_per_environment=8, busy_poll=mode)
        pool = ServerPool(config, seed=3)
        with pool as urls:
            (pid,) = pool.pids
            assert ("--busy-poll-us" in psutil.Process(pid).cmdline()) == (mode == "on")
            venv = SpaceTimeVecEnv(make_clients(urls, config), config, RewardConfig(), seed=3)
            rng = np.random.default_rng(0)
            rows = [venv.reset()]
            rows += [venv.step(rng.uniform(-1, 1, (8, 3)).astype(np.float32))[0] for _ in range(30)]
            venv.close()
        observations[mode] = np.stack(rows)
    np.testing.assert_array_equal(observations["on"], observations["off"])


def test_the_busy_poll_selector_returns_what_arrives_while_it_spins():
    import selectors
    import socket
    import threading

    from spacetime_rl.sim.__main__ import BusyPollSelector

    reader, writer = socket.socketpair()
    with reader, writer, BusyPollSelector(5.0) as selector:
        selector.register(reader, selectors.EVENT_READ)
        assert selector.select(0) == []
        threading.Timer(0.01, writer.send, (b"x",)).start()
        (key, events), *rest = selector.select(None)
        assert key.fileobj is reader and events == selectors.EVENT_READ and not rest


def test_simulators_stop_by_themselves_when_the_launcher_is_killed():
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from spacetime_rl.config import EnvConfig\n"
            "from spacetime_rl.godot.launcher import ServerPool\n"
            "pool = ServerPool(EnvConfig(num_environments=2, agents_per_environment=2), seed=0)\n"
            "pool.start()\n"
            "print(*pool.pids, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdout is not None
    servers = [psutil.Process(int(pid)) for pid in launcher.stdout.readline().split()]
    assert len(servers) == 2 and all(server.is_running() for server in servers)
    launcher.kill()  # SIGKILL: no atexit, no chance to stop the servers
    launcher.wait()
    _, alive = psutil.wait_procs(servers, timeout=30)
    for server in alive:
        server.kill()
    assert not alive, "a simulator outlived its killed launcher"


def test_launched_simulators_get_the_step_delay_and_take_it() -> None:
    """env.step_delay_ms reaches every launched simulator, which then holds each step's answer."""
    config = EnvConfig(
        num_environments=2, agents_per_environment=2, step_delay_ms=600000, request_timeout=1.0
    )
    pool = ServerPool(config)
    urls = pool.start()
    try:
        for pid in pool.pids:
            command = psutil.Process(pid).cmdline()
            assert command[command.index("--step-delay-ms") + 1] == "600000"
        venv = SpaceTimeVecEnv(make_clients(urls, config), config, RewardConfig())
        try:
            venv.reset()  # resets do not wait
            with pytest.raises(GodotTimeoutError, match="/rl/step"):
                venv.step(np.zeros((4, 3), dtype=np.float32))
        finally:
            venv.close()
    finally:
        pool.stop()
    assert "--step-delay-ms" not in ServerPool(EnvConfig())._command(0)
