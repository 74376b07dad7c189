"""Tasks over real simulator servers on port 0: the spec, the scenario option, task draws, observations
and per-task metrics of a tiny multi-task training run."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spacetime_rl.compare import compare
from spacetime_rl.config import (
    CurriculumStageConfig,
    EnvConfig,
    NetworkConfig,
    PPOConfig,
    RewardConfig,
    TaskConfig,
    TasksConfig,
    TrainConfig,
    TrainingConfig,
    compose_train_config,
)
from spacetime_rl.curriculum import TaskCurricula
from spacetime_rl.envs import SpaceTimeVecEnv, make_clients
from spacetime_rl.envs.tasks import TaskSchedule
from spacetime_rl.errors import ConfigError, GodotError
from spacetime_rl.godot.client import GodotClient
from spacetime_rl.godot.launcher import launch_servers
from spacetime_rl.protocol import wire
from spacetime_rl.rewards import REWARD_TERMS
from spacetime_rl.sim.server import create_app, serve

THREE = TasksConfig(
    name="multi",
    tasks={
        "navigate": TaskConfig(probability=2.0),
        "obstacle_course": TaskConfig(scenario="obstacle_course", reward={"collision_penalty": -2.0}),
        "maze": TaskConfig(scenario="maze", probability=1.0, max_goal_distance=8.0),
    },
)


@pytest.fixture
async def server():
    listener = await serve(create_app(num_agents=8, scene=wire.DEFAULT_SCENE, seed=0), "127.0.0.1", 0)
    yield f"http://127.0.0.1:{listener.port}"
    await listener.cleanup()


async def test_spec_lists_scenarios_and_unknown_scenario_is_400(server):
    async with GodotClient(server) as client:
        spec = await client.spec()
        assert spec.scenarios == wire.SCENARIOS
        result = await client.reset(seed=1, agents=[0], options={"scenario": "maze"})
        assert result.ignored_options == ()
        with pytest.raises(GodotError) as raised:
            await client.reset(options={"scenario": "labyrinth"})
    assert raised.value.status == 400
    assert "'scenario'" in str(raised.value) and "'maze'" in str(raised.value)


def test_task_draws_follow_the_probabilities():
    schedule = TaskSchedule(THREE, 3000, seed=0)
    schedule.draw(np.ones(3000, bool))
    counts = Counter(schedule.ids.tolist())
    expected = np.array([0.5, 0.25, 0.25]) * 3000
    chi2 = sum((counts[i] - e) ** 2 / e for i, e in enumerate(expected))
    assert chi2 < 13.8  # p = 0.001 for 2 degrees of freedom
    again = TaskSchedule(THREE, 3000, seed=0)
    again.draw(np.ones(3000, bool))
    np.testing.assert_array_equal(again.ids, schedule.ids)


def test_task_config_validation():
    with pytest.raises(ConfigError, match=r"task.tasks.x.scenario='mazes'"):
        TasksConfig(tasks={"x": TaskConfig(scenario="mazes")})
    with pytest.raises(ConfigError, match="probability"):
        TasksConfig(tasks={"x": TaskConfig(probability=-1.0)})
    with pytest.raises(ConfigError, match="probability > 0"):
        TasksConfig(tasks={"x": TaskConfig(probability=0.0)})
    with pytest.raises(ConfigError, match="unknown terms"):
        TasksConfig(tasks={"x": TaskConfig(reward={"colision_penalty": -1.0})})
    with pytest.raises(ConfigError, match=r"task.tasks.x.curriculum\[1\].timesteps=0"):
        TasksConfig(tasks={"x": TaskConfig(curriculum=[NEAR, CurriculumStageConfig("far", 8.0, 0)])})
    with pytest.raises(ConfigError, match=r"task.tasks.x.max_goal_distance=8.0 .* drop one"):
        TasksConfig(tasks={"x": TaskConfig(max_goal_distance=8.0, curriculum=[NEAR])})


NEAR = CurriculumStageConfig("near", 1.5, 100)
#: Two open-field tasks, `near` with its own stages: 1.5 m for 100 agent-steps, then 3 m for ever.
STAGED = TasksConfig(
    name="staged",
    tasks={"far": TaskConfig(), "near": TaskConfig(curriculum=[NEAR, CurriculumStageConfig("mid", 3.0, 50)])},
)


def test_task_curricula_advance_by_timesteps():
    curricula = TaskCurricula(STAGED)
    assert curricula.max_goal_distances == {"near": 1.5}
    assert not curricula.update(99)
    assert curricula.update(100) and curricula.max_goal_distances == {"near": 3.0}
    assert not curricula.update(10_000)  # the last stage lasts for ever
    assert TaskCurricula(STAGED, timesteps=500).max_goal_distances == {"near": 3.0}  # a resumed run
    assert TaskCurricula(THREE).max_goal_distances == {}


def test_a_task_curriculum_sets_the_goal_distance_of_its_episodes_only():
    config = EnvConfig(
        agents_per_environment=16, max_episode_steps=2, min_goal_distance=5.0, max_goal_distance=9.0
    )
    curricula = TaskCurricula(STAGED)
    distances: dict[tuple[str, float], list[float]] = {}
    with launch_servers(config, seed=0) as urls:
        env = SpaceTimeVecEnv(make_clients(urls, config), config, RewardConfig(), seed=3, tasks=STAGED)
        try:
            env.set_task_max_goal_distances(curricula.max_goal_distances)
            obs = env.reset()
            for step in range(8):  # four episodes per agent: two per stage
                stage = curricula.max_goal_distances["near"]
                for row in obs:
                    task = STAGED.names[int(np.argmax(row[48:]))]
                    distances.setdefault((task, stage), []).append(float(row[wire.OBS["goal_distance"]][0]))
                if step == 3 and curricula.update(100):  # what CurriculumCallback does
                    env.set_task_max_goal_distances(curricula.max_goal_distances)
                obs, *_ = env.step(np.zeros((16, 3)))
            with pytest.raises(ConfigError, match="'nearby'"):
                env.set_task_max_goal_distances({"nearby": 2.0})
        finally:
            env.close()
    assert sorted(distances) == [("far", 1.5), ("far", 3.0), ("near", 1.5), ("near", 3.0)]
    for (task, stage), seen in distances.items():
        if task == "near":  # min_goal_distance is clipped to the stage's maximum
            np.testing.assert_allclose(seen, stage, atol=0.2)
        else:
            assert min(seen) >= 5.0 - 0.2 and max(seen) <= 9.0 + 0.2


def test_task_group_composes():
    default = compose_train_config()
    multi = compose_train_config(["task=multi"])
    assert default.task.names == ("navigate",) and not default.task.multi
    assert multi.task.names == ("navigate", "obstacle_course", "maze")
    assert [t.scenario for t in multi.task.tasks.values()] == ["open_field", "obstacle_course", "maze"]
    assert multi.task.probabilities == pytest.approx([1 / 3] * 3)


@pytest.mark.parametrize("tasks", [None, THREE], ids=["single", "multi"])
def test_observation_has_a_task_block_only_with_several_tasks(tasks):
    config = EnvConfig(agents_per_environment=8, max_episode_steps=4)
    with launch_servers(config, seed=0) as urls:
        env = SpaceTimeVecEnv(make_clients(urls, config), config, RewardConfig(), seed=3, tasks=tasks)
        try:
            size = wire.OBSERVATION_SIZE + (3 if tasks else 0)
            assert env.observation_space.shape == (size,)
            obs = env.reset()
            seen = []
            for _ in range(12):  # three episodes per agent
                assert obs.shape == (8, size)
                if tasks:
                    np.testing.assert_array_equal(obs[:, 48:].sum(1), 1.0)
                obs, _, dones, infos = env.step(np.zeros((8, 3)))
                for i in np.flatnonzero(dones):
                    assert infos[i]["terminal_observation"].shape == (size,)
                    seen.append(infos[i]["task"])
        finally:
            env.close()
    assert set(seen) == (set(THREE.names) if tasks else {"navigate"})


def test_each_step_is_scored_with_the_weights_of_the_task_it_ran_under():
    """Only time_penalty counts, at -1 in one task and -10 in the other: every episode's return is
    its length times its own task's weight, the last step included, though the task drawn for the
    agent's next episode is known (and often another) by the time that step is scored."""
    weights = {"slow": -1.0, "fast": -10.0}
    tasks = TasksConfig(
        name="two",
        tasks={name: TaskConfig(reward={"time_penalty": weight}) for name, weight in weights.items()},
    )
    nothing_else = RewardConfig(**{name: 0.0 for name in REWARD_TERMS})
    config = EnvConfig(agents_per_environment=8, max_episode_steps=3)
    with launch_servers(config, seed=0) as urls:
        env = SpaceTimeVecEnv(make_clients(urls, config), config, nothing_else, seed=5, tasks=tasks)
        try:
            env.reset()
            episodes, switched = 0, 0
            for _ in range(15):  # five episodes per agent
                obs, rewards, dones, infos = env.step(np.zeros((8, 3)))
                for i in np.flatnonzero(dones):
                    info = infos[i]
                    weight = weights[info["task"]]
                    assert rewards[i] == pytest.approx(weight)
                    assert info["episode"]["r"] == pytest.approx(weight * info["episode"]["l"])
                    episodes += 1
                    switched += tasks.names[int(np.argmax(obs[i, wire.OBSERVATION_SIZE :]))] != info["task"]
        finally:
            env.close()
    assert episodes >= 32 and switched  # enough task changes at an episode's end to tell


MAZE_STAGED = TaskConfig(
    scenario="maze",
    curriculum=[CurriculumStageConfig("short", 2.0, 400), CurriculumStageConfig("long", 6.0, 1)],
)


def test_tiny_multitask_run_reports_metrics_per_task(tmp_path):
    from spacetime_rl.training import train

    config = TrainConfig(
        env=EnvConfig(
            agents_per_environment=12, max_episode_steps=30, min_goal_distance=1.0, max_goal_distance=3.0
        ),
        network=NetworkConfig(net_arch=[16, 16]),
        ppo=PPOConfig(n_steps=32, batch_size=128, n_epochs=1),
        task=TasksConfig(name="multi", tasks={**THREE.tasks, "maze": MAZE_STAGED}),
        training=TrainingConfig(
            total_timesteps=768,
            save_freq=10_000,
            eval_freq=10_000,
            eval_episodes=24,
            progress_bar=False,
            torch_threads=1,
        ),
    )
    train(config, tmp_path)
    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    (run_dir,) = (tmp_path / "tensorboard").iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for task in THREE.names:
        assert f"eval/{task}/success_rate" in final
        assert f"eval/{task}/success_rate" in tags
    assert "eval/success_rate" in tags
    maze_distances = [e.value for e in events.Scalars("curriculum/maze/max_goal_distance")]
    assert maze_distances == [2.0, 6.0]  # rollouts end at 384 and 768 agent-steps
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("task: {name: multi}\n")  # what train.py writes
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- task=multi\n")
    compare([tmp_path], tmp_path / "comparison")
    header = (tmp_path / "comparison" / "comparison.csv").read_text().splitlines()[0]
    assert all(f"final/eval/{task}/success_rate" in header for task in THREE.names)
    assert any(
        tag.startswith("rollout/") and tag.endswith("/success_rate") and tag.count("/") == 2 for tag in tags
    )
