"""Faults on the way to a server: dead, hung or garbage-talking servers, bad URLs and specs, crashed
saves, and resuming exactly where a run stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import http.server
import json
import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import orjson
import pytest
from fault_injection import CORRUPTIONS, CorruptingProxy, server_process, stop_for

from spacetime_rl.artifacts import (
    check_same_save,
    load_state,
    save_snapshot,
    stats_path,
    write_atomically,
)
from spacetime_rl.config import (
    CurriculumConfig,
    CurriculumStageConfig,
    EnvConfig,
    NetworkConfig,
    PPOConfig,
    RewardConfig,
    TrainConfig,
    TrainingConfig,
)
from spacetime_rl.envs import SpaceTimeVecEnv, connector, make_clients
from spacetime_rl.envs.preprocessing import preprocess_observations
from spacetime_rl.errors import ConfigError, GodotConnectionError
from spacetime_rl.godot.launcher import ServerPool
from spacetime_rl.protocol import wire
from spacetime_rl.training import train

ROOT = Path(__file__).resolve().parents[2]
ENV = EnvConfig(
    num_environments=2,
    agents_per_environment=2,
    max_episode_steps=1000,  # no time limits: every truncation below is a fault's
    request_timeout=1.0,
    retry_backoff=0.01,
    retries=3,
)
ACTIONS = np.zeros((4, wire.ACTION_SIZE), dtype=np.float32)


def assert_truncated_at(infos: list[dict], dones: np.ndarray, agents: range, last_raw: np.ndarray) -> None:
    expected = preprocess_observations(last_raw, heading_frame=True)
    for agent in agents:
        assert dones[agent]
        info = infos[agent]
        assert info["TimeLimit.truncated"] and info["server_fault"]
        np.testing.assert_array_equal(info["terminal_observation"], expected[agent])


@contextlib.contextmanager
def recovering_venv(config: EnvConfig, seed: int | None = 0) -> Iterator[tuple[ServerPool, SpaceTimeVecEnv]]:
    """Launched simulators and a VecEnv over them that restarts a faulty one, as training does."""
    pool = ServerPool(config, seed=0, role="train")
    urls = pool.start()
    venv = SpaceTimeVecEnv(
        [connector(pool)(url) for url in urls],
        config,
        RewardConfig(),
        seed=seed,
        recover=pool.recovery(connector(pool)),
    )
    try:
        yield pool, venv
    finally:
        venv.close()
        pool.stop()


def test_a_killed_simulator_is_restarted_and_only_its_episodes_are_truncated(caplog):
    with recovering_venv(ENV) as (pool, venv):
        venv.reset()
        for _ in range(3):
            venv.step(ACTIONS)
        last_raw, old_url = venv._last_raw.copy(), pool.urls[0]
        killed = server_process(old_url)
        killed.kill()
        with caplog.at_level(logging.WARNING):
            obs, rewards, dones, infos = venv.step(ACTIONS)
        # The messages name the server: its role, index, port and process, and what was done.
        port = old_url.rsplit(":", 1)[1]
        named = f"train server 0 (python -m spacetime_rl.sim, port {port}, pid {killed.pid}) faulted"
        assert named in caplog.text and "its 2 episodes are truncated" in caplog.text
        assert "restarted train server 0 (python -m spacetime_rl.sim, port" in caplog.text
        assert "env.url" not in caplog.text
        assert_truncated_at(infos, dones, range(2), last_raw)
        assert not dones[2:].any() and "server_fault" not in infos[2]
        assert np.isfinite(obs).all() and np.isfinite(rewards).all()
        assert pool.restarts == 1 and venv.faults == 1 and venv.lost_agent_steps == 2
        assert pool.urls[0] != old_url
        for _ in range(3):
            _, _, dones, _ = venv.step(ACTIONS)  # the new server serves
            assert not dones.any()


def test_a_hung_simulator_is_restarted_after_the_request_timeout():
    with recovering_venv(ENV) as (pool, venv):
        venv.reset()
        timer = stop_for(server_process(pool.urls[1]), ENV.request_timeout * 3)
        _, _, dones, infos = venv.step(ACTIONS)
        timer.cancel()
        assert dones[2:].all() and infos[3]["server_fault"] and not dones[:2].any()
        assert pool.restarts == 1


def test_restarts_are_rate_limited():
    config = dataclasses.replace(ENV, num_environments=1, max_restarts=1)
    with recovering_venv(config, seed=None) as (pool, venv):
        venv.reset()
        server_process(pool.urls[0]).kill()
        venv.step(ACTIONS[:2])
        server_process(pool.urls[0]).kill()
        with pytest.raises(GodotConnectionError, match=r"env\.max_restarts=1"):
            venv.step(ACTIONS[:2])


@pytest.fixture
def attached_via_proxy() -> Iterator[tuple[CorruptingProxy, SpaceTimeVecEnv]]:
    """One launched simulator, reached through a corrupting proxy as an attached Godot would be."""
    with ServerPool(dataclasses.replace(ENV, num_environments=1), seed=0) as urls:
        proxy = CorruptingProxy(urls[0])
        config = dataclasses.replace(ENV, kind="godot", url=proxy.url, num_environments=1)
        attached = ServerPool(config)
        venv = SpaceTimeVecEnv(
            make_clients(attached.start(), config),
            config,
            RewardConfig(),
            recover=attached.recovery(connector(attached)),
        )
        try:
            yield proxy, venv
        finally:
            venv.close()
            proxy.close()


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_garbage_answer_is_logged_and_never_reaches_the_policy(attached_via_proxy, kind, caplog):
    proxy, venv = attached_via_proxy
    venv.reset()
    venv.step(ACTIONS[:2])
    last_raw = venv._last_raw.copy()
    proxy.corrupt(kind)
    with caplog.at_level(logging.WARNING):
        obs, rewards, dones, infos = venv.step(ACTIONS[:2])
    assert proxy.corrupted == 1
    assert_truncated_at(infos, dones, range(2), last_raw)
    assert np.isfinite(obs).all() and obs.shape == (2, wire.OBSERVATION_SIZE)
    assert np.isfinite(rewards).all() and venv.faults == 1
    assert "/rl/step" in caplog.text and "Protocol error" in caplog.text
    _, _, dones, _ = venv.step(ACTIONS[:2])
    assert not dones.any()


def test_an_attached_server_that_stays_away_gives_up_after_its_retries(attached_via_proxy):
    proxy, venv = attached_via_proxy
    venv.reset()
    server_process(proxy.target).kill()
    with pytest.raises(GodotConnectionError, match=r"env\.retries=3") as failure:
        venv.step(ACTIONS[:2])
    assert "curl" in str(failure.value) and proxy.url in str(failure.value)


# ---------------------------------------------------------------- train.py refuses bad servers cleanly


def start_train(*overrides: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={cwd}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class _WrongSpecServer(http.server.BaseHTTPRequestHandler):
    """Answers like a Godot of another protocol version, with larger observations."""

    def _answer(self, body: dict) -> None:
        data = orjson.dumps(body)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        fields = [{"name": name, "size": size} for name, size in wire.OBSERVATION_FIELDS]
        self._answer(
            {
                "protocol": 2,
                "num_agents": 4,
                "observation_size": 50,
                "action_size": 3,
                "observation_fields": fields,
                "physics_hz": 90,
                "action_repeat": 9,
            }
        )

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self._answer({"scene": wire.DEFAULT_SCENE, "loaded": True})

    def log_message(self, *args: object) -> None:
        pass


def test_train_py_refuses_unreachable_and_mismatched_servers_cleanly(tmp_path):
    """Both runs at once (start-up dominates): each exits 1 with the URL, the values and the fix."""
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _WrongSpecServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        unreachable = start_train(
            "env=godot", f"env.url={closed}", "env.connect_timeout=5", cwd=tmp_path / "a"
        )
        mismatched = start_train(
            "env=godot", f"env.url=http://127.0.0.1:{server.server_port}", cwd=tmp_path / "b"
        )
        outputs = [process.communicate(timeout=300) for process in (unreachable, mismatched)]
    finally:
        server.shutdown()
    for process, (_, stderr) in zip((unreachable, mismatched), outputs, strict=True):
        assert process.returncode == 1, stderr
        assert "Traceback" not in stderr
    unreachable_output, mismatched_output = ("".join(output) for output in outputs)
    assert f"Cannot connect to Godot HTTP API at {closed} (env.url)" in unreachable_output
    assert f"curl {closed}/health" in unreachable_output
    assert "protocol is 2, client expects 1" in mismatched_output
    assert "observation_size is 50, client expects 48" in mismatched_output


# ---------------------------------------------------------------- saves and resume


def test_a_crash_while_saving_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "model.zip"
    write_atomically(path, lambda temporary: Path(temporary).write_bytes(b"previous"))

    def crash(source: str, destination: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, lambda temporary: Path(temporary).write_bytes(b"half-writ"))
    assert path.read_bytes() == b"previous"
    assert [p.name for p in path.parent.iterdir()] == ["model.zip"]  # no temporary left behind


def test_a_fixed_name_snapshot_cut_between_its_files_is_refused_not_used(tmp_path, monkeypatch):
    import gymnasium as gym
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    def load(path: Path) -> None:
        venv = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
        check_same_save(
            path, PPO.load(str(path)), VecNormalize.load(str(stats_path(path)), venv), load_state(path)
        )

    env = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, policy_kwargs={"net_arch": [8]})
    path = tmp_path / "best_models" / "best_model.zip"
    save_snapshot(model, env, path, {"metrics": {"eval/success_rate": 0.5}})
    load(path)  # one whole save: accepted

    real_replace = os.replace

    def crash_on_the_zip(source: str, destination: str) -> None:
        if str(destination).endswith(".zip"):
            raise OSError("killed")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", crash_on_the_zip)
    with pytest.raises(OSError, match="killed"):
        save_snapshot(model, env, path, {"metrics": {"eval/success_rate": 0.9}})
    monkeypatch.setattr(os, "replace", real_replace)
    with pytest.raises(ConfigError, match="come from different saves") as info:
        load(path)
    assert "best_model.zip" in str(info.value) and "best_model_vecnormalize.pkl" in str(info.value)


def resume_config(total_timesteps: int, resume: Path | None = None) -> TrainConfig:
    return TrainConfig(
        env=EnvConfig(agents_per_environment=4, max_episode_steps=40, min_goal_distance=1.0),
        network=NetworkConfig(net_arch=[16, 16]),
        ppo=PPOConfig(n_steps=32, batch_size=64, n_epochs=1),
        curriculum=CurriculumConfig(
            enabled=True,
            stages=[CurriculumStageConfig("near", 2.0, 300), CurriculumStageConfig("far", 4.0, 10_000)],
        ),
        training=TrainingConfig(
            total_timesteps=total_timesteps,
            save_freq=128,
            eval_freq=100_000,
            eval_episodes=4,
            progress_bar=False,
            torch_threads=1,
        ),
        resume=None if resume is None else str(resume),
    )


def test_resume_continues_exactly(tmp_path):
    """N steps in one go vs N/2, then resume from the final model for N/2 more.

    Equal: the step count, the curriculum state, the number of observations VecNormalize has seen
    (plus one reset batch: the resumed run starts with a fresh reset). Close, not equal: the running
    means and variances, since the resumed run's episodes restart and draw other goals.
    """
    whole, first, second = tmp_path / "whole", tmp_path / "first", tmp_path / "second"
    train(resume_config(512), whole)
    train(resume_config(256), first)
    train(resume_config(512, resume=first / "final_model.zip"), second)

    one, split = load_state(whole / "final_model.zip"), load_state(second / "final_model.zip")
    assert one["num_timesteps"] == split["num_timesteps"] == 512
    assert one["curriculum"] == split["curriculum"] and one["curriculum"]["stage"] == 1
    stats = [pickle.loads(stats_path(d / "final_model.zip").read_bytes()) for d in (whole, second)]
    num_envs = 4
    assert stats[1].obs_rms.count == stats[0].obs_rms.count + num_envs
    assert stats[1].ret_rms.count == stats[0].ret_rms.count
    np.testing.assert_allclose(stats[1].obs_rms.mean, stats[0].obs_rms.mean, atol=0.5)
    assert json.loads((second / "metrics.json").read_text())["num_timesteps"] == 512
