"""The evaluation job end to end on simulator subprocesses, the layout endpoint, run-directory rules."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from spacetime_rl.artifacts import resolve_model
from spacetime_rl.config import (
    CurriculumConfig,
    CurriculumStageConfig,
    EnvConfig,
    NetworkConfig,
    PPOConfig,
    TaskConfig,
    TasksConfig,
    TrainConfig,
    TrainingConfig,
)
from spacetime_rl.errors import ConfigError
from spacetime_rl.evaluation.config import EvaluateConfig, register_configs
from spacetime_rl.evaluation.job import METRICS_FILE, PLOT_FILE, evaluate
from spacetime_rl.evaluation.plots import plot_episodes
from spacetime_rl.evaluation.settings import apply_run_config
from spacetime_rl.godot.client import GodotClient
from spacetime_rl.metrics import METRICS, EpisodeResult, Path2D
from spacetime_rl.protocol import wire
from spacetime_rl.sim.world import World
from spacetime_rl.training import train

CONF = Path(__file__).resolve().parents[2] / "conf"
ENV = EnvConfig(agents_per_environment=8, max_episode_steps=60, min_goal_distance=2.0, max_goal_distance=5.0)


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory with a barely trained [32, 32] model (its best and final snapshots)."""
    run_dir = tmp_path_factory.mktemp("run")
    config = TrainConfig(
        env=ENV,
        network=NetworkConfig(net_arch=[32, 32]),
        ppo=PPOConfig(n_steps=32, batch_size=128, n_epochs=1),
        training=TrainingConfig(
            total_timesteps=512, eval_freq=10_000, eval_episodes=8, progress_bar=False, torch_threads=1
        ),
    )
    train(config, run_dir)
    return run_dir


def config(**kwargs: Any) -> EvaluateConfig:
    return EvaluateConfig(env=ENV, **{"episodes": 16, "plot_episodes": 0, **kwargs})


def test_trained_model_metrics_file_and_plot(trained_model: Path, tmp_path: Path) -> None:
    source = resolve_model(str(trained_model))
    assert source.model == trained_model / "best_models" / "best_model.zip" and source.run_dir is None
    metrics = evaluate(config(model=str(trained_model), episodes=8, plot_episodes=4), tmp_path, source)

    written = json.loads((tmp_path / METRICS_FILE).read_text())
    assert set(written["metrics"]) == set(METRICS) == set(metrics)
    assert written["policy"] == "trained" and written["episodes"] == 8 and written["deterministic"]
    assert 0.0 <= metrics["eval/success_rate"] <= 1.0
    assert metrics["eval/std_reward"] >= 0.0
    episodes = written["per_episode"]
    assert [(e["index"], e["agent"]) for e in episodes] == [(0, agent) for agent in range(8)]
    for episode in episodes:
        assert episode["path_length"] >= 0.0 and episode["start_distance"] > 0.0
        assert episode["success"] + episode["fell"] + episode["timeout"] == 1
        assert (episode["time_to_goal"] is not None) == episode["success"]

    with Image.open(tmp_path / PLOT_FILE) as image:
        assert image.format == "PNG"
        assert 600 <= image.width <= 1600 and 300 <= image.height <= 1600


def test_heuristic_beats_random_and_a_seed_repeats(tmp_path: Path) -> None:
    heuristic = evaluate(config(policy="heuristic"), tmp_path / "h")
    random = evaluate(config(policy="random"), tmp_path / "r")
    assert heuristic["eval/success_rate"] > random["eval/success_rate"]
    assert heuristic["eval/success_rate"] >= 0.75
    assert 0.0 < heuristic["eval/path_efficiency"] <= 1.0
    assert heuristic["eval/time_to_goal"] > 0.0
    again = evaluate(config(policy="random"), tmp_path / "r2")
    assert again == pytest.approx(random, nan_ok=True)


def test_plot_without_layouts_shows_paths_only(tmp_path: Path) -> None:
    path = Path2D(
        points=np.array([[0.0, 0.0], [0.5, -1.0], [1.0, -2.0]]),
        collisions=np.array([[0.5, -1.0]]),
        goal=np.array([1.0, -2.5]),
        start_distance=2.7,
        layout=None,
    )
    info = {
        "is_success": False,
        "episode": {"r": -20.0, "l": 2},
        "TimeLimit.truncated": True,
        "episode_stats": {"falls": 0, "collisions": 1, "comfort": 1.0, "goal_distance": 0.5},
    }
    plot_episodes([EpisodeResult(0, 0, info, path)], tmp_path / "p.png", "paths only")
    with Image.open(tmp_path / "p.png") as image:
        assert image.format == "PNG" and image.width > 100


async def test_debug_layout_endpoint(start_sim: Any) -> None:
    url = await start_sim(num_agents=2, scene=wire.DEFAULT_SCENE, seed=0)
    expected = World(2, seed=0).layout(1)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/debug/layout?agent=1") as response:
            assert response.status == 200
            body = await response.json()
        for query in ("agent=2", "agent=-1", "agent=x", ""):
            async with http.get(f"{url}/debug/layout?{query}") as response:
                assert response.status == 400, query
                assert "agent" in (await response.json())["error"]
    assert body["agent"] == 1 and body["platform_half_size"] > 0 and body["goal_radius"] > 0
    np.testing.assert_allclose(body["goal"], expected.goal)
    np.testing.assert_allclose(np.array(body["boxes"]).reshape(-1, 4), expected.boxes)
    np.testing.assert_allclose(np.array(body["pillars"]).reshape(-1, 3), expected.pillars)
    np.testing.assert_allclose(np.array(body["pits"]).reshape(-1, 4), expected.pits)


async def test_client_debug_layout_is_none_without_the_endpoint(serve_app: Any) -> None:
    url = await serve_app(web.Application())
    async with GodotClient(url) as client:
        assert await client.debug_layout(0) is None


def test_model_paths_are_checked(trained_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model='.*nowhere' is neither"):
        resolve_model(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"without best_models/best_model\.zip"):
        resolve_model(str(tmp_path))
    (tmp_path / "lonely.zip").write_bytes(trained_model.joinpath("final_model.zip").read_bytes())
    with pytest.raises(ConfigError, match=r"VecNormalize statistics"):
        resolve_model(str(tmp_path / "lonely.zip"))
    with pytest.raises(ConfigError, match=r"model=None is invalid for policy=trained"):
        EvaluateConfig(policy="trained")


def test_run_settings_apply_under_command_line_overrides() -> None:
    register_configs()
    run = OmegaConf.structured(TrainConfig(env=EnvConfig(heading_frame=False, max_goal_distance=7.0)))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = ["env.max_goal_distance=4", "reward.goal_reached=50"]
        cfg = compose("evaluate", overrides=overrides)
        apply_run_config(cfg, run, overrides, CONF)
        assert not cfg.env.heading_frame  # the run's
        assert cfg.env.max_goal_distance == 4 and cfg.reward.goal_reached == 50  # the command line's
        cfg = compose("evaluate", overrides=["env=godot"])
        apply_run_config(cfg, run, ["env=godot"], CONF)
        assert cfg.env.kind == "godot" and cfg.env.url and not cfg.env.heading_frame
    assert math.isclose(run.env.max_goal_distance, 7.0)


def test_a_run_task_replaces_evaluate_defaults_and_its_last_stages_apply() -> None:
    register_configs()
    run = OmegaConf.structured(
        TrainConfig(
            task=TasksConfig(
                name="maze",
                tasks={
                    "maze": TaskConfig(
                        scenario="maze",
                        curriculum=[
                            CurriculumStageConfig(name="near", max_goal_distance=4.0, timesteps=10),
                            CurriculumStageConfig(name="far", max_goal_distance=9.0, timesteps=10),
                        ],
                    )
                },
            ),
            curriculum=CurriculumConfig(
                enabled=True, stages=[CurriculumStageConfig(name="hard", max_goal_distance=30.0, timesteps=1)]
            ),
        )
    )
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate")
        used = apply_run_config(cfg, run, [], CONF)
        assert list(cfg.task.tasks) == ["maze"]  # not joined by evaluate.py's navigate
        assert cfg.task.tasks.maze.max_goal_distance == 9.0 and cfg.env.max_goal_distance == 30.0
        assert any("last stage 'far'" in line for line in used)
        cfg = compose("evaluate", overrides=["task=obstacle_course"])
        apply_run_config(cfg, run, ["task=obstacle_course"], CONF)
        assert list(cfg.task.tasks) == ["obstacle_course"]  # the command line's task, alone
