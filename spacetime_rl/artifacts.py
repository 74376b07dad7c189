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
import zipfile
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
TEMPORARY_SUFFIX: Final = ".tmp"
STATS_SUFFIX: Final = "_vecnormalize.pkl"
STATE_SUFFIX: Final = "_state.json"
#: `resume=latest`: the newest complete checkpoint of any run under the outputs folder.
LATEST: Final = "latest"
BEST_MODEL: Final = Path("best_models") / "best_model.zip"
RUN_CONFIG: Final = Path(".hydra") / "config.yaml"
RUN_OVERRIDES: Final = Path(".hydra") / "overrides.yaml"
#: The folder inside a run directory that evaluate.py writes that run's evaluations to.
EVALUATIONS: Final = "evaluations"


def checkpoint_path(directory: Path, timesteps: int) -> Path:
    return directory / f"{CHECKPOINT_PREFIX}_{timesteps}_steps.zip"


def stats_path(model_path: Path) -> Path:
    return model_path.with_name(f"{model_path.stem}{STATS_SUFFIX}")


def state_path(model_path: Path) -> Path:
    return model_path.with_name(f"{model_path.stem}{STATE_SUFFIX}")


def write_atomically(path: Path, write: Callable[[str], None]) -> None:
    """Call `write(temporary path)`, then move the result to `path` in one step.

    The file is flushed to disk before the move and the directory after it, so a power cut or a
    SIGKILL leaves the old file or the new one, never a part (a leftover temporary is removed by
    `clean_stale` at the next start).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}{TEMPORARY_SUFFIX}")
    try:
        write(str(temporary))
        _fsync(temporary)
        os.replace(temporary, path)
        _fsync(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def clean_stale(run_dir: Path) -> list[Path]:
    """Remove what a killed save left in a run directory; return the removed paths.

    That is temporaries (`.NAME.tmp`) and a snapshot's companions whose zip never arrived (the zip
    is moved into place last, so companions without it belong to a cut save).
    """
    removed = []
    for directory in (run_dir, run_dir / "checkpoints", run_dir / "best_models"):
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            stem = path.name.removesuffix(STATS_SUFFIX).removesuffix(STATE_SUFFIX)
            temporary = path.name.startswith(".") and path.name.endswith(TEMPORARY_SUFFIX)
            orphan = stem != path.name and not (directory / f"{stem}.zip").exists()
            if path.is_file() and (temporary or orphan):
                path.unlink()
                removed.append(path)
    return removed


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoints with every file of their snapshot on disk, fewest steps first."""
    found = [
        path
        for path in (run_dir / "checkpoints").glob(f"{CHECKPOINT_PREFIX}_*_steps.zip")
        if stats_path(path).is_file() and state_path(path).is_file() and zipfile.is_zipfile(path)
    ]
    return sorted(found, key=_checkpoint_steps)


def _checkpoint_steps(path: Path) -> int:
    steps = path.name.removeprefix(f"{CHECKPOINT_PREFIX}_").removesuffix("_steps.zip")
    return int(steps) if steps.isdigit() else -1


def resolve_resume(value: str, runs_root: Path) -> Path:
    """The checkpoint `resume=value` names: a checkpoint zip, a run directory (its newest complete
    checkpoint) or `latest` (the newest complete checkpoint of any run under `runs_root`)."""
    if value == LATEST:
        candidates = [p for run in _run_dirs(runs_root) for p in complete_checkpoints(run)]
        if not candidates:
            raise ConfigError(
                f"resume=latest found no complete checkpoint under {runs_root}: give a checkpoint zip "
                "or a run directory, e.g. resume=outputs/<date>/<time>"
            )
        return max(candidates, key=lambda p: p.stat().st_mtime)
    path = Path(value).expanduser()
    if path.is_dir():
        checkpoints = complete_checkpoints(path)
        if not checkpoints:
            raise ConfigError(
                f"resume={value!r} is a directory without a complete checkpoint in checkpoints/: point "
                f"resume at a run directory that saved one, or at a {CHECKPOINT_PREFIX}_<steps>_steps.zip"
            )
        return checkpoints[-1]
    return path


def _run_dirs(root: Path) -> list[Path]:
    return [config.parent.parent for config in root.rglob(str(RUN_CONFIG))] if root.is_dir() else []


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
    if missing or not zipfile.is_zipfile(model_path):
        run_dir = model_path.parent.parent
        newest = complete_checkpoints(run_dir) if (run_dir / "checkpoints").is_dir() else []
        fix = (
            f"resume from the newest complete one, resume={newest[-1]}"
            if newest
            else f"point resume at a {CHECKPOINT_PREFIX}_<steps>_steps.zip written by training"
        )
        what = f"missing {', '.join(missing)}" if missing else "the zip is cut short"
        raise ConfigError(f"resume={str(model_path)!r} is not a complete checkpoint ({what}): {fix}")
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
