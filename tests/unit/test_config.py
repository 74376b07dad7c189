"""The real conf/ tree composes for every option of every group, and bad values fail naming the key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from spacetime_rl.config import CONF_DIR, TrainConfig, check_command_line, compose_train_config
from spacetime_rl.errors import ConfigError
from spacetime_rl.seed_config import EXAMPLE, load_seed_config, write_example
from spacetime_rl.training.overlapped import core_split

CONF = CONF_DIR
GROUPS = ("preset", "reward", "env", "network", "ppo", "curriculum", "training")


def compose_train(*overrides: str) -> TrainConfig:
    return compose_train_config(overrides)


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("override", [f"{group}={option}" for group in GROUPS for option in options(group)])
def test_every_option_composes(override: str) -> None:
    config = compose_train(override)
    assert isinstance(config, TrainConfig)


def test_groups_have_the_options_users_type() -> None:
    assert {"quick_test", "full_training", "curriculum_learning", "comfort_optimized"} <= set(
        options("preset")
    )
    assert {"default", "comfort"} <= set(options("reward"))
    assert {"sim", "godot"} <= set(options("env"))
    assert {"none", "three_stage"} <= set(options("curriculum"))


def test_default_is_quick_test_on_the_simulator() -> None:
    config = compose_train()
    assert config.preset == "quick_test"
    assert config.env.kind == "sim"
    assert config.training.total_timesteps == 10_000
    assert config.training.save_freq == 2_000
    assert config.env.max_episode_steps == 200


def test_presets_carry_the_seed_values() -> None:
    full = compose_train("preset=full_training")
    assert (full.training.total_timesteps, full.env.max_episode_steps) == (5_000_000, 1_000)

    curriculum = compose_train("preset=curriculum_learning")
    assert curriculum.training.total_timesteps == 3_000_000
    assert curriculum.curriculum.enabled
    stages = [(s.name, s.max_goal_distance, s.timesteps) for s in curriculum.curriculum.stages]
    assert stages == [("easy", 10.0, 500_000), ("medium", 20.0, 1_000_000), ("hard", 30.0, 1_500_000)]

    default, comfort = compose_train(), compose_train("preset=comfort_optimized")
    assert comfort.training.total_timesteps == 1_000_000
    assert comfort.reward.comfort_bonus > default.reward.comfort_bonus
    assert comfort.env.action_smoothing > default.env.action_smoothing
    assert comfort.env.max_rotation_speed < default.env.max_rotation_speed


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("env=godot", "env.kind", "godot"),
        ("env.url=http://127.0.0.1:9000", "env.url", "http://127.0.0.1:9000"),
        ("env.token=secret", "env.token", "secret"),
        ("env.num_environments=2", "env.num_environments", 2),
        ("env.agents_per_environment=4", "env.agents_per_environment", 4),
        ("env.max_episode_steps=50", "env.max_episode_steps", 50),
        ("training.total_timesteps=123", "training.total_timesteps", 123),
        ("training.save_freq=7", "training.save_freq", 7),
        ("training.eval_freq=9", "training.eval_freq", 9),
        ("training.seed=5", "training.seed", 5),
        ("ppo.learning_rate=1e-4", "ppo.learning_rate", 1e-4),
        ("ppo.batch_size=32", "ppo.batch_size", 32),
        ("ppo.n_steps=64", "ppo.n_steps", 64),
        ("network.net_arch=[32,32]", "network.net_arch", [32, 32]),
        ("reward.comfort_bonus=3.5", "reward.comfort_bonus", 3.5),
        ("reward.collision_penalty=-2", "reward.collision_penalty", -2.0),
    ],
)
def test_documented_override_names_apply(override: str, key: str, expected: object) -> None:
    config = OmegaConf.structured(compose_train(override))
    assert OmegaConf.select(config, key) == expected


@pytest.mark.parametrize(
    ("override", "meant"),
    [
        ("env.prot=1", "env.project"),
        ("ppo.learnin_rate=1", "ppo.learning_rate"),
        ("+ppo.learnin_rate=1", "ppo.learning_rate"),  # Hydra's hint: it used to train with 3e-4
        ("training.learning_rate=1", "ppo.learning_rate"),
        ("+task.tasks.maze.scenari=maze", "task.tasks.maze.scenario"),
    ],
)
def test_unknown_key_fails_with_or_without_plus_and_a_did_you_mean(override: str, meant: str) -> None:
    key = override.lstrip("+").split("=")[0]
    with pytest.raises(ConfigError, match=rf"{re.escape(key)} is not a config key .*did you mean {meant}\?"):
        compose_train(override)


@pytest.mark.parametrize(
    "override", ["hydra/launcher=joblib", "hydra/sweeper/sampler=random", "hydra.sweeper.n_trials=3"]
)
def test_hydra_options_and_groups_pass_the_key_check(override: str) -> None:
    assert check_command_line([override], TrainConfig) == [override]


def test_keys_below_a_dict_field_are_free() -> None:
    config = compose_train(
        "+task.tasks.maze.min_goal_distance=2.0", "task=maze", "sweep.pruner.n_warmup_steps=3"
    )
    assert config.task.tasks["maze"].min_goal_distance == 2.0
    assert config.sweep.pruner is not None and config.sweep.pruner["n_warmup_steps"] == 3


@pytest.mark.parametrize("task", ["maze", "obstacle_course", "navigate"])
def test_one_task_trains_that_task_alone(task: str) -> None:
    config = compose_train(f"task={task}")
    assert config.task.names == (task,)
    assert not config.task.multi


def test_task_multi_mixes_the_three() -> None:
    assert set(compose_train("task=multi").task.names) == {"navigate", "obstacle_course", "maze"}


def test_wrong_type_fails_with_full_key() -> None:
    with pytest.raises(ConfigCompositionException) as info:
        compose_train("ppo.n_steps=many")
    assert "ppo.n_steps" in str(info.value) + str(info.value.__cause__)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("training.total_timesteps=0", "training.total_timesteps"),
        ("ppo.batch_size=4096", "ppo.batch_size"),
        ("ppo.gamma=1.5", "ppo.gamma"),
        ("env.action_smoothing=1.0", "env.action_smoothing"),
        ("env.min_goal_distance=50", "env.min_goal_distance"),
        ("network.activation_fn=sigmoidish", "network.activation_fn"),
        ("reward.goal_reached=-1", "reward.goal_reached"),
        ("reward.fall_penalty=5", "reward.fall_penalty"),
        ("env.kind=unity", "env.kind"),
        ("training.rollout_torch_threads=-1", "training.rollout_torch_threads"),
        ("env.busy_poll=sometimes", "env.busy_poll"),
        ("env.launcher=slurm", "env.launcher"),
    ],
)
def test_values_checked_for_sense(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose_train(override)
    message = str(info.value)
    assert message.startswith(key + "=")
    assert override.split("=", 1)[1] in message


def test_batch_size_message_names_rollout_size() -> None:
    with pytest.raises(ConfigError, match=r"128 x 16 = 2048"):
        compose_train("ppo.batch_size=4096")


def test_seed_json_example_round_trips(tmp_path: Path) -> None:
    path = write_example(tmp_path / "example_config.json")
    overrides = load_seed_config(path)
    assert overrides["network.activation_fn"] == EXAMPLE["network"]["activation_fn"]
    assert overrides["reward.comfort_bonus"] == EXAMPLE["rewards"]["comfort_bonus"]
    assert overrides["env.action_smoothing"] == EXAMPLE["environment"]["action_smoothing"]


def _compose_with_file(path: Path, *task: str) -> TrainConfig:
    return compose_train_config([f"config_file={path}", *task])


def test_config_file_overrides_preset_and_command_line_wins(tmp_path: Path) -> None:
    path = tmp_path / "tuned.json"
    path.write_text(
        json.dumps(
            {
                "ppo": {"learning_rate": 0.001, "batch_size": 64},
                "training": {"total_timesteps": 5000, "use_curriculum": False, "num_workers": 4},
                "rewards": {"collision_penalty": -3.0},
            }
        )
    )
    config = _compose_with_file(path, "training.total_timesteps=777")
    assert config.ppo.learning_rate == 0.001
    assert config.ppo.batch_size == 64
    assert config.reward.collision_penalty == -3.0
    assert config.training.total_timesteps == 777  # the command line beats the file


def test_config_file_unknown_section_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"optimizer": {"lr": 1}}))
    with pytest.raises(ConfigError, match="unknown section 'optimizer'"):
        load_seed_config(path)


def test_config_file_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"ppo": {"learning_rat": 0.1}}))
    with pytest.raises(
        ConfigError,
        match=r"config_file=.*bad\.json has ppo\.learning_rat=0\.1: .*did you mean ppo\.learning_rate",
    ):
        _compose_with_file(path)


def test_config_file_missing_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_seed_config(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "option",
    ["ppo/default", "reward/default", "training/default", "network/default", "curriculum/none", "env/sim"],
)
def test_default_options_leave_every_value_to_the_schema(option: str) -> None:
    """Each default is written once, in spacetime_rl/config.py: a default option file sets no key."""
    assert OmegaConf.load(CONF / f"{option}.yaml") in ({}, None)


def test_activations_are_named_once() -> None:
    from spacetime_rl.config import ACTIVATIONS
    from spacetime_rl.training.job import ACTIVATIONS as MODULES

    assert list(MODULES) == list(ACTIVATIONS)


# ---------------------------------------------------------------- a fleet of attached servers

FLEET = ["env=godot", "env.url=[http://127.0.0.1:8081,http://127.0.0.1:8082,http://127.0.0.1:8083]"]


def test_a_list_of_urls_is_the_fleet_and_one_url_still_works() -> None:
    fleet = compose_train(*FLEET).env
    assert fleet.urls == ["http://127.0.0.1:8081", "http://127.0.0.1:8082", "http://127.0.0.1:8083"]
    assert fleet.servers == 3 and fleet.num_environments is None and fleet.url_name(2) == "env.url[2]"
    assert compose_train(*FLEET, "env.num_environments=3").env.servers == 3
    one = compose_train("env=godot", "env.url=http://127.0.0.1:8080").env
    assert one.urls == ["http://127.0.0.1:8080"] and one.servers == 1 and one.url_name(0) == "env.url"


def test_a_url_list_and_another_num_environments_names_both_keys() -> None:
    with pytest.raises(ConfigError) as info:
        compose_train(*FLEET, "env.num_environments=2")
    message = str(info.value)
    assert message.startswith("env.num_environments=2 is invalid")
    assert "the 3 URL(s) of env.url" in message and "set it to 3" in message


@pytest.mark.parametrize(
    ("url", "remote"),
    [
        ("http://gpu-box:8080", "http://gpu-box:8080"),
        ("[http://127.0.0.1:8080,https://10.0.0.7:8443]", "https://10.0.0.7:8443"),
        ("'http://[2001:db8::1]:8080'", "http://[2001:db8::1]:8080"),
    ],
)
def test_a_server_beyond_this_machine_needs_a_token(url: str, remote: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose_train("env=godot", f"env.url={url}")
    message = str(info.value)
    assert message.startswith(f"env.url={remote!r} is invalid") and "needs a token" in message
    assert "env.token" in message
    assert compose_train("env=godot", f"env.url={url}", "env.token=t").env.token == "t"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("env.url=[]", "env.url"),
        ("env.url=[http://127.0.0.1:1,http://127.0.0.1:1]", "env.url"),
        ("env.url=127.0.0.1:8080", "env.url"),
        ("env.agents_per_environment=[4,6]", "env.agents_per_environment"),  # two counts, three servers
    ],
)
def test_fleet_values_checked_for_sense(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        compose_train(*FLEET[:1], FLEET[1] if key != "env.url" else override, override)
    assert str(info.value).startswith(key + "=")


def test_servers_train_py_starts_run_one_count() -> None:
    with pytest.raises(ConfigError, match=r"^env\.agents_per_environment=\[4, 6\] is invalid"):
        compose_train("env.agents_per_environment=[4,6]")


@pytest.mark.parametrize(
    ("overrides", "fix"),
    [(["env.step_delay_ms=-1"], "milliseconds"), (["env=godot", "env.step_delay_ms=5"], "env=sim")],
)
def test_step_delay_is_for_launched_simulators(overrides: list[str], fix: str) -> None:
    with pytest.raises(ConfigError, match=r"^env\.step_delay_ms=") as info:
        compose_train(*overrides)
    assert fix in str(info.value)


def test_hyperparameters_keep_secrets_out() -> None:
    """What HPARAMS, wandb and mlflow receive: no token, no password of a URL."""
    from spacetime_rl.config import EnvConfig, SweepConfig, hyperparameters

    config = TrainConfig(
        env=EnvConfig(token="t0ken"),
        sweep=SweepConfig(storage="postgresql://optuna:s3cret@db-host:5432/optuna"),
    )
    flat = hyperparameters(config)
    assert "env.token" not in flat
    assert flat["sweep.storage"] == "postgresql://optuna:***@db-host:5432/optuna"
    assert "s3cret" not in str(flat) and "t0ken" not in str(flat)


def test_ray_launches_servers_and_does_not_attach() -> None:
    launched = compose_train("env.launcher=ray", "env.ray_address=10.0.0.1:6379").env
    assert (launched.launcher, launched.ray_address) == ("ray", "10.0.0.1:6379")
    assert compose_train().env.launcher == "local"
    with pytest.raises(ConfigError) as info:
        compose_train(*FLEET, "env.launcher=ray")
    message = str(info.value)
    assert message.startswith("env.launcher='ray' is invalid: env.url attaches to running servers")
    assert "env.executable/env.project" in message


@pytest.mark.parametrize(
    ("overrides", "mode"),
    [
        ((), "overlapped"),  # one launched server: one group
        (("env.num_environments=2",), "overlapped"),
        (("env.num_environments=2", "training.rollout=serial"), "serial"),
        (("env.num_environments=1", "training.rollout=overlapped"), "overlapped"),
        (("network=lstm",), "serial"),  # RecurrentPPO collects serially
        (("env=godot", "env.url=http://127.0.0.1:1"), "serial"),  # attached: shared with evaluation
    ],
)
def test_rollouts_overlap_by_default_where_they_can(overrides: tuple[str, ...], mode: str) -> None:
    config = compose_train(*overrides)
    assert config.rollout_mode == mode
    assert config.training.rollout == next((o.split("=")[1] for o in overrides if "rollout=" in o), "auto")


@pytest.mark.parametrize(
    ("overrides", "named", "fix"),
    [
        (["network=lstm", "env.num_environments=2"], "network.policy=MlpLstmPolicy", "network=default"),
        (["env=godot", "env.url=[http://127.0.0.1:1,http://127.0.0.1:2]"], "env.url", "env=sim"),
    ],
)
def test_rollout_overlapped_where_it_cannot_names_the_keys_and_the_fix(
    overrides: list[str], named: str, fix: str
) -> None:
    with pytest.raises(ConfigError, match=r"^training\.rollout='overlapped' is invalid") as info:
        compose_train(*overrides, "training.rollout=overlapped")
    message = str(info.value)
    assert named in message and fix in message and "training.rollout=serial" in message


OVERLAPPED = ("env.num_environments=2", "training.rollout=overlapped")


@pytest.mark.parametrize(
    ("cores", "overrides", "split"),
    [
        ({0, 1}, OVERLAPPED, ({0}, {1})),
        ({2, 5, 7}, OVERLAPPED, ({2}, {5, 7})),  # a cgroup's or taskset's cores, not 0..n-1
        ({0}, OVERLAPPED, None),  # one core: nothing to split
        ({0, 1}, ("env.num_environments=1", "training.rollout=overlapped"), ({0}, {1})),  # one group
        ({0, 1}, ("env.num_environments=4", "training.rollout=overlapped"), None),  # groups of 2, 1 core
        ({0, 1, 2}, ("env.num_environments=4", "training.rollout=overlapped"), ({0}, {1, 2})),
        ({0, 1, 2}, ("env.num_environments=5", "training.rollout=overlapped"), None),  # a group of 3
        ({0, 1}, ("env.num_environments=2",), ({0}, {1})),  # auto: overlapped
        ({0, 1}, ("env.num_environments=2", "training.rollout=serial"), None),  # nothing overlaps
        ({0, 1}, ("network=lstm",), None),  # auto: serial
        ({0, 1}, (*OVERLAPPED, "training.cpu_affinity=false"), None),
        ({0, 1}, (*OVERLAPPED, "env.launcher=ray"), None),  # Ray places its servers
    ],
)
def test_overlapped_rollouts_pin_the_trainer_to_one_usable_core_and_the_servers_to_the_rest(
    cores: set[int], overrides: tuple[str, ...], split: tuple[set[int], set[int]] | None, monkeypatch
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: cores)
    got = core_split(compose_train(*overrides))
    assert (got and (set(got.trainer), set(got.servers))) == split


def test_rollout_modes_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"^training\.rollout='async' is invalid: use one of"):
        compose_train("training.rollout=async")
