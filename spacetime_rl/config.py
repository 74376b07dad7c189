"""Structured config schemas for every Hydra group, and `register_configs()`.

The YAML files under `conf/` build on these dataclasses, so a typo fails at start with the full key
path (``Key 'prot' not in 'EnvConfig'``) and `TrainConfig.__post_init__` checks that values make sense
(run it with `to_object`).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
import math
import os
import re
import types
import typing
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from spacetime_rl.errors import ConfigError
from spacetime_rl.protocol import access, wire
from spacetime_rl.seed_config import expand_config_file

#: The `conf/` tree beside the package (a source checkout, as `train.py` uses it).
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

ENV_KINDS = ("sim", "godot")
#: Where launched servers run: subprocesses of train.py (`local`) or Ray actors over a cluster's nodes.
LAUNCHERS = ("local", "ray")
#: network.activation_fn values -> the torch.nn class each names (training looks the class up).
ACTIVATIONS = {
    "relu": "ReLU",
    "tanh": "Tanh",
    "elu": "ELU",
    "leaky_relu": "LeakyReLU",
    "gelu": "GELU",
    "silu": "SiLU",
}
TURN_MODES = ("smooth", "snap")
BUSY_POLL_MODES = ("auto", "on", "off")
#: How long a busy-polling side spins on its socket before it blocks (docs/training.md, "Speed").
BUSY_POLL_SECONDS = 0.002
ROLLOUT_MODES: Final = ("auto", "serial", "overlapped")
CURRICULUM_MODES = ("timesteps", "success_rate")
#: The task of a run that names none: walk to a goal on the open field (conf/task/navigate.yaml).
DEFAULT_TASK = "navigate"
#: A run name or tag: it becomes part of the run's folder and TensorBoard run names.
_LABEL_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
LOGGERS = ("tensorboard", "csv", "wandb", "mlflow")
#: Loggers whose package is an optional extra of the same name (pyproject.toml), imported only when chosen.
OPTIONAL_LOGGERS: Final = frozenset({"wandb", "mlflow"})
#: Servers when env.num_environments is null and none are attached (attached: one per env.url).
DEFAULT_ENVIRONMENTS = 1
#: Parallel trials turn it off (sweeps' n_jobs, the Ray launcher): they would pin to the same core.
CPU_AFFINITY_KEY: Final = "training.cpu_affinity"


def _require(ok: bool, key: str, value: Any, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: {fix}")


@dataclass
class EnvConfig:
    """Where the agents live: the embedded simulator (`sim`) or a running Godot (`godot`)."""

    kind: str = "sim"
    # godot: the base URL of a running server's HTTP API, or a list of them (a fleet). `Any`, as
    # OmegaConf has no str | list[str]: `urls` is the checked list.
    url: Any = None
    executable: str | None = None  # godot: launch headless instances of this binary instead of url
    project: str | None = None  # godot: the project folder passed to `executable --path`
    token: str | None = None
    # local: launched servers are subprocesses on this machine; ray: Ray actors spread over a Ray
    # cluster's nodes, one CPU each (godot/ray_pool.py, docs/scaling.md)
    launcher: str = "local"
    # env.launcher=ray: ray.init's address, host:port of the cluster's head ("local": a new Ray on
    # this machine); null: $RAY_ADDRESS, else the cluster last started here, else a new one (inside
    # a hydra/launcher=ray trial: that trial's cluster)
    ray_address: str | None = None
    scene: str = wire.DEFAULT_SCENE
    # Servers stepped concurrently; null: one launched, or one per env.url attached (`servers`).
    # Left null, the run's record says what was asked, and metrics.json's settings what ran.
    num_environments: int | None = None
    # An int for every server; null: each attached server's own count, read from its /rl/spec
    # (env=godot with env.url); `envs.with_server_agents` turns it into one count per server (a list)
    agents_per_environment: Any = wire.DEFAULT_AGENTS
    max_episode_steps: int = 200  # client-side time limit, in actions
    connect_timeout: float = wire.DEFAULT_CONNECT_TIMEOUT  # seconds to reach a server before giving up
    request_timeout: float = wire.DEFAULT_REQUEST_TIMEOUT
    binary_step: bool = True  # ask /rl/step for the binary body (docs/protocol.md); JSON if unsupported
    # Spin instead of sleeping while a /rl/step answer (client) or the next request (launched
    # simulators) is due; auto: simulators always, the client when servers + trainer fit the cores
    busy_poll: str = "auto"
    max_restarts: int = 3  # launched servers: restarts allowed within restart_window before giving up
    restart_window: float = 600.0  # seconds
    retries: int = 5  # attached server (env.url): health checks before saving and stopping
    retry_backoff: float = 1.0  # seconds before the first retry, doubling after each
    action_repeat: int = wire.DEFAULT_ACTION_REPEAT  # sim: physics frames per action
    # sim: milliseconds each launched simulator waits after a step (--step-delay-ms), standing in
    # for Godot's physics time when measuring many servers (docs/benchmarks.md); 0: none
    step_delay_ms: float = 0.0
    max_speed: float = 2.0  # m/s
    max_rotation_speed: float = 90.0  # deg/s
    min_goal_distance: float = 3.0  # m; the curriculum overrides the maximum per stage
    max_goal_distance: float = 10.0
    turn_mode: str = "smooth"
    action_smoothing: float = 0.0  # exponential smoothing factor in [0, 1): 0 = raw actions
    heading_frame: bool = True  # rotate world vectors into the player's heading frame
    normalize_observations: bool = True
    normalize_reward: bool = True
    clip_observations: float = 10.0

    def __post_init__(self) -> None:
        _require(self.kind in ENV_KINDS, "env.kind", self.kind, f"use one of {ENV_KINDS} (env=sim|godot)")
        if self.kind == "godot":
            _require(
                bool(self.url or self.executable),
                "env.url",
                self.url,
                "env=godot needs env.url=http://127.0.0.1:8080 (or a list of URLs) or env.executable=godot "
                "env.project=PATH",
            )
            _require(
                not self.executable or bool(self.project),
                "env.project",
                self.project,
                "env.executable needs env.project=/path/to/SpaceTime (the folder with project.godot)",
            )
        _require(self.launcher in LAUNCHERS, "env.launcher", self.launcher, f"use one of {LAUNCHERS}")
        _require(
            self.launcher == "local" or not self.attached,
            "env.launcher",
            self.launcher,
            "env.url attaches to running servers and launches none: drop env.url and set "
            "env.executable/env.project (env=godot), or use env=sim, to have Ray start the servers",
        )
        if self.token is not None and not access.is_valid_token(self.token):
            raise ConfigError(f"env.token is invalid: it {access.TOKEN_FIX}")  # not echoed: a secret
        if self.attached:
            self._check_fleet()
        else:
            _require(
                self.agents_per_environment is None or _is_count(self.agents_per_environment),
                "env.agents_per_environment",
                self.agents_per_environment,
                "the servers train.py starts all run the same count: give one positive integer, e.g. 16",
            )
        for key in ("max_restarts", "retries"):
            value = getattr(self, key)
            _require(value >= 0, f"env.{key}", value, "use 0 (never) or a positive integer")
        _require(
            self.agents_per_environment is not None or self.attached,
            "env.agents_per_environment",
            None,
            "only an attached server (env=godot env.url=...) tells its own count; for the instances "
            "train.py starts give one, e.g. env.agents_per_environment=16",
        )
        for key in ("num_environments", "max_episode_steps", "action_repeat"):
            value = getattr(self, key)
            _require(value is None or value >= 1, f"env.{key}", value, "use a positive integer")
        for key in (
            "connect_timeout",
            "request_timeout",
            "restart_window",
            "retry_backoff",
            "max_speed",
            "max_rotation_speed",
            "clip_observations",
        ):
            value = getattr(self, key)
            _require(math.isfinite(value) and value > 0, f"env.{key}", value, "use a positive number")
        _require(
            math.isfinite(self.step_delay_ms) and self.step_delay_ms >= 0,
            "env.step_delay_ms",
            self.step_delay_ms,
            "use 0 (none) or a positive number of milliseconds",
        )
        _require(
            self.kind == "sim" or not self.step_delay_ms,
            "env.step_delay_ms",
            self.step_delay_ms,
            "only the simulators train.py launches (env=sim) can be slowed; leave it 0 with env=godot",
        )
        _require(
            0 <= self.min_goal_distance <= self.max_goal_distance,
            "env.min_goal_distance",
            self.min_goal_distance,
            f"use 0 <= env.min_goal_distance <= env.max_goal_distance ({self.max_goal_distance})",
        )
        _require(self.turn_mode in TURN_MODES, "env.turn_mode", self.turn_mode, f"use one of {TURN_MODES}")
        _require(
            self.busy_poll in BUSY_POLL_MODES,
            "env.busy_poll",
            self.busy_poll,
            f"use one of {BUSY_POLL_MODES}",
        )
        _require(
            0 <= self.action_smoothing < 1,
            "env.action_smoothing",
            self.action_smoothing,
            "use a factor in [0, 1): 0 disables smoothing, 0.2-0.4 is comfortable",
        )

    def _check_fleet(self) -> None:
        """env.url as one URL or a list, env.num_environments and the agent counts agree with it, and
        a server beyond this machine has a token."""
        urls = self.urls
        _require(
            bool(urls) and all(isinstance(url, str) and _http_url(url) for url in urls),
            "env.url",
            self.url,
            "use a URL, e.g. env.url=http://127.0.0.1:8080, or a list: 'env.url=[http://a:8080,http://b:8080]'",
        )
        _require(
            len(set(urls)) == len(urls),
            "env.url",
            urls,
            "each server once: a server listed twice would be stepped twice per step",
        )
        _require(
            self.num_environments in (None, len(urls)),
            "env.num_environments",
            self.num_environments,
            f"attaching, the servers are the {len(urls)} URL(s) of env.url; leave env.num_environments "
            f"null or set it to {len(urls)}",
        )
        remote = [url for url in urls if not _loopback_url(url)]
        _require(
            not remote or self.token is not None,
            "env.url",
            remote[0] if remote else None,
            "a server on another machine needs a token, or anyone who reaches it can drive it: start "
            "it with --rl-token (or SPACETIME_RL_TOKEN) and set env.token (docs/scaling.md)",
        )
        counts = self.agents_per_environment
        _require(
            counts is None
            or _is_count(counts)
            or (isinstance(counts, list) and len(counts) == len(urls) and all(map(_is_count, counts))),
            "env.agents_per_environment",
            counts,
            f"use null (each server's own count), one positive integer for all, or {len(urls)} of them, "
            "one per env.url",
        )

    @property
    def urls(self) -> list[str]:
        """The attached servers' URLs: env.url as a list (empty when it is null)."""
        if self.url is None:
            return []
        return [self.url] if isinstance(self.url, str) else list(self.url)

    def url_name(self, index: int) -> str:
        """The config key of the attached server `index`, for messages: env.url, or env.url[i] in a list."""
        return "env.url" if isinstance(self.url, str) else f"env.url[{index}]"

    @property
    def servers(self) -> int:
        """How many servers train: env.num_environments, or when null one per attached URL (else one)."""
        if self.num_environments is not None:
            return self.num_environments
        return len(self.urls) if self.attached else DEFAULT_ENVIRONMENTS

    @property
    def server_agents(self) -> list[int]:
        """Each server's agent count, once known (`envs.with_server_agents` asks attached servers)."""
        counts = self.agents_per_environment
        if counts is None:
            raise ConfigError(
                "env.agents_per_environment=None is not known yet: ask the servers with "
                "spacetime_rl.envs.with_server_agents(config) first"
            )
        return list(counts) if isinstance(counts, list) else [counts] * self.servers

    @property
    def agents(self) -> int:
        """One server's agent count (the first's, when attached servers differ): what evaluation runs on."""
        return self.server_agents[0]

    @property
    def num_agents(self) -> int:
        return sum(self.server_agents)

    @property
    def attached(self) -> bool:
        """True when training attaches to a running server at `url` instead of starting its own."""
        return self.kind == "godot" and not self.executable

    def client_busy_poll(self) -> float:
        """Seconds the client spins on a server's socket for a `/rl/step` answer before it sleeps.

        On a VM a sleeping process is woken ~50-150 us after its socket turns ready, and a round
        trip wakes both sides. Spinning (yielding to anything else runnable) avoids that but holds
        a core, so `auto` spins only for the embedded simulator, and on the client only when each
        server and the trainer have a core of their own.
        """
        if self.busy_poll == "auto":
            on = self.kind == "sim" and self.servers + 1 <= _usable_cores()
        else:
            on = self.busy_poll == "on"
        return BUSY_POLL_SECONDS if on else 0.0

    def server_busy_poll(self) -> float:
        """Seconds a launched simulator spins for the next request after answering (`auto`: always)."""
        on = self.busy_poll == "on" or (self.busy_poll == "auto" and self.kind == "sim")
        return BUSY_POLL_SECONDS if on else 0.0


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _usable_cores() -> int:
    """Cores this process may run on (its affinity where the OS has one, e.g. Linux)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class RewardConfig:
    """Reward weights; the seed's names and values. See docs/rewards.md for why each term is safe."""

    goal_reached: float = 100.0
    progress: float = 1.0  # per metre of new closest approach to the goal
    smooth_movement: float = 0.1
    comfort_bonus: float = 2.0
    collision_penalty: float = -10.0
    fall_penalty: float = -50.0
    timeout_penalty: float = -20.0
    teleport_penalty: float = -1.0
    # Per step x (1 - comfort score): the only term that makes slower, steadier motion pay, since
    # the bonuses above grow with speed (docs/rewards.md "Earning comfort"); 0 in the seed's reward.
    discomfort_penalty: float = 0.0
    # Per step, whatever the agent does: a cost of time, which the per-metre bonuses lack (they pay
    # the same for a slow walk as for a brisk one); 0 in the seed's reward.
    time_penalty: float = 0.0

    def __post_init__(self) -> None:
        for key, value in vars(self).items():
            _require(math.isfinite(value), f"reward.{key}", value, "use a finite number")
        for key in ("goal_reached", "progress", "smooth_movement", "comfort_bonus"):
            value = getattr(self, key)
            _require(
                value >= 0, f"reward.{key}", value, "a bonus must be >= 0 (penalties are the *_penalty keys)"
            )
        for key in (
            "collision_penalty",
            "fall_penalty",
            "timeout_penalty",
            "teleport_penalty",
            "discomfort_penalty",
            "time_penalty",
        ):
            value = getattr(self, key)
            _require(value <= 0, f"reward.{key}", value, "a penalty must be <= 0")


@dataclass
class CurriculumStageConfig:
    name: str = MISSING
    max_goal_distance: float = MISSING
    timesteps: int = MISSING  # how long the stage lasts (mode=timesteps), or at most lasts (success_rate)


def _check_stages(key: str, stages: list[CurriculumStageConfig]) -> None:
    for index, stage in enumerate(stages):
        at = f"{key}[{index}]"
        _require(stage.max_goal_distance > 0, f"{at}.max_goal_distance", stage.max_goal_distance, "use > 0")
        _require(stage.timesteps > 0, f"{at}.timesteps", stage.timesteps, "use a positive integer")


@dataclass
class TaskConfig:
    """One task of the `task` group: the arenas its episodes are drawn in and how they are scored."""

    scenario: str = wire.DEFAULT_SCENARIO  # the simulator's `scenario` reset option (wire.SCENARIOS)
    probability: float = 1.0  # weight of the task per episode when several are configured
    reward: dict[str, float] = field(default_factory=dict)  # overrides of the reward group's weights
    # The task's curriculum: its goal distances, null to follow env.*_goal_distance and the
    # curriculum group's stages.
    min_goal_distance: float | None = None
    max_goal_distance: float | None = None
    # The task's own stages, advanced by agent-steps as curriculum.mode=timesteps does: each stage's
    # max_goal_distance replaces the curriculum group's (or env's) for this task's episodes.
    curriculum: list[CurriculumStageConfig] = field(default_factory=list)


@dataclass
class TasksConfig:
    """The `task` group: the tasks episodes are drawn from; one policy serves them all.

    With several tasks each episode draws one (probabilities normalised) and the policy sees the
    task as a one-hot block after the 48 observation floats (docs/training.md).
    """

    name: str = DEFAULT_TASK
    # Empty in the schema: a group option's tasks must replace, not join, a pre-filled default
    # (Hydra merges the chosen option into the schema's value). `chosen` reads it.
    tasks: dict[str, TaskConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        rewards = {f.name for f in fields(RewardConfig)}
        for name, task in self.chosen.items():
            key = f"task.tasks.{name}"
            _require(
                task.scenario in wire.SCENARIOS,
                f"{key}.scenario",
                task.scenario,
                f"use one of {wire.SCENARIOS}",
            )
            _require(
                math.isfinite(task.probability) and task.probability >= 0,
                f"{key}.probability",
                task.probability,
                "use a weight >= 0",
            )
            unknown = sorted(set(task.reward) - rewards)
            fix = f"unknown terms {unknown}; use {sorted(rewards)}"
            _require(not unknown, f"{key}.reward", dict(task.reward), fix)
            low, high = task.min_goal_distance, task.max_goal_distance
            _require(
                (low is None or low >= 0) and (high is None or high > 0) and (low or 0) <= (high or math.inf),
                f"{key}.min_goal_distance",
                low,
                f"use 0 <= min_goal_distance <= max_goal_distance ({high}), or null",
            )
            _check_stages(f"{key}.curriculum", task.curriculum)
            _require(
                high is None or not task.curriculum,
                f"{key}.max_goal_distance",
                high,
                "the task's curriculum stages set its goal distance: drop one of the two",
            )
        total = sum(task.probability for task in self.chosen.values())
        _require(total > 0, "task.tasks", "probabilities", "at least one task needs a probability > 0")

    @property
    def chosen(self) -> dict[str, TaskConfig]:
        """The tasks episodes are drawn from: `tasks`, or navigate on the open field when empty."""
        return self.tasks or {DEFAULT_TASK: TaskConfig()}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.chosen)

    @property
    def probabilities(self) -> list[float]:
        total = sum(task.probability for task in self.chosen.values())
        return [task.probability / total for task in self.chosen.values()]

    @property
    def multi(self) -> bool:
        """True with more than one task: the observation then carries the task's one-hot block."""
        return len(self.chosen) > 1

    def reward_configs(self, base: RewardConfig) -> list[RewardConfig]:
        """Each task's reward weights: the reward group's, with the task's overrides (checked)."""
        return [replace(base, **task.reward) for task in self.chosen.values()]


#: SB3 policy names: the feed-forward MLP (PPO), and an LSTM before the MLP (sb3-contrib's RecurrentPPO).
POLICIES: Final = ("MlpPolicy", "MlpLstmPolicy")


@dataclass
class NetworkConfig:
    policy: str = "MlpPolicy"
    net_arch: list[int] = field(default_factory=lambda: [256, 256])
    activation_fn: str = "tanh"
    width: int | None = None  # with depth: net_arch = [width] * depth (the axes sweeps/network.yaml searches)
    depth: int | None = None
    # MlpLstmPolicy: the LSTM's size and layers (the actor and the critic each have one)
    lstm_hidden_size: int = 64
    n_lstm_layers: int = 1

    def __post_init__(self) -> None:
        _require(
            self.policy in POLICIES,
            "network.policy",
            self.policy,
            f"use one of {POLICIES} (network=lstm selects MlpLstmPolicy)",
        )
        for key in ("lstm_hidden_size", "n_lstm_layers"):
            _require(getattr(self, key) >= 1, f"network.{key}", getattr(self, key), "use a positive integer")
        _require(
            (self.width is None) == (self.depth is None),
            "network.width",
            self.width,
            f"set network.width and network.depth together (depth is {self.depth}), or neither",
        )
        if self.width is not None and self.depth is not None:
            _require(self.depth >= 1, "network.depth", self.depth, "use a positive number of layers")
            self.net_arch = [self.width] * self.depth
        _require(
            len(self.net_arch) > 0 and all(width > 0 for width in self.net_arch),
            "network.net_arch",
            self.net_arch,
            "use a non-empty list of positive layer widths, e.g. [256,256]",
        )
        _require(
            self.activation_fn in ACTIVATIONS,
            "network.activation_fn",
            self.activation_fn,
            f"use one of {tuple(ACTIVATIONS)}",
        )

    @property
    def recurrent(self) -> bool:
        return self.policy == "MlpLstmPolicy"


@dataclass
class PPOConfig:
    """SB3 PPO hyperparameters. `n_steps` is per agent; one rollout holds n_steps x all agents."""

    learning_rate: float = 3e-4
    n_steps: int = 128
    batch_size: int = 256
    n_epochs: int = 10
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        _require(self.learning_rate > 0, "ppo.learning_rate", self.learning_rate, "use a positive number")
        for key in ("n_steps", "batch_size", "n_epochs"):
            value = getattr(self, key)
            _require(value >= 1, f"ppo.{key}", value, "use a positive integer")
        for key in ("gamma", "gae_lambda"):
            value = getattr(self, key)
            _require(0 < value <= 1, f"ppo.{key}", value, "use a value in (0, 1]")
        _require(self.clip_range > 0, "ppo.clip_range", self.clip_range, "use a positive number")


@dataclass
class CurriculumConfig:
    """Stages of growing goal distance, advanced by timesteps (the seed) or by eval success rate."""

    enabled: bool = False
    mode: str = "timesteps"
    success_threshold: float = 0.8  # mode=success_rate: advance when eval success rate reaches this
    stages: list[CurriculumStageConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        _require(
            self.mode in CURRICULUM_MODES, "curriculum.mode", self.mode, f"use one of {CURRICULUM_MODES}"
        )
        _require(
            0 < self.success_threshold <= 1,
            "curriculum.success_threshold",
            self.success_threshold,
            "use a rate in (0, 1]",
        )
        _require(
            not self.enabled or len(self.stages) > 0,
            "curriculum.stages",
            self.stages,
            "an enabled curriculum needs at least one stage (curriculum=three_stage)",
        )
        _check_stages("curriculum.stages", self.stages)


@dataclass
class TrainingConfig:
    total_timesteps: int = 10_000
    save_freq: int = 2_000  # agent-steps between checkpoints
    eval_freq: int = 5_000  # agent-steps between evaluations
    eval_episodes: int = 16
    # At the end, the final and the best model play this many held-out episodes (spacetime_rl.seeds):
    # the best was picked on the in-training evaluation, so its score there is optimistic. 0: skip.
    held_out_episodes: int = 64
    seed: int = 0
    objective: str = "eval/success_rate"  # the metric train.py returns to sweepers
    progress_bar: bool = True
    # Threads for PPO updates. 0 (auto): the cores left after the servers this run starts (or the
    # loopback Godot it attaches to), at least 1: torch's own default takes every core and fights the
    # simulators (quick_test took 1 min 45 s instead of 17 s). Parallel sweep trials set 1.
    torch_threads: int = 0
    # While collecting rollouts the policy runs on this many threads, leaving the other cores to
    # the simulator or Godot; 0: the same as torch_threads
    rollout_torch_threads: int = 1
    # serial: every server steps, then the policy acts for every agent (SB3's loop). overlapped: the
    # servers in two groups, one stepping while the policy acts for the other, and each group's
    # actions sent before the step's bookkeeping (training/overlapped.py; launched servers and
    # network.policy=MlpPolicy). auto: overlapped where it can run, serial elsewhere
    # (TrainConfig.rollout_mode; docs/benchmarks.md measures both, quiet and loaded).
    rollout: str = "auto"
    # Overlapped rollouts over launched local servers: a rollout may collect on one core with its
    # servers on the others, so a server woken by its actions never preempts the policy (Sample
    # Factory's set_workers_cpu_affinity); rollouts are timed pinned and unpinned and run the faster
    # way, as pinning costs on a machine busy with other work (training/overlapped.py, Placement).
    # Only while a group's servers each have a core of their own besides the trainer's (core_split);
    # false: never pinned. Ignored otherwise.
    cpu_affinity: bool = True

    def __post_init__(self) -> None:
        for key in ("total_timesteps", "save_freq", "eval_freq", "eval_episodes"):
            value = getattr(self, key)
            _require(value >= 1, f"training.{key}", value, "use a positive integer")
        for key in ("torch_threads", "rollout_torch_threads"):
            value = getattr(self, key)
            _require(value >= 0, f"training.{key}", value, "use 0 (auto) or more")
        _require(
            self.rollout in ROLLOUT_MODES, "training.rollout", self.rollout, f"use one of {ROLLOUT_MODES}"
        )
        _require(
            self.held_out_episodes >= 0,
            "training.held_out_episodes",
            self.held_out_episodes,
            "use 0 (no held-out check) or more; 64 and up gives a useful interval",
        )


DIRECTIONS: Final = ("maximize", "minimize")


@dataclass
class ObjectiveConfig:
    """One objective of a multi-objective sweep: a metric of the final evaluation and its direction."""

    metric: str = MISSING  # an eval/* metric (spacetime_rl.metrics.EVAL_METRICS)
    direction: str = "maximize"

    def __post_init__(self) -> None:
        from spacetime_rl.metrics import EVAL_METRICS

        _require(
            self.metric in EVAL_METRICS,
            "sweep.objectives[].metric",
            self.metric,
            f"use one of {EVAL_METRICS}",
        )
        _require(
            self.direction in DIRECTIONS,
            f"sweep.objectives[].direction (of {self.metric})",
            self.direction,
            f"use one of {DIRECTIONS}",
        )


@dataclass
class SweepConfig:
    """An Optuna search (`python train.py -m sweep=<name>`, files in sweeps/); see docs/sweeps.md."""

    study_name: str | None = None  # default: the sweep folder's name
    # sqlite:///<path>, postgresql://<user>@<host>/<db> or journal:///<path> (docs/sweeps.md); default:
    # sqlite:///<sweep folder>/study.db. Several sweep processes on one storage share the study.
    storage: str | None = None
    seeds_per_trial: int = 1  # a trial trains seeds training.seed + 0..n-1 and averages the objective
    # Stops trials whose evaluation is below the median of earlier trials' at the same step, once
    # n_startup_trials have finished; any optuna.pruners class by _target_, or null for no pruning.
    pruner: dict[str, Any] | None = field(
        default_factory=lambda: {
            "_target_": "optuna.pruners.MedianPruner",
            "n_startup_trials": 5,
            "n_warmup_steps": 0,
        }
    )
    trial: int | None = None  # set by the sweeper: the number of the Optuna trial this job runs
    # s between a sweep worker's stamps on its running trials; a RUNNING trial unstamped for
    # grace_period s (its worker was killed) is failed by any worker of the study.
    heartbeat_interval: int = 30
    grace_period: int = 120
    # Two or more make a multi-objective sweep: the study keeps the Pareto front (docs/sweeps.md).
    # Empty: the one objective training.objective, in hydra.sweeper.direction.
    objectives: list[ObjectiveConfig] = field(default_factory=list)
    front_configs: bool = False  # multi-objective: the report writes best_config_<n>.yaml per front trial

    def __post_init__(self) -> None:
        _require(
            len(self.objectives) != 1,
            "sweep.objectives",
            [o.metric for o in self.objectives],
            "list two or more objectives, or none: one objective is training.objective with "
            "hydra.sweeper.direction",
        )
        _require(
            not self.multi_objective or self.pruner is None,
            "sweep.pruner",
            (self.pruner or {}).get("_target_"),
            "Optuna cannot prune a multi-objective study (sweep.objectives names "
            f"{len(self.objectives)}): set sweep.pruner=null",
        )
        _require(
            self.seeds_per_trial >= 1, "sweep.seeds_per_trial", self.seeds_per_trial, "use a positive integer"
        )
        _require(
            self.heartbeat_interval >= 1,
            "sweep.heartbeat_interval",
            self.heartbeat_interval,
            "use a positive number of seconds",
        )
        _require(
            self.grace_period > self.heartbeat_interval,
            "sweep.grace_period",
            self.grace_period,
            f"use more than sweep.heartbeat_interval={self.heartbeat_interval} s (a few beats), "
            "or a live worker's trials are failed",
        )

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) >= 2

    @property
    def per_trial(self) -> bool:
        """True when train.py runs a sweep trial (or several seeds) rather than one training run."""
        return self.trial is not None or self.seeds_per_trial > 1


@dataclass
class LoggerConfig:
    """Where metrics go (`logger=tensorboard|csv|wandb|mlflow`, conf/logger/).

    TensorBoard is always written (compare and the summary's commands read it, and it holds the
    HPARAMS tab); `csv`, `wandb` and `mlflow` add their output beside it.
    """

    kind: str = "tensorboard"
    project: str = "spacetime_rl"  # wandb: the project; mlflow: the experiment
    # mlflow: where runs go; null: $MLFLOW_TRACKING_URI if set, else sqlite:///<run dir>/mlflow.db
    tracking_uri: str | None = None

    def __post_init__(self) -> None:
        _require(self.kind in LOGGERS, "logger", self.kind, f"use one of {LOGGERS} (logger=csv)")

    def check_installed(self) -> None:
        """Raise ConfigError naming the fix when the package this logger needs is not installed."""
        if self.kind in OPTIONAL_LOGGERS and importlib.util.find_spec(self.kind) is None:
            raise ConfigError(
                f"logger={self.kind} needs the {self.kind} package, which is not installed: "
                f"pip install -e '.[{self.kind}]' (or make install, which installs every extra)"
            )


@dataclass
class TrainConfig:
    """Root config of `train.py`."""

    env: EnvConfig = field(default_factory=EnvConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    task: TasksConfig = field(default_factory=TasksConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    preset: str = "quick_test"  # set by the chosen conf/preset file, recorded for comparisons
    # The run's name and tags: in its folder and TensorBoard run names (run_label), metrics.json,
    # the HPARAMS tab and the wandb/mlflow run. null: the preset's name (run_name).
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    config_file: str | None = None  # a seed-format JSON config merged over the preset
    resume: str | None = None  # a checkpoint zip, a run directory (its newest checkpoint), or latest
    verbose: bool = False

    @property
    def rollout_mode(self) -> str:
        """How rollouts are collected: training.rollout, auto resolved (overlapped where it can run)."""
        if self.training.rollout == "auto":
            return "serial" if _serial_only(self) else "overlapped"
        return self.training.rollout

    def __post_init__(self) -> None:
        run_label(run_name(self.name, self.preset), self.tags)  # a bad name or tag fails here
        if self.training.rollout == "overlapped":
            reason = _serial_only(self)
            _require(
                reason is None, "training.rollout", "overlapped", f"{reason}; or set training.rollout=serial"
            )
        if self.env.agents_per_environment is None:
            return  # checked again once the server said its count (envs.with_server_agents)
        rollout = self.ppo.n_steps * self.env.num_agents
        _require(
            self.ppo.batch_size <= rollout,
            "ppo.batch_size",
            self.ppo.batch_size,
            f"it must not exceed the rollout size ppo.n_steps x agents = {self.ppo.n_steps} x "
            f"{self.env.num_agents} = {rollout}; lower ppo.batch_size or raise ppo.n_steps",
        )

    @property
    def label(self) -> str:
        """The run's folder and TensorBoard run name: its name (or its preset's) and tags (`run_label`)."""
        return run_label(run_name(self.name, self.preset), self.tags)


def run_name(name: str | None, preset: str) -> str:
    """A run's name: `name=` if given, else its preset's (`quick_test`), so presets tell runs apart."""
    return name or preset


def run_label(name: str, tags: Sequence[str]) -> str:
    """The run's name, then its tags after `+` (`baseline+walk+v2`): its folder and TensorBoard run names.

    Raises ConfigError for a name or tag that is not a plain word (it becomes part of a path).
    """
    for key, value in [("name", name), *((f"tags[{i}]", tag) for i, tag in enumerate(tags))]:
        _require(
            isinstance(value, str) and _LABEL_PART.fullmatch(value) is not None,
            key,
            value,
            "use letters, digits, '.', '_' and '-', starting with a letter or digit (it names the run's "
            "folder), e.g. name=baseline tags=[walk,v2]",
        )
    return joined_label(name, tags)


def joined_label(name: str, tags: Sequence[str]) -> str:
    """`name+tag+...` as recorded, unchecked (compare reads old or hand-edited metrics.json files)."""
    return "+".join([name, *tags])


def _folder_label(name: str | None, preset: str, tags: Sequence[str]) -> str:
    """`run_label` for hydra.run.dir, which Hydra resolves before the job starts: a bad name or tag is
    made safe here and then refused by `TrainConfig`'s check, with its message instead of a traceback."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", joined_label(run_name(name, preset), [str(tag) for tag in tags]))


def hyperparameters(config: TrainConfig) -> dict[str, bool | int | float | str]:
    """The run's config flattened to `section.key` scalars, for TensorBoard's HPARAMS tab and wandb/mlflow.

    Lists, dicts and None become their JSON text; `env.token` is left out and a password in a URL
    (`sweep.storage`, `logger.tracking_uri`) is masked: they are secrets.
    """
    flat: dict[str, bool | int | float | str] = {}

    def add(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                add(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, str):
            flat[prefix] = _without_password(value)
        elif isinstance(value, bool | int | float):
            flat[prefix] = value
        else:
            flat[prefix] = json.dumps(value)

    add("", dataclasses.asdict(config))
    flat.pop("env.token", None)
    return flat


def _without_password(value: str) -> str:
    """`value`, or, when it is a URL with a password, the same URL with `***` for the password."""
    parts = urlsplit(value) if "://" in value else None
    if parts is None or not parts.password:
        return value
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@", 1)).geturl()


def torch_threads(config: TrainConfig) -> int:
    """`training.torch_threads`, with 0 (auto) resolved to the cores the run's servers leave free."""
    if config.training.torch_threads:
        return config.training.torch_threads
    env = config.env
    launched = env.servers + 1  # and one evaluation server
    servers = sum(map(_loopback_url, env.urls)) if env.attached else launched
    return max(1, _usable_cores() - servers)


def _serial_only(config: TrainConfig) -> str | None:
    """Why `config`'s rollouts cannot overlap (a message naming the keys and the fix), or None."""
    if config.network.recurrent:
        return (
            "network.policy=MlpLstmPolicy (network=lstm) collects serially: RecurrentPPO carries the LSTM "
            "state across every agent's step; use network=default to overlap"
        )
    if config.env.attached:
        return (
            "env.url attaches to running servers, and the evaluation shares the first one and restarts the "
            "training episodes, which must not have a step in flight; use launched servers "
            "(env=sim, or env.executable) to overlap"
        )
    return None


def _http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def _loopback_url(url: str) -> bool:
    return access.is_loopback(urlsplit(url).hostname or "")


def register_configs() -> None:
    """Register the root schema so `conf/train.yaml` can extend it (`defaults: [train_schema]`), and the
    `run_label` resolver its folder names use."""
    ConfigStore.instance().store(name="train_schema", node=TrainConfig)
    OmegaConf.register_new_resolver("run_label", _folder_label, replace=True)


def to_train_config(cfg: DictConfig) -> TrainConfig:
    """Turn a composed config into the checked dataclass tree (runs every `__post_init__`)."""
    check_keys(cfg, TrainConfig)
    config = OmegaConf.to_object(cfg)
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"expected a TrainConfig, got {type(config).__name__}: compose conf/train.yaml")
    return config


def compose_train_config(overrides: Sequence[str] = ()) -> TrainConfig:
    """Compose `conf/train.yaml` with Hydra overrides, outside `train.py` (benchmarks, tests), and check it."""
    register_configs()
    overrides = check_command_line(overrides, TrainConfig, config_file=True)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return to_train_config(compose("train", overrides=overrides))


# ---------------------------------------------------------------- keys the schema does not have


def unknown_key(schema: type, key: str) -> str | None:
    """None when the dotted `key` is a key of `schema`, else a message naming it and the closest keys.

    Below a `dict` field any name is a key (`task.tasks.<name>`, `sweep.pruner.<argument>`); the
    value type below it is checked again (`task.tasks.maze.scenari` is unknown).
    """
    node: Any = schema
    for depth, part in enumerate(key.split(".")):
        node = _without_none(node)
        if is_dataclass(node):
            hints = typing.get_type_hints(node)
            if part not in hints:
                parent = ".".join(key.split(".")[:depth])
                prefix = f"{parent}." if parent else ""
                close = [prefix + name for name in difflib.get_close_matches(part, list(hints), n=1)]
                close = close or [path for path in _key_paths(schema) if path.rsplit(".", 1)[-1] == part]
                hint = f"did you mean {' or '.join(close)}? " if close else ""
                return (
                    f"{key} is not a config key ({parent or 'the root config'} has no {part!r}): "
                    f"{hint}`--cfg job` lists them all"
                )
            node = hints[part]
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        elif typing.get_origin(node) is list:
            node = typing.get_args(node)[0]
        else:
            return None  # below a plain value: OmegaConf's own type check speaks
    return None


def check_command_line(overrides: Sequence[str], schema: type, config_file: bool = False) -> list[str]:
    """`overrides` with `config_file=` expanded (if asked), after checking every key against `schema`.

    Raises ConfigError for a key `schema` does not have, with or without `+`, naming the file for
    a key that came from `config_file`.
    """
    expanded = expand_config_file(overrides) if config_file else list(overrides)
    source = next((f"{o} has " for o in overrides if o.startswith("config_file=")), "")
    for index, override in enumerate(expanded):
        key = override.lstrip("+~").split("=", 1)[0]
        if re.split(r"[./@]", key)[0] == "hydra":  # hydra.sweeper.n_trials, hydra/launcher=joblib
            continue
        if problem := unknown_key(schema, key):
            raise ConfigError(f"{source if index >= len(overrides) else ''}{override}: {problem}")
    return expanded


def check_keys(cfg: DictConfig, schema: type) -> None:
    """Raise ConfigError for a key of a composed config that `schema` does not have (a `+` typo)."""
    for key in _leaf_keys(OmegaConf.to_container(cfg, resolve=False)):
        if problem := unknown_key(schema, key):
            raise ConfigError(problem)


def _without_none(node: Any) -> Any:
    """`X` of an `X | None` type (as get_type_hints gives it), else `node`."""
    if typing.get_origin(node) in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(node) if arg is not type(None)]
        return args[0] if len(args) == 1 else node
    return node


def _key_paths(schema: type, prefix: str = "") -> Iterator[str]:
    """Every dotted key of a dataclass schema, through nested dataclasses."""
    for name, hint in typing.get_type_hints(schema).items():
        path = f"{prefix}{name}"
        yield path
        hint = _without_none(hint)
        if isinstance(hint, type) and is_dataclass(hint):
            yield from _key_paths(hint, f"{path}.")


def _leaf_keys(data: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(data, dict):
        for name, value in data.items():
            yield from _leaf_keys(value, f"{prefix}{name}.")
            if not isinstance(value, dict) or not value:
                yield f"{prefix}{name}"
