"""Run directories on disk, as every job reads and writes them; torch-free.

A run directory is Hydra's output directory of one `train.py` job: `.hydra/config.yaml` (the
composed config), `.hydra/overrides.yaml`, the snapshots below and `metrics.json`.

Snapshots: a model zip with its VecNormalize statistics and a JSON state, written atomically.

A snapshot `NAME.zip` has two companions, `NAME_vecnormalize.pkl` and `NAME_state.json`. Each file
is written to a temporary name and moved into place with `os.replace`, companions first, so a
model zip on disk always has complete companions even if training dies mid-save. All three carry
the same random `snapshot_id`: a fixed name (`best_model.zip`, `final_model.zip`) whose save was cut
between the companions and the zip is caught by `check_same_save` instead of being used.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from spacetime_rl.config import EnvConfig, TasksConfig
from spacetime_rl.errors import ConfigError

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecNormalize

_Group = TypeVar("_Group")

CHECKPOINT_PREFIX: Final = "vr_nav_model"
SNAPSHOT_ID: Final = "snapshot_id"  # an attribute of the saved model and statistics, a key of the state
BEST_MODEL: Final = Path("best_models") / "best_model.zip"
RUN_CONFIG: Final = Path(".hydra") / "config.yaml"
RUN_OVERRIDES: Final = Path(".hydra") / "overrides.yaml"


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


def config_hash(config: DictConfig | dict[str, Any] | None) -> str | None:
    """A short SHA-256 of a config's canonical JSON: the same settings give the same hash."""
    if config is None:
        return None
    data = OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig) else config
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
