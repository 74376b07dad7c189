"""`env.launcher=ray` on a real Ray cluster started here (tests/ray_cluster.py): `train.py` runs its
simulators as Ray actors, restarts a killed one through its actor, and leaves no actor, placement
group or simulator behind, at a normal exit or after Ctrl-C; the refusals name the keys and numbers."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import ray
import yaml
from fake_godot import fake_godot
from postgres import free_port
from ray_cluster import RayHead, ray_head

from spacetime_rl.config import EnvConfig
from spacetime_rl.errors import ConfigError
from spacetime_rl.godot.launcher import server_pool
from spacetime_rl.godot.ray_pool import ACTOR_NAMESPACE

from .runs import ROOT, TINY_RUN
from .test_signals import STARTUP_LIMIT, wait_for

#: Two training servers and the evaluation server, one CPU each.
CPUS = 3


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    with ray_head(num_cpus=CPUS) as started:
        yield started


def simulators(head: RayHead) -> list[psutil.Process]:
    """The simulators the cluster's actors started (each in its own process group, under its actor)."""
    return [
        process
        for process in psutil.Process(head.pid).children(recursive=True)
        if "spacetime_rl.sim" in " ".join(process.cmdline())
    ]


def train(head: RayHead, run_dir: Path, *overrides: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *TINY_RUN,
            "ppo.n_epochs=1",
            "training.save_freq=512",
            "env.num_environments=2",
            "env.launcher=ray",
            f"env.ray_address={head.address}",
            f"hydra.run.dir={run_dir}",
            *overrides,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_nothing_left(head: RayHead) -> None:
    """No simulator under the cluster, no server actor alive, every placement group removed."""
    _, alive = psutil.wait_procs(simulators(head), timeout=10)
    assert not alive
    ray.init(address=head.address, log_to_driver=False)
    try:
        assert not [
            a for a in ray.util.list_named_actors(all_namespaces=True) if a["namespace"] == ACTOR_NAMESPACE
        ]
        assert {group["state"] for group in ray.util.placement_group_table().values()} <= {"REMOVED"}
    finally:
        ray.shutdown()


def test_train_runs_its_servers_as_ray_actors_and_restarts_a_killed_one_through_its_actor(
    head: RayHead, tmp_path: Path
) -> None:
    process = train(head, tmp_path, "training.total_timesteps=6144", "training.eval_freq=3072")
    wait_for(lambda: any((tmp_path / "checkpoints").glob("*_steps.zip")), "first checkpoint", process)
    # the first training server: its seed is training.seed + 0 (the evaluation server's differs)
    servers = simulators(head)
    assert len(servers) == CPUS  # under the cluster's actors, none under train.py
    assert not set(psutil.Process(process.pid).children(recursive=True)) & set(servers)
    (victim,) = [p for p in servers if p.cmdline()[p.cmdline().index("--seed") + 1] == "0"]
    victim.kill()
    stdout, stderr = process.communicate(timeout=STARTUP_LIMIT)

    assert process.returncode == 0, stderr
    output = stdout + stderr
    assert (
        f"restarted train server 0 (python -m spacetime_rl.sim as a Ray actor on node {head.node}" in output
    )
    saved = yaml.safe_load((tmp_path / ".hydra" / "config.yaml").read_text())
    assert saved["env"]["launcher"] == "ray" and saved["env"]["ray_address"] == head.address
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["server_faults"]["restarts"] == 1 and metrics["num_timesteps"] == 6144
    train_servers, eval_servers = metrics["servers"]["train"], metrics["servers"]["eval"]
    assert train_servers["launcher"] == eval_servers["launcher"] == "ray"
    assert [s["actor"].split("-")[:2] for s in train_servers["servers"]] == [["train", "0"], ["train", "1"]]
    for server in train_servers["servers"] + eval_servers["servers"]:  # at the address Ray has for the node
        assert server["node"] == head.node and server["url"].startswith(f"http://{head.node}:")
    assert victim.pid not in [s["pid"] for s in train_servers["servers"]]  # server 0 runs anew
    assert_nothing_left(head)


def test_ctrl_c_saves_a_checkpoint_and_leaves_no_actor_group_or_simulator(
    head: RayHead, tmp_path: Path
) -> None:
    process = train(head, tmp_path, "training.total_timesteps=100000000", "training.eval_freq=100000000")
    wait_for(lambda: any((tmp_path / "checkpoints").glob("*_steps.zip")), "first checkpoint", process)
    assert len(simulators(head)) == CPUS
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=STARTUP_LIMIT)

    assert process.returncode == 130, stderr
    assert "interrupted by SIGINT" in stdout + stderr and "Traceback" not in stderr
    assert_nothing_left(head)


def test_a_godot_whose_actor_died_restarts_in_a_new_actor_on_the_node_s_address_with_a_token(
    head: RayHead, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "project.godot").touch()
    config = EnvConfig(
        kind="godot",
        executable=str(fake_godot(tmp_path / "godot")),
        project=str(project),
        agents_per_environment=2,
        launcher="ray",
        ray_address=head.address,
    )
    pool = server_pool(config, seed=0)
    with pool as (url,):
        assert pool.config.token and config.token is None  # generated for the run, never saved
        first = pool.record()["servers"][0]
        command = psutil.Process(first["pid"]).cmdline()
        assert f"--rl-host={head.node}" in command and f"--rl-allowed-host={head.node}" in command
        assert url.startswith(f"http://{head.node}:")
        ray.kill(ray.get_actor(first["actor"], namespace=ACTOR_NAMESPACE))
        _, alive = psutil.wait_procs([psutil.Process(first["pid"])], timeout=10)
        assert not alive  # Ray ends a killed actor's child processes, a Godot (without --parent-pid) too
        url = asyncio.run(pool.restart(0))
        second = pool.record()["servers"][0]
        assert second["pid"] != first["pid"] and second["url"] == url and pool.restarts == 1
        assert ray.get_actor(second["actor"], namespace=ACTOR_NAMESPACE)  # a new actor, same name and bundle
    assert not ray.is_initialized()
    assert_nothing_left(head)


def test_a_cluster_without_a_cpu_per_server_is_refused_with_the_numbers(head: RayHead) -> None:
    config = EnvConfig(num_environments=CPUS, launcher="ray", ray_address=head.address)
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        server_pool(config, role="train").start()
    message = str(error.value)
    assert message.startswith(
        "env.launcher=ray reserves one CPU per server, 4 for 3 server(s) (env.num_environments=3)"
    )
    assert f"the Ray cluster at {head.address} has 3 CPUs" in message and "--num-cpus" in message
    assert time.monotonic() - started < 30 and not ray.is_initialized()


def test_a_node_without_env_executable_is_named(head: RayHead, tmp_path: Path) -> None:
    config = EnvConfig(
        kind="godot",
        executable=str(tmp_path / "godot"),
        project=str(tmp_path),
        agents_per_environment=2,
        launcher="ray",
        ray_address=head.address,
    )
    with pytest.raises(ConfigError) as error:
        server_pool(config).start()
    assert str(error.value).startswith(
        f"env.executable={str(tmp_path / 'godot')!r} is not an executable file on Ray node {head.node}"
    )
    assert not ray.is_initialized()


def test_an_address_where_no_ray_listens_is_refused_at_once() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ConfigError) as error:
        server_pool(EnvConfig(launcher="ray", ray_address=address)).start()
    assert str(error.value).startswith(f"env.launcher=ray: nothing answers at env.ray_address={address!r}")
    assert "ray start --head" in str(error.value) and "env.launcher=local" in str(error.value)
    assert time.monotonic() - started < 10


def test_without_ray_the_launcher_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"env.launcher=ray needs Ray, which is not installed: pip install"):
        server_pool(EnvConfig(launcher="ray")).start()
