"""Schema of `evaluate.py`'s root config (`conf/evaluate.yaml`) and `register_configs()`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from spacetime_rl.artifacts import EVALUATIONS, RUN_CONFIG
from spacetime_rl.config import EnvConfig, RewardConfig, TasksConfig, check_keys
from spacetime_rl.errors import ConfigError

POLICIES: Final = ("trained", "random", "heuristic")


@dataclass
class EvaluateConfig:
    """What to evaluate and how; `env` and `reward` are training's groups (conf/env, conf/reward).

    With `model` a run directory, the run's own env and reward settings apply, and command-line
    overrides of them apply on top (`spacetime_rl.evaluation.settings`).
    """

    env: EnvConfig = field(default_factory=EnvConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    task: TasksConfig = field(default_factory=TasksConfig)  # the run's; per-task metrics with several
    model: str | None = None  # a model zip or a training run directory; policy=trained needs it
    policy: str = "trained"
    episodes: int = 20
    seed: int | None = None  # None: the held-out seed of the model's run (spacetime_rl.seeds)
    deterministic: bool = True
    plot_episodes: int = 6  # episodes drawn in eval/paths.png (0: no plot)
    verbose: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"policy={self.policy!r} is invalid: use one of {POLICIES}")
        if self.policy == "trained" and not self.model:
            raise ConfigError(
                "model=None is invalid for policy=trained: pass model=<run directory or model zip>, "
                "or evaluate a reference policy with policy=random or policy=heuristic"
            )
        if self.episodes < 1:
            raise ConfigError(f"episodes={self.episodes!r} is invalid: use a positive integer")
        if self.plot_episodes < 0:
            raise ConfigError(f"plot_episodes={self.plot_episodes!r} is invalid: use 0 (no plot) or more")


def register_configs() -> None:
    """Register the root schema so `conf/evaluate.yaml` can extend it (`defaults: [evaluate_schema]`),
    and the `evaluation_root` resolver its output directory uses."""
    ConfigStore.instance().store(name="evaluate_schema", node=EvaluateConfig)
    OmegaConf.register_new_resolver("evaluation_root", evaluation_root, replace=True)


def evaluation_root(model: str | None) -> str:
    """Where evaluate.py writes: beside the evaluated run (`<run>/evaluations`), else `evaluations/`.

    Never among training runs (`outputs/<date>`), where `compare` and TensorBoard would mix them in.
    """
    if model:
        path = Path(str(model)).expanduser()
        for candidate in (path, path.parent, path.parent.parent):
            if (candidate / RUN_CONFIG).is_file():
                return str(candidate / EVALUATIONS)
    return EVALUATIONS


def to_evaluate_config(cfg: DictConfig) -> EvaluateConfig:
    """Turn a composed config into the checked dataclass tree (runs every `__post_init__`)."""
    check_keys(cfg, EvaluateConfig)
    config = OmegaConf.to_object(cfg)
    if not isinstance(config, EvaluateConfig):
        raise ConfigError(
            f"expected an EvaluateConfig, got {type(config).__name__}: compose conf/evaluate.yaml"
        )
    return config
