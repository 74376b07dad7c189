"""Snapshots on disk: a model zip with its VecNormalize statistics and a JSON state, written atomically.

A snapshot `NAME.zip` has two companions, `NAME_vecnormalize.pkl` and `NAME_state.json`. Each file
is written to a temporary name and moved into place with `os.replace`, companions first, so a
model zip on disk always has complete companions even if training dies mid-save. All three carry
the same random `snapshot_id`: a fixed name (`best_model.zip`, `final_model.zip`) whose save was cut
between the companions and the zip is caught by `check_same_save` instead of being used.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from spacetime_rl.errors import ConfigError

CHECKPOINT_PREFIX: Final = "vr_nav_model"
SNAPSHOT_ID: Final = "snapshot_id"  # an attribute of the saved model and statistics, a key of the state


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
    """Write `path` (a .zip), its VecNormalize statistics and `state`, tagged with one new id."""
    snapshot_id = uuid.uuid4().hex
    vars(model)[SNAPSHOT_ID] = vars(env)[SNAPSHOT_ID] = snapshot_id
    write_atomically(stats_path(path), env.save)
    write_json(state_path(path), state | {SNAPSHOT_ID: snapshot_id})
    write_atomically(path, model.save)


def check_same_save(
    model_path: Path, model: object, statistics: object, state: Mapping[str, Any] | None = None
) -> None:
    """Raise ConfigError unless the loaded zip, statistics (and state) come from one save.

    Snapshots written before the ids existed carry none and pass.
    """
    ids = {
        model_path.name: vars(model).get(SNAPSHOT_ID),
        stats_path(model_path).name: vars(statistics).get(SNAPSHOT_ID),
    }
    if state is not None:
        ids[state_path(model_path).name] = state.get(SNAPSHOT_ID)
    if len(set(ids.values())) > 1:
        seen = ", ".join(f"{name}: {value or 'none'}" for name, value in ids.items())
        raise ConfigError(
            f"{model_path} and its companion files come from different saves (snapshot ids {seen}): "
            "training stopped while writing them. Use another snapshot, e.g. the latest "
            f"checkpoints/{CHECKPOINT_PREFIX}_<steps>_steps.zip of the run"
        )


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
