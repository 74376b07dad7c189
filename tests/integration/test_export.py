"""ONNX export: the graph matches SB3's deterministic action; the sidecar is what RLPolicy reads."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Final

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from omegaconf import OmegaConf
from sb3_contrib import RecurrentPPO
from stable_baselines3 import PPO

from spacetime_rl.artifacts import RUN_CONFIG, resolve_model
from spacetime_rl.config import (
    EnvConfig,
    NetworkConfig,
    PPOConfig,
    TaskConfig,
    TasksConfig,
    TrainConfig,
    TrainingConfig,
)
from spacetime_rl.envs.preprocessing import preprocess_observations
from spacetime_rl.errors import ConfigError
from spacetime_rl.export import export_onnx, main, sidecar_path
from spacetime_rl.protocol import wire

SMOOTHING = 0.3


#: Not the order of conf/task/multi.yaml, so a block sorted by name or taken from there would fail.
TASKS: Final = ("maze", "navigate", "obstacle_course")


def _tiny_run(run_dir: Path, tasks: TasksConfig | None = None, network: NetworkConfig | None = None) -> Path:
    """A tiny run with its composed config in .hydra/, as train.py leaves it."""
    from spacetime_rl.training import train

    config = TrainConfig(
        env=EnvConfig(agents_per_environment=8, max_episode_steps=40, action_smoothing=SMOOTHING),
        network=network or NetworkConfig(net_arch=[32, 32]),
        ppo=PPOConfig(n_steps=32, batch_size=128, n_epochs=1),
        training=TrainingConfig(
            total_timesteps=512, eval_freq=10_000, eval_episodes=4, progress_bar=False, torch_threads=1
        ),
        task=tasks or TasksConfig(),
    )
    train(config, run_dir)
    (run_dir / RUN_CONFIG).parent.mkdir()
    OmegaConf.save(OmegaConf.structured(config), run_dir / RUN_CONFIG)
    return run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_run(tmp_path_factory.mktemp("run"))


def _sb3_actions(run_dir: Path, obs: np.ndarray) -> np.ndarray:
    """SB3's deterministic actions for policy observations `obs`, through the run's VecNormalize."""
    model_path = run_dir / "best_models" / "best_model.zip"
    model = PPO.load(str(model_path), device="cpu")
    with open(model_path.with_name("best_model_vecnormalize.pkl"), "rb") as file:
        normalization = pickle.load(file)
    actions, _ = model.predict(normalization.normalize_obs(obs), deterministic=True)
    return actions


@pytest.fixture(scope="module")
def exported(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "policy.onnx"
    assert main([str(run_dir), str(out)]) == 0
    return out


def test_onnx_matches_sb3_deterministic_action(run_dir: Path, exported: Path) -> None:
    rng = np.random.default_rng(0)
    raw = rng.normal(scale=3.0, size=(1000, wire.OBSERVATION_SIZE))
    obs = preprocess_observations(raw, heading_frame=True)
    expected = _sb3_actions(run_dir, obs)

    session = ort.InferenceSession(str(exported))
    state = np.arange(1000, dtype=np.float32)
    actions, state_outs = session.run(["output", "state_outs"], {"obs": obs, "state_ins": state})
    np.testing.assert_allclose(actions, expected, atol=1e-5)
    assert np.abs(actions).max() <= 1.0
    np.testing.assert_array_equal(state_outs, state)
    (single,) = session.run(["output"], {"obs": obs[:1], "state_ins": state[:1]})  # dynamic batch
    np.testing.assert_allclose(single, expected[:1], atol=1e-5)


def test_graph_names_and_shapes(exported: Path) -> None:
    graph = onnx.load(str(exported)).graph
    onnx.checker.check_model(onnx.load(str(exported)))

    def shapes(values: list[onnx.ValueInfoProto]) -> dict[str, list[int | str]]:
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}

    assert shapes(graph.input) == {"obs": ["batch", 48], "state_ins": ["batch"]}
    assert shapes(graph.output) == {"output": ["batch", 3], "state_outs": ["batch"]}


def test_sidecar_is_what_rl_policy_reads(exported: Path) -> None:
    sidecar = json.loads(sidecar_path(exported).read_text())
    assert sidecar["protocol"] == wire.PROTOCOL_VERSION
    assert [(f["name"], f["size"]) for f in sidecar["observation_fields"]] == list(wire.OBSERVATION_FIELDS)
    assert sidecar["action_smoothing"] == SMOOTHING
    assert sidecar["heading_frame"] is True
    assert sidecar["action_repeat"] == wire.DEFAULT_ACTION_REPEAT
    assert sidecar["normalization_in_graph"] is True
    assert "observation_normalization" not in sidecar  # RLPolicy would normalise a second time
    assert len(sidecar["config_hash"]) == 16
    assert sidecar["tasks"] == []
    assert sidecar["inputs"]["obs"] == ["batch", wire.OBSERVATION_SIZE]


def test_a_model_outside_its_run_is_refused(run_dir: Path, tmp_path: Path) -> None:
    for name in ("final_model.zip", "final_model_vecnormalize.pkl"):
        (tmp_path / name).write_bytes((run_dir / name).read_bytes())
    with pytest.raises(ConfigError, match=r"not inside a training run directory"):
        export_onnx(resolve_model(str(tmp_path / "final_model.zip")), tmp_path / "p.onnx")
    assert main([str(run_dir), str(tmp_path / "p.bin")]) == 1


def test_a_multi_task_model_takes_the_task_block(tmp_path: Path) -> None:
    tasks = TasksConfig(
        name="multi",
        tasks={name: TaskConfig(scenario="open_field" if name == "navigate" else name) for name in TASKS},
    )
    run_dir = _tiny_run(tmp_path / "run", tasks)
    out = tmp_path / "policy.onnx"
    assert main([str(run_dir), str(out)]) == 0
    width = wire.OBSERVATION_SIZE + len(TASKS)

    sidecar = json.loads(sidecar_path(out).read_text())
    assert sidecar["tasks"] == list(TASKS)
    assert sidecar["inputs"]["obs"] == ["batch", width]
    (obs_input, _) = onnx.load(str(out)).graph.input
    assert [d.dim_param or d.dim_value for d in obs_input.type.tensor_type.shape.dim] == ["batch", width]

    rng = np.random.default_rng(1)
    raw = rng.normal(scale=3.0, size=(300, wire.OBSERVATION_SIZE))
    block = np.eye(len(TASKS), dtype=np.float32)[rng.integers(len(TASKS), size=300)]
    obs = np.concatenate([preprocess_observations(raw, heading_frame=True), block], axis=1)
    session = ort.InferenceSession(str(out))
    (actions,) = session.run(["output"], {"obs": obs, "state_ins": np.zeros(300, np.float32)})
    np.testing.assert_allclose(actions, _sb3_actions(run_dir, obs), atol=1e-5)


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    network = NetworkConfig(policy="MlpLstmPolicy", net_arch=[32], lstm_hidden_size=16, n_lstm_layers=2)
    return _tiny_run(tmp_path_factory.mktemp("lstm_run"), network=network)


def test_lstm_onnx_carries_the_state_as_sb3_contrib_does(lstm_run: Path, tmp_path: Path) -> None:
    """Over a sequence of steps, with an episode starting midway for some agents, the graph fed its
    own state_outs (zeros at an episode start) gives sb3-contrib's deterministic actions."""
    out = tmp_path / "policy.onnx"
    assert main([str(lstm_run), str(out)]) == 0
    sidecar = json.loads(sidecar_path(out).read_text())
    size = sidecar["state_size"]
    assert size == 2 * 2 * 16
    assert sidecar["inputs"]["lstm_state"] == sidecar["outputs"]["state_outs"] == ["batch", size]
    assert sidecar["inputs"]["state_ins"] == ["batch"]  # as godot_rl_agents' wrapper always sends it

    model_path = lstm_run / "best_models" / "best_model.zip"
    model = RecurrentPPO.load(str(model_path), device="cpu")
    with open(model_path.with_name("best_model_vecnormalize.pkl"), "rb") as file:
        normalization = pickle.load(file)
    session = ort.InferenceSession(str(out))
    rng = np.random.default_rng(1)
    agents, steps = 6, 20
    memory = np.zeros((agents, size), np.float32)
    wrapper_int = np.zeros(agents, np.float32)
    sb3_state = None
    starts = np.ones(agents, dtype=bool)
    moved = 0.0
    for step in range(steps):
        raw = rng.normal(scale=3.0, size=(agents, wire.OBSERVATION_SIZE))
        obs = preprocess_observations(raw, heading_frame=True)
        if step == 10:
            starts[::2] = True  # half the agents start a new episode
        memory[starts] = 0.0
        expected, sb3_state = model.predict(
            normalization.normalize_obs(obs), state=sb3_state, episode_start=starts, deterministic=True
        )
        feed = {"obs": obs, "state_ins": wrapper_int, "lstm_state": memory}
        actions, memory = session.run(["output", "state_outs"], feed)
        np.testing.assert_allclose(actions, expected, atol=1e-5, err_msg=f"step {step}")
        moved = max(moved, float(np.abs(memory).max()))
        starts[:] = False
    assert moved > 0.01, "the state never changed: the graph would not carry memory"
    one = {"obs": obs[:1], "state_ins": wrapper_int[:1], "lstm_state": np.zeros((1, size), np.float32)}
    (single,) = session.run(["output"], one)
    assert single.shape == (1, wire.ACTION_SIZE)  # one agent at a time, as RLPolicy calls it
