"""Snapshots on disk: a model zip with its VecNormalize statistics and a JSON state, written atomically.

A snapshot `NAME.zip` has two companions, `NAME_vecnormalize.pkl` and `NAME_state.json`. Each file
is written to a temporary name and moved into place with `os.replace`, companions first, so a
model zip on disk always has complete companions even if training dies mid-save.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from spacetime_rl.errors import ConfigError

CHECKPOINT_PREFIX: Final = "vr_nav_model"


def checkpoint_path(directory: Path, timesteps: int) -> Path:
    return directory / f"{CHECKPOINT_PREFIX}_{timesteps}_steps.zip"


def stats_path(model_path: Path) -> Path:
    return model_path.with_name(f"{model_path.stem}_vecnormalize.pkl")


def state_path(model_path: Path) -> Path:
    return model_path.with_name(f"{model_path.stem}_state.json")


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(temporary path)`, then move the result to `path` in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        write(str(temporary))
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(path: Path, data: dict[str, Any]) -> None:
    def write(temporary: str) -> None:
        Path(temporary).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    write_atomically(path, write)


def save_snapshot(model: BaseAlgorithm, env: VecNormalize, path: Path, state: dict[str, Any]) -> None:
    """Write `path` (a .zip), its VecNormalize statistics and `state`."""
    write_atomically(stats_path(path), env.save)
    write_json(state_path(path), state)
    write_atomically(path, model.save)


def load_state(model_path: Path) -> dict[str, Any]:
    """The state JSON of a snapshot, after checking every file of it is there."""
    missing = [
        str(p) for p in (model_path, stats_path(model_path), state_path(model_path)) if not p.is_file()
    ]
    if missing:
        raise ConfigError(
            f"resume={str(model_path)!r} is not a complete checkpoint: missing {', '.join(missing)}. "
            f"Point resume at a {CHECKPOINT_PREFIX}_<steps>_steps.zip written by training"
        )
    state: dict[str, Any] = json.loads(state_path(model_path).read_text())
    return state
