"""What the Hydra entry points share: turn the composed config into a checked one and report errors.

A user-facing failure (`SpaceTimeError`) is printed as one readable message, never a traceback. In a
single run it exits with status 1; in a multirun it returns NaN, so the sweep records a failed trial
and goes on.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from spacetime_rl.config import TrainConfig, to_train_config
from spacetime_rl.errors import SpaceTimeError
from spacetime_rl.seed_config import load_seed_config

log = logging.getLogger("spacetime_rl")


def apply_config_file(cfg: DictConfig, task_overrides: Sequence[str]) -> None:
    """Merge `config_file` (seed JSON format) over the preset, then re-apply the command-line values.

    Precedence is preset < JSON file < command line, as with the seed's `--config f.json --timesteps N`.
    """
    if not cfg.get("config_file"):
        return
    for key, value in load_seed_config(cfg.config_file).items():
        OmegaConf.update(cfg, key, value, merge=False)
    for override in OverridesParser.create().parse_overrides(list(task_overrides)):
        key = override.key_or_group
        if "." in key and not override.is_delete():
            OmegaConf.update(cfg, key, override.value(), merge=False)


def job_config(cfg: DictConfig) -> tuple[TrainConfig, Path]:
    """The checked config of this Hydra job and its output directory."""
    hydra_cfg = HydraConfig.get()
    apply_config_file(cfg, hydra_cfg.overrides.task)
    return to_train_config(cfg), Path(hydra_cfg.runtime.output_dir)


def run_reporting_errors(job: Callable[[], float]) -> float:
    """Run a job; print a `SpaceTimeError` as a message, then exit 1 (single run) or return NaN (sweep)."""
    try:
        return job()
    except SpaceTimeError as err:
        log.error("%s", err)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return math.nan
        raise SystemExit(1) from None
