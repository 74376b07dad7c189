"""What a run's records say before any training: its budget, its seeds, its intervals, its JSON file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from spacetime_rl.budget import plan_budget
from spacetime_rl.config import compose_train_config
from spacetime_rl.metrics import wilson_interval
from spacetime_rl.seed_config import hydra_value
from spacetime_rl.seeds import held_out_seed, in_training_eval_seed, seen_in_training


def test_total_timesteps_round_up_to_whole_rollouts_and_say_so() -> None:
    budget = plan_budget(compose_train_config(["training.total_timesteps=5000"]))  # rollout 128 x 16
    assert budget.trained == 6144
    assert any("training.total_timesteps=5000" in note and "6144" in note for note in budget.notes)


def test_a_whole_number_of_rollouts_needs_no_note() -> None:
    config = compose_train_config(["training.total_timesteps=20480", "training.eval_freq=2048"])
    assert plan_budget(config).notes == []


def test_short_full_training_says_it_makes_no_checkpoint_and_no_evaluation() -> None:
    budget = plan_budget(compose_train_config(["preset=full_training", "training.total_timesteps=20000"]))
    notes = " | ".join(budget.notes)
    assert "training.eval_freq=50000" in notes and "no evaluation before the final one" in notes
    assert "training.save_freq=100000" in notes and "no checkpoint" in notes


def test_short_curriculum_says_it_never_leaves_the_first_stage() -> None:
    config = compose_train_config(["preset=curriculum_learning", "training.total_timesteps=20000"])
    (note,) = [n for n in plan_budget(config).notes if n.startswith("curriculum.stages")]
    assert "'medium' starts at 500000" in note and "ends in stage 'easy'" in note


def test_a_task_curriculum_that_is_not_reached_is_named() -> None:
    config = compose_train_config(
        [
            "task=maze",
            "task.tasks.maze.max_goal_distance=null",
            "+task.tasks.maze.curriculum=[{name:near,max_goal_distance:4,timesteps:100000},"
            "{name:far,max_goal_distance:9,timesteps:1}]",
        ]
    )
    (note,) = [n for n in plan_budget(config).notes if n.startswith("task.tasks.maze")]
    assert "'far' starts at 100000" in note


def test_resumed_budget_counts_from_the_checkpoint() -> None:
    config = compose_train_config(
        ["training.total_timesteps=8192", "training.save_freq=2048", "training.eval_freq=2048"]
    )
    budget = plan_budget(config, start=6144)
    assert (budget.start, budget.trained) == (6144, 8192)
    assert budget.notes == []


def test_held_out_seeds_are_neither_training_nor_selection_seeds() -> None:
    for training_seed in (0, 7):
        held_out = held_out_seed(training_seed)
        assert seen_in_training(held_out, training_seed, num_environments=8) is None
        assert seen_in_training(training_seed + 3, training_seed, 8) == "training server 3"
        assert "best model" in (
            seen_in_training(in_training_eval_seed(training_seed), training_seed, 8) or ""
        )


@pytest.mark.parametrize(
    ("successes", "trials", "low", "high"),
    # Wilson (1927) intervals at 95%, as statsmodels' proportion_confint(method="wilson") gives them
    [(0, 10, 0.0, 0.27753), (10, 10, 0.72247, 1.0), (57, 100, 0.47215, 0.66267), (1, 2, 0.09453, 0.90547)],
)
def test_wilson_interval(successes: int, trials: int, low: float, high: float) -> None:
    got = wilson_interval(successes, trials)
    assert got == pytest.approx((low, high), abs=1e-5)


def test_wilson_interval_of_no_episodes_is_undefined() -> None:
    assert all(math.isnan(end) for end in wilson_interval(0, 0))


@pytest.mark.parametrize(
    "value",
    [
        0.0003,
        1e-05,
        7,
        True,
        False,
        None,
        "relu",
        "it's a: path/with spaces",
        [256, 256],
        {"name": "a", "x": 1.5},
    ],
)
def test_json_values_survive_the_trip_through_hydra_overrides(value: object, tmp_path: Path) -> None:
    """A value of a config_file reaches the composed config unchanged (via `hydra_value`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"key={hydra_value(value)}"])
    assert override.value() == value
    assert json.loads(json.dumps(value)) == value


def test_torch_threads_auto_leaves_the_servers_their_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import spacetime_rl.config as config_module

    monkeypatch.setattr(config_module, "_usable_cores", lambda: 8)
    assert config_module.torch_threads(compose_train_config()) == 6  # one training + one eval simulator
    assert config_module.torch_threads(compose_train_config(["env.num_environments=3"])) == 4
    assert config_module.torch_threads(compose_train_config(["env.num_environments=9"])) == 1  # at least 1
    assert config_module.torch_threads(compose_train_config(["training.torch_threads=3"])) == 3
    local = ["env=godot", "env.url=http://127.0.0.1:8080"]
    assert config_module.torch_threads(compose_train_config(local)) == 7  # Godot runs here too
    remote = ["env=godot", "env.url=http://gpu-box:8080", "env.token=t"]
    assert config_module.torch_threads(compose_train_config(remote)) == 8
