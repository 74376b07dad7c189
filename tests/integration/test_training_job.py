"""train() end to end on simulator subprocesses with tiny budgets; the curriculum's stage logic."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spacetime_rl.config import (
    CurriculumConfig,
    CurriculumStageConfig,
    EnvConfig,
    NetworkConfig,
    PPOConfig,
    TrainConfig,
    TrainingConfig,
)
from spacetime_rl.curriculum import Curriculum, CurriculumState
from spacetime_rl.errors import ConfigError
from spacetime_rl.metrics import EVAL_METRICS
from spacetime_rl.rewards import REWARD_TERMS
from spacetime_rl.training import train
from spacetime_rl.training.callbacks import RolloutTorch

STAGES = [CurriculumStageConfig("near", 2.0, 600), CurriculumStageConfig("far", 4.0, 10_000)]


def tiny_config(total_timesteps: int = 2048, resume: str | None = None) -> TrainConfig:
    return TrainConfig(
        env=EnvConfig(agents_per_environment=8, max_episode_steps=40, min_goal_distance=1.0),
        network=NetworkConfig(net_arch=[32, 32]),
        ppo=PPOConfig(n_steps=32, batch_size=128, n_epochs=2),
        curriculum=CurriculumConfig(enabled=True, stages=STAGES),
        training=TrainingConfig(
            total_timesteps=total_timesteps,
            save_freq=1000,
            eval_freq=1000,
            eval_episodes=8,
            progress_bar=False,
            torch_threads=1,
        ),
        resume=resume,
    )


def scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run")
    return output_dir, train(tiny_config(), output_dir)


def test_train_writes_models_checkpoints_and_metrics(trained):
    output_dir, objective = trained
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["objective"] == {"name": "eval/success_rate", "value": objective}
    assert 0.0 <= objective <= 1.0
    assert (
        metrics["num_timesteps"] >= 2048
        and metrics["final"]["time/total_timesteps"] == metrics["num_timesteps"]
    )
    assert metrics["best"]
    # save_freq=1000 with rollouts of 256: saved once the crossing rollout has been trained on
    for name in ("final_model", "best_models/best_model", "checkpoints/vr_nav_model_1024_steps"):
        for suffix in (".zip", "_vecnormalize.pkl", "_state.json"):
            assert (output_dir / f"{name}{suffix}").is_file(), name + suffix
    assert not list(output_dir.rglob("*.tmp"))


def test_tensorboard_has_reward_terms_eval_and_curriculum(trained):
    output_dir, _ = trained
    (run_dir,) = (output_dir / "tensorboard").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {f"reward/{term}" for term in REWARD_TERMS} | {
        "rollout/success_rate",
        "rollout/collisions",
        "rollout/falls",
        "rollout/comfort_score",
        "rollout/goal_distance",
        "rollout/ep_len",
        "engine/fps",
        "curriculum/stage",
        *EVAL_METRICS,
    }
    assert expected <= tags, expected - tags
    stages = scalars(run_dir, "curriculum/stage")
    assert stages[0][1] == 0.0 and stages[-1][1] == 1.0  # 600 steps of "near", then "far"
    # Goals were at most 2 m away during the first stage.
    assert all(value <= 2.0 for step, value in scalars(run_dir, "curriculum/max_goal_distance") if step < 600)


def test_resume_continues_steps_statistics_and_run_dir(trained, tmp_path):
    output_dir, _ = trained
    checkpoint = output_dir / "checkpoints" / "vr_nav_model_1024_steps.zip"
    state = json.loads(checkpoint.with_name("vr_nav_model_1024_steps_state.json").read_text())
    assert state["num_timesteps"] == 1024 and state["curriculum"]["stage"] == 1
    with open(checkpoint.with_name("vr_nav_model_1024_steps_vecnormalize.pkl"), "rb") as file:
        count_before = pickle.load(file).obs_rms.count

    train(tiny_config(total_timesteps=1500, resume=str(checkpoint)), tmp_path)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_timesteps"] == 1536  # whole rollouts from the checkpoint's 1024
    with open(tmp_path / "final_model_vecnormalize.pkl", "rb") as file:
        count_after = pickle.load(file).obs_rms.count
    assert count_after >= count_before + (metrics["num_timesteps"] - 1024)
    # The same TensorBoard run continues from the checkpoint's step count.
    (run_dir,) = (output_dir / "tensorboard").iterdir()
    steps = [step for step, _ in scalars(run_dir, "time/fps")]
    assert steps[-1] == metrics["num_timesteps"] and 1024 < steps[-2] < steps[-1]
    assert not (tmp_path / "tensorboard").exists()


def test_unknown_objective_is_rejected_before_any_work(tmp_path):
    config = tiny_config()
    config.training.objective = "eval/succes_rate"
    with pytest.raises(ConfigError, match=r"training\.objective='eval/succes_rate'"):
        train(config, tmp_path)
    assert not list(tmp_path.iterdir())


def test_resume_from_an_incomplete_checkpoint_names_the_missing_file(tmp_path):
    (tmp_path / "model.zip").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"model_vecnormalize\.pkl"):
        train(tiny_config(resume=str(tmp_path / "model.zip")), tmp_path / "out")


@pytest.mark.parametrize(("threads", "during"), [(1, 1), (0, 3)])
def test_rollout_threads_and_unchecked_distributions_apply_during_rollouts_only(threads, during):
    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        callback = RolloutTorch(threads)
        callback.on_rollout_start()
        assert torch.get_num_threads() == during
        assert torch.distributions.Normal(torch.zeros(1), -torch.ones(1)).scale.item() == -1  # unchecked
        callback.on_rollout_end()
        assert torch.get_num_threads() == 3
        with pytest.raises(ValueError, match="scale"):  # the updates check: a diverged policy is named
            torch.distributions.Normal(torch.zeros(1), -torch.ones(1))
    finally:
        torch.set_num_threads(saved)


def test_curriculum_by_timesteps():
    curriculum = Curriculum(CurriculumConfig(enabled=True, stages=STAGES), default_distance=9.0)
    assert curriculum.max_goal_distance == 2.0
    assert not curriculum.update(599)
    assert curriculum.update(650) and curriculum.stage_name == "far"
    assert curriculum.state == CurriculumState(stage=1, stage_start=600)
    assert not curriculum.update(10**9)  # the last stage lasts for ever


def test_curriculum_by_success_rate_advances_early_or_at_the_stage_length():
    config = CurriculumConfig(
        enabled=True, mode="success_rate", success_threshold=0.8, stages=[*STAGES, STAGES[1]]
    )
    curriculum = Curriculum(config, default_distance=9.0)
    assert not curriculum.update(100, success_rate=0.5)
    assert curriculum.update(200, success_rate=0.8)
    assert curriculum.state == CurriculumState(stage=1, stage_start=200)
    assert curriculum.update(10_200)  # "far" lasted its 10,000 steps without success
    assert curriculum.stage == 2


def test_disabled_curriculum_keeps_the_env_distance():
    curriculum = Curriculum(CurriculumConfig(enabled=False, stages=STAGES), default_distance=9.0)
    assert curriculum.max_goal_distance == 9.0 and not curriculum.update(10**6, success_rate=1.0)
