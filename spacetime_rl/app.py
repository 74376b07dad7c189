"""What the Hydra entry points share: check the command line, check the composed config, report errors.

A user-facing failure (`SpaceTimeError`) is printed as one readable message, never a traceback. In a
single run it exits with status 1; in a multirun it returns NaN, so the sweep records a failed trial
and goes on.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from spacetime_rl.config import TrainConfig, check_command_line, to_train_config
from spacetime_rl.errors import SpaceTimeError

log = logging.getLogger("spacetime_rl")
_Value = TypeVar("_Value")  # a job's result: train.py's objective (or objectives), evaluate.py's


#: Hydra's flags that take the next argument as their value (`--cfg job`, `-cn train`).
_VALUE_FLAGS = frozenset(
    {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}
)


def prepare_command_line(argv: list[str], schema: type, config_file: bool = False) -> list[str]:
    """The command line Hydra should see: `config_file=` expanded (train.py), every key checked.

    A key the schema does not have stops here with a did-you-mean, with or without `+` (Hydra's
    own message would suggest `+key=value`, which trains with the typo ignored). A `SpaceTimeError`
    is printed as one line and exits with status 1.
    """
    flags: list[str] = []
    overrides: list[str] = []
    after_flag = False
    for arg in argv[1:]:
        is_override = not after_flag and not arg.startswith("-") and "=" in arg
        (overrides if is_override else flags).append(arg)
        after_flag = arg in _VALUE_FLAGS
    try:
        overrides = check_command_line(overrides, schema, config_file)
    except SpaceTimeError as err:
        print(f"[{log.name}][ERROR] - {err}", file=sys.stderr)
        raise SystemExit(1) from None
    return [argv[0], *flags, *overrides]


def job_config(cfg: DictConfig) -> tuple[TrainConfig, Path]:
    """The checked config of this Hydra job and its output directory."""
    return to_train_config(cfg), Path(HydraConfig.get().runtime.output_dir)


def run_reporting_errors(job: Callable[[], _Value]) -> _Value | float:
    """Run a job; print a `SpaceTimeError` as a message, then exit 1 (single run) or return NaN (sweep)."""
    try:
        return job()
    except SpaceTimeError as err:
        log.error("%s", err)
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            return math.nan
        raise SystemExit(1) from None
