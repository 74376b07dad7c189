"""Training runs on disk as evaluation, export and comparison read them.

A run directory is Hydra's output directory of one `train.py` job: `.hydra/config.yaml` (the
composed config), `.hydra/overrides.yaml`, `best_models/best_model.zip` and the other snapshots
with their `_vecnormalize.pkl` companions, `metrics.json` and `tensorboard/`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from spacetime_rl.config import EnvConfig, TasksConfig
from spacetime_rl.errors import ConfigError
from spacetime_rl.training.artifacts import stats_path

__all__ = ["ModelSource", "apply_run_config", "config_hash", "load_run_config", "resolve_model"]

_Group = TypeVar("_Group")

BEST_MODEL: Final = Path("best_models") / "best_model.zip"
RUN_CONFIG: Final = Path(".hydra") / "config.yaml"
RUN_OVERRIDES: Final = Path(".hydra") / "overrides.yaml"
#: The config groups a run directory's settings replace in evaluate.py.
RUN_GROUPS: Final = ("env", "reward", "task")


@dataclass(frozen=True)
class ModelSource:
    """A model zip, its VecNormalize statistics and the run directory it belongs to (if found)."""

    model: Path
    stats: Path
    run_dir: Path | None

    @property
    def run_config(self) -> DictConfig | None:
        return load_run_config(self.run_dir) if self.run_dir else None


def resolve_model(value: str, key: str = "model") -> ModelSource:
    """The model that `key=value` names: a run directory (its best model) or a model zip."""
    path = Path(value).expanduser()
    if path.is_dir():
        model = path / BEST_MODEL
        if not model.is_file():
            raise ConfigError(
                f"{key}={value!r} is a directory without {BEST_MODEL}: point {key} at a training run "
                "directory (outputs/<date>/<time>) or at a model zip"
            )
    elif path.is_file() and path.suffix == ".zip":
        model = path
    else:
        raise ConfigError(
            f"{key}={value!r} is neither a training run directory nor a model .zip: check the path "
            "(e.g. outputs/<date>/<time> or outputs/<date>/<time>/final_model.zip)"
        )
    stats = stats_path(model)
    if not stats.is_file():
        raise ConfigError(
            f"{key}={value!r}: the model's VecNormalize statistics {stats} are missing; every model "
            "training writes has them next to it, so copy them along with the zip"
        )
    run_dir = next((d for d in (model.parent, model.parent.parent) if (d / RUN_CONFIG).is_file()), None)
    return ModelSource(model=model, stats=stats, run_dir=run_dir)


def load_run_config(run_dir: Path) -> DictConfig:
    """The composed config a training run was started with."""
    try:
        config = OmegaConf.load(run_dir / RUN_CONFIG)
    except (OSError, OmegaConfBaseException) as exc:
        raise ConfigError(
            f"{run_dir / RUN_CONFIG} is unreadable ({exc}): is {run_dir} a run directory?"
        ) from exc
    if not isinstance(config, DictConfig):
        raise ConfigError(f"{run_dir / RUN_CONFIG} is not a mapping: is {run_dir} a run directory?")
    return config


def load_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides of a run (`.hydra/overrides.yaml`), or [] when absent."""
    path = run_dir / RUN_OVERRIDES
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def run_env_config(run_config: DictConfig | None) -> EnvConfig:
    """The checked env settings of a run (defaults for a model without its run)."""
    return _run_group(run_config, "env", EnvConfig)


def run_task_config(run_config: DictConfig | None) -> TasksConfig:
    """The checked tasks of a run (navigate alone for a run from before the task group)."""
    return _run_group(run_config, "task", TasksConfig)


def _run_group(run_config: DictConfig | None, group: str, schema: type[_Group]) -> _Group:
    if run_config is None or group not in run_config:
        return schema()
    try:
        checked = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), run_config[group]))
    except OmegaConfBaseException as exc:
        raise ConfigError(
            f"the run's {group} settings do not fit this version's {schema.__name__}: {exc}"
        ) from exc
    assert isinstance(checked, schema)
    return checked


def apply_run_config(
    cfg: DictConfig, run_config: DictConfig, task_overrides: Sequence[str], config_dir: Path | None
) -> list[str]:
    """Evaluate as the run trained: its env, reward and task, at its curricula's final stages.

    The run's `env` and `reward` replace `cfg`'s, its `task` replaces `cfg.task` whole (a run's
    tasks never join evaluate.py's default), and where the run had a curriculum its last stage's
    goal distance applies. Then the command line's changes to these groups apply on top: a task
    choice (`task=maze`) keeps the task Hydra composed, an env or reward choice (`env=godot`)
    re-applies that option file (`config_dir/<group>/<option>.yaml`) over the run's, a key
    (`env.max_goal_distance=5`) its value. Returns what changed from the run's settings, for the log.
    """
    used: list[str] = []
    overrides = OverridesParser.create().parse_overrides(list(task_overrides))
    chosen = {o.key_or_group for o in overrides if not o.is_delete()}
    try:
        cfg.merge_with(OmegaConf.masked_copy(run_config, ["env", "reward"]))
        if "task" in run_config and "task" not in chosen:  # else Hydra composed the chosen option
            cfg.task = OmegaConf.merge(OmegaConf.structured(TasksConfig), run_config.task)
        used += _final_stages(cfg, run_config)
        for override in overrides:
            key = override.key_or_group
            if override.is_delete() or key.partition(".")[0] not in RUN_GROUPS or key == "task":
                continue
            if "." in key:
                OmegaConf.update(cfg, key, override.value(), merge=False)
            elif config_dir is not None:
                cfg[key] = OmegaConf.merge(
                    cfg[key], OmegaConf.load(config_dir / key / f"{override.value()}.yaml")
                )
            used.append(f"{override.input_line} (command line)")
    except OmegaConfBaseException as exc:
        raise ConfigError(f"the model's run config does not fit this version's schema: {exc}") from exc
    return used


def _final_stages(cfg: DictConfig, run_config: DictConfig) -> list[str]:
    """Set the goal distances of the run's curricula's last stages in `cfg`; say which were set."""
    used = []
    curriculum = run_config.get("curriculum")
    if curriculum is not None and curriculum.get("enabled") and curriculum.get("stages"):
        last = curriculum.stages[-1]
        cfg.env.max_goal_distance = last.max_goal_distance
        used.append(f"env.max_goal_distance={last.max_goal_distance} (curriculum's last stage {last.name!r})")
    for name, task in cfg.task.tasks.items():
        if task.get("curriculum"):
            last = task.curriculum[-1]
            task.max_goal_distance = last.max_goal_distance
            task.curriculum = []
            used.append(
                f"task.tasks.{name}.max_goal_distance={last.max_goal_distance} "
                f"(the task's last stage {last.name!r})"
            )
    return used


def config_hash(config: DictConfig | dict[str, Any] | None) -> str | None:
    """A short SHA-256 of a config's canonical JSON: the same settings give the same hash."""
    if config is None:
        return None
    data = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
