"""Which settings evaluate.py plays a run's model with: the run's own, at its final curriculum stage.

`apply_run_config` replaces the composed `env`, `reward` and `task` groups by the run's (from its
`.hydra/config.yaml`) and re-applies the command line's changes to them on top.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from spacetime_rl.config import TasksConfig
from spacetime_rl.errors import ConfigError

__all__ = ["RUN_GROUPS", "apply_run_config"]

#: The config groups a run directory's settings replace in evaluate.py.
RUN_GROUPS: Final = ("env", "reward", "task")


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
