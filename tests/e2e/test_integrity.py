"""Records are the truth: for a matrix of overrides, everything a run writes agrees with what was typed.

Each case runs `train.py` as a user would, then checks that `.hydra/config.yaml`, `--cfg job`, the
config composed in-process, the saved model's hyperparameters, the env and reward settings the
VecEnv actually ran with (metrics.json `env_used`), the step counts in metrics.json and the export
sidecar all say the same thing; and that `evaluate.py model=<run>` evaluates what the run trained.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from omegaconf import OmegaConf
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.save_util import load_from_zip_file

from spacetime_rl.artifacts import config_hash
from spacetime_rl.budget import plan_budget
from spacetime_rl.config import TrainConfig, compose_train_config
from spacetime_rl.export import export_onnx, resolve_model
from spacetime_rl.protocol import wire
from spacetime_rl.seeds import held_out_seed
from spacetime_rl.training.job import ACTIVATIONS

from .runs import ROOT, TINY_RUN

#: 600 is not a whole number of rollouts (64 x 4 = 256): the run trains 768 steps and must say so.
BASE: Final = (
    *TINY_RUN,
    "ppo.n_epochs=1",
    "training.total_timesteps=600",
    "training.eval_freq=256",
    "training.save_freq=512",
    "training.held_out_episodes=4",
    "env.max_episode_steps=60",
)
SEED_JSON: Final = {
    "environment": {"action_smoothing": 0.2, "max_rotation_speed": 60.0},
    "ppo": {"learning_rate": 0.0007, "gamma": 0.97},
    "network": {"net_arch": [24, 24], "activation_fn": "relu"},
    "rewards": {"comfort_bonus": 3.5},
}
CASES: Final = {
    "comfort_preset": ["preset=comfort_optimized"],
    "maze": [
        "task=maze",
        "reward.progress=2.0",
        "ppo.learning_rate=0.001",
        "network.net_arch=[32,16]",
        "network.activation_fn=relu",
    ],
    "obstacle_course": [
        "task=obstacle_course",
        "env.action_smoothing=0.1",
        "ppo.gamma=0.95",
        "ppo.ent_coef=0.01",
    ],
    "multi": ["task=multi", "ppo.clip_range=0.1"],
    "curriculum": [
        "curriculum=three_stage",
        "curriculum.stages=[{name:a,max_goal_distance:4.0,timesteps:256},{name:b,max_goal_distance:6.0,timesteps:256}]",
    ],
    "config_file": ["config_file={json}", "ppo.learning_rate=0.002"],  # the command line beats the file
    "lstm": ["task=maze", "network=lstm", "network.lstm_hidden_size=12", "network.n_lstm_layers=2"],
}


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


#: Cases whose runs take long enough to belong to `make test-slow` (CI runs both).
SLOW_CASES: Final = frozenset({"lstm"})


def _params(names: list[str]) -> list[Any]:
    return [pytest.param(name, marks=pytest.mark.slow) if name in SLOW_CASES else name for name in names]


@pytest.fixture(scope="module", params=_params(list(CASES)))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], Path]:
    """A finished run of one case: its overrides (after the base ones) and its directory."""
    tmp = tmp_path_factory.mktemp(request.param)
    (tmp / "seed.json").write_text(json.dumps(SEED_JSON))
    overrides = [*BASE, *(o.replace("{json}", str(tmp / "seed.json")) for o in CASES[request.param])]
    result = run("train.py", *overrides, f"hydra.run.dir={tmp / 'run'}")
    assert result.returncode == 0, result.stderr
    return overrides, tmp / "run"


def expected_goal_distance(config: TrainConfig, task: str) -> float:
    """Where a task's goals lie at the end of training: its own limit, else the last stage or env's."""
    own = config.task.chosen[task].max_goal_distance
    if own is not None:
        return own
    if config.curriculum.enabled:
        return config.curriculum.stages[-1].max_goal_distance
    return config.env.max_goal_distance


def test_saved_config_is_what_cfg_job_shows_and_what_composes(case: tuple[list[str], Path]) -> None:
    overrides, run_dir = case
    saved = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    shown = run("train.py", "--cfg", "job", *overrides)
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout) == saved
    composed = compose_train_config(overrides)
    assert OmegaConf.to_container(OmegaConf.structured(composed)) == saved
    # what ran: the mode asked for, training.rollout=auto resolved as the job resolves it
    assert json.loads((run_dir / "metrics.json").read_text())["rollout"] == composed.rollout_mode


def test_model_carries_the_configured_hyperparameters(case: tuple[list[str], Path]) -> None:
    overrides, run_dir = case
    config = compose_train_config(overrides)
    data, _, _ = load_from_zip_file(str(run_dir / "final_model.zip"), device="cpu")
    assert data is not None
    for key, value in asdict(config.ppo).items():
        if key != "device":
            saved = data[key](1.0) if callable(data[key]) else data[key]
            assert saved == value, key
    assert data["policy_kwargs"]["net_arch"] == list(config.network.net_arch)
    assert data["policy_kwargs"]["activation_fn"] is ACTIVATIONS[config.network.activation_fn]
    recurrent = issubclass(data["policy_class"], RecurrentActorCriticPolicy)
    assert recurrent == (config.network.policy == "MlpLstmPolicy")
    if recurrent:
        assert data["policy_kwargs"]["lstm_hidden_size"] == config.network.lstm_hidden_size
        assert data["policy_kwargs"]["n_lstm_layers"] == config.network.n_lstm_layers


def test_env_and_rewards_used_are_the_configured_ones(case: tuple[list[str], Path]) -> None:
    overrides, run_dir = case
    config = compose_train_config(overrides)
    used = json.loads((run_dir / "metrics.json").read_text())["env_used"]
    assert used["action_smoothing"] == config.env.action_smoothing
    assert used["max_episode_steps"] == config.env.max_episode_steps
    assert used["agents"] == config.env.num_agents
    assert used["observation_size"] == wire.OBSERVATION_SIZE + (
        len(config.task.names) if config.task.multi else 0
    )
    assert set(used["tasks"]) == set(config.task.names)  # a chosen task alone, never joined by navigate
    for (name, task), rewards, probability in zip(
        config.task.chosen.items(),
        config.task.reward_configs(config.reward),
        config.task.probabilities,
        strict=True,
    ):
        got = used["tasks"][name]
        assert got["probability"] == pytest.approx(probability)
        assert got["reward"] == asdict(rewards)
        options = got["reset_options"]
        assert options["max_goal_distance"] == expected_goal_distance(config, name)
        assert options["max_rotation_speed"] == config.env.max_rotation_speed
        assert options.get("scenario", wire.DEFAULT_SCENARIO) == task.scenario


def test_steps_and_budget_notes_are_recorded(case: tuple[list[str], Path]) -> None:
    overrides, run_dir = case
    config = compose_train_config(overrides)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    budget = plan_budget(config)
    assert metrics["requested_timesteps"] == 600
    assert metrics["num_timesteps"] == budget.trained == 768
    assert metrics["budget_notes"] == budget.notes
    assert metrics["held_out"]["seed"] == held_out_seed(config.training.seed)
    assert metrics["held_out"]["episodes"] == 4
    if config.curriculum.enabled:
        assert metrics["curriculum"]["name"] == config.curriculum.stages[-1].name


def test_export_sidecar_carries_the_run_settings(case: tuple[list[str], Path], tmp_path: Path) -> None:
    overrides, run_dir = case
    config = compose_train_config(overrides)
    sidecar = json.loads(export_onnx(resolve_model(str(run_dir)), tmp_path / "policy.onnx").read_text())
    assert sidecar["action_smoothing"] == config.env.action_smoothing
    assert sidecar["heading_frame"] == config.env.heading_frame
    assert sidecar["action_repeat"] == config.env.action_repeat
    assert sidecar["tasks"] == (list(config.task.names) if config.task.multi else [])
    saved = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    assert sidecar["config_hash"] == config_hash(saved)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", _params(["maze", "curriculum", "lstm"]))
def test_evaluate_replays_the_recorded_held_out_check(name: str, tmp_path: Path) -> None:
    """evaluate.py on a run, with no other setting, plays the run's task at its final goal distance on
    the held-out seed: the same episodes as the best model's check in metrics.json."""
    tmp_path.joinpath("seed.json").write_text(json.dumps(SEED_JSON))
    overrides = [*BASE, *CASES[name]]
    train = run("train.py", *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert train.returncode == 0, train.stderr
    config = compose_train_config(overrides)
    result = run(
        "evaluate.py",
        f"model={tmp_path / 'run'}",
        "episodes=4",
        "plot_episodes=0",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert result.returncode == 0, result.stderr
    evaluated = json.loads((tmp_path / "eval" / "eval" / "metrics.json").read_text())
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["held_out"]["best"]
    assert evaluated["seed"] == held_out_seed(config.training.seed)
    assert list(evaluated["task"]["tasks"]) == list(config.task.names)
    final_distance = expected_goal_distance(config, config.task.names[0])
    if config.curriculum.enabled:
        assert evaluated["env"]["max_goal_distance"] == final_distance
        assert "curriculum's last stage 'b'" in result.stdout + result.stderr
    for key in ("eval/success_rate", "eval/success_low", "eval/collisions", "eval/falls"):
        assert evaluated["metrics"][key] == recorded[key], key
    assert evaluated["metrics"]["eval/mean_reward"] == pytest.approx(recorded["eval/mean_reward"])

    final = run(
        "evaluate.py",
        f"model={tmp_path / 'run' / 'final_model.zip'}",
        "episodes=4",
        "plot_episodes=0",
        f"hydra.run.dir={tmp_path / 'final'}",
    )
    assert final.returncode == 0, final.stderr
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "final" / "eval" / "metrics.json").read_text())["metrics"]
    assert evaluated["eval/mean_reward"] == pytest.approx(metrics["held_out"]["final"]["eval/mean_reward"])

    closer = run(
        "evaluate.py",
        f"model={tmp_path / 'run'}",
        "episodes=4",
        "plot_episodes=0",
        "env.max_goal_distance=3.5",
        f"hydra.run.dir={tmp_path / 'eval2'}",
    )
    assert closer.returncode == 0, closer.stderr
    overridden = json.loads((tmp_path / "eval2" / "eval" / "metrics.json").read_text())
    assert overridden["env"]["max_goal_distance"] == 3.5  # the command line still wins
