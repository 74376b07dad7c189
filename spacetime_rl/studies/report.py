"""The report of a sweep folder: trials.csv, best_config.yaml and two figures, read from its Optuna study.

    trials.csv                   one row per trial: number, state, value, params_*, duration, folder
    best_config.yaml             the best trial's full config; `python train.py --config-dir <sweep dir>
                                 --config-name best_config` trains it again
    optimization_history.png     each completed trial's objective and the best so far
    param_importances.png        the share of the objective's variance each parameter explains alone

A multi-objective sweep (`sweep.objectives`) has no single best trial; instead of the last three:

    pareto_front.csv             the trials no other trial beats on every objective (study.best_trials)
    pareto_front.png             completed trials on the first two objectives, the front marked
    best_config_<n>.yaml         with sweep.front_configs=true: the config of each front trial n

Parameter importance is the correlation ratio (eta squared) over completed trials, numeric parameters
binned by rank: Optuna's fANOVA evaluators need scikit-learn, which this project does not install.
"""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any, Final

import numpy as np
import optuna
import pandas as pd
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from spacetime_rl.studies.storage import default_storage, open_storage

log = logging.getLogger(__name__)

SWEEPER_TARGET: Final = "hydra_plugins.spacetime_rl_sweeps.spacetime_optuna_sweeper.SpacetimeOptunaSweeper"
BEST_CONFIG: Final = "best_config"
PARETO_FRONT: Final = "pareto_front"
#: The sweeper's per-trial settings: a rerun of the best config is an ordinary run.
TRIAL_KEYS: Final = ("trial", "study_name", "storage")
MAX_BINS: Final = 5


def is_sweep_dir(path: Path) -> bool:
    """True for a folder written by `python train.py -m sweep=<name>` (the spacetime_optuna sweeper)."""
    multirun = Path(path) / "multirun.yaml"
    if not multirun.is_file():
        return False
    return OmegaConf.select(OmegaConf.load(multirun), "hydra.sweeper._target_") == SWEEPER_TARGET


def sweep_storage(sweep_dir: Path) -> str:
    """The storage URL of a sweep folder's study, from the config its sweep ran with (multirun.yaml)."""
    cfg = OmegaConf.load(Path(sweep_dir) / "multirun.yaml")
    return OmegaConf.select(cfg, "sweep.storage", default=None) or default_storage(sweep_dir)


def load_sweep_study(sweep_dir: Path) -> optuna.Study:
    """The study of a sweep folder, found through the config its sweep ran with (multirun.yaml)."""
    sweep_dir = Path(sweep_dir)
    cfg = OmegaConf.load(sweep_dir / "multirun.yaml")
    study_name = OmegaConf.select(cfg, "sweep.study_name", default=None) or sweep_dir.resolve().name
    return optuna.load_study(study_name=study_name, storage=open_storage(sweep_storage(sweep_dir)))


def write_sweep_report(sweep_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Write the report files into `out_dir` (default `sweep_dir`) and return their paths.

    The best config and the figures need a completed trial; the importance figure two.
    """
    sweep_dir = Path(sweep_dir)
    out_dir = sweep_dir if out_dir is None else Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    study = load_sweep_study(sweep_dir)
    trials = study.trials_dataframe(attrs=("number", "state", "value", "params", "duration"))
    trials["folder"] = [str(n) if (sweep_dir / str(n)).is_dir() else "" for n in trials["number"]]
    written = [out_dir / "trials.csv"]
    trials.to_csv(written[0], index=False)

    complete = trials[trials["state"] == "COMPLETE"]
    if complete.empty:
        log.warning("%s: no completed trial yet, so no best config or figures", sweep_dir)
        return written
    if len(study.directions) > 1:
        return written + _write_front(study, trials, sweep_dir, out_dir)
    best = study.best_trial
    best_config = _write_best_config(sweep_dir, best.number, out_dir)
    if best_config is not None:
        written.append(best_config)
    written.append(_plot_history(study, out_dir / "optimization_history.png"))
    if len(complete) >= 2:
        written.append(_plot_importances(complete, study, out_dir / "param_importances.png"))
    return written


def _write_front(study: optuna.Study, trials: pd.DataFrame, sweep_dir: Path, out_dir: Path) -> list[Path]:
    """pareto_front.csv and .png; with `sweep.front_configs`, a best_config_<n>.yaml per front trial."""
    numbers = sorted(trial.number for trial in study.best_trials)
    front = trials[trials["number"].isin(numbers)].drop(columns="state")
    written = [out_dir / f"{PARETO_FRONT}.csv", out_dir / f"{PARETO_FRONT}.png"]
    front.to_csv(written[0], index=False)
    complete = trials[trials["state"] == "COMPLETE"]
    front_figure(complete, numbers, study).savefig(written[1], dpi=100, bbox_inches="tight")
    if OmegaConf.select(OmegaConf.load(sweep_dir / "multirun.yaml"), "sweep.front_configs", default=False):
        for number in numbers:
            path = _write_best_config(sweep_dir, number, out_dir, f"{BEST_CONFIG}_{number}")
            written += [path] if path is not None else []
    return written


def front_figure(complete: pd.DataFrame, front: list[int], study: optuna.Study) -> Figure:
    """Completed trials on the study's first two objectives, the Pareto front marked and numbered."""
    names = _metric_names(study)
    columns = [
        f"values_{name}" if f"values_{name}" in complete else f"values_{i}" for i, name in enumerate(names)
    ]
    on_front = complete["number"].isin(front)
    figure = Figure(figsize=(7, 5))
    ax = figure.subplots()
    ax.scatter(
        complete.loc[~on_front, columns[0]], complete.loc[~on_front, columns[1]], c="0.6", label="trials"
    )
    points = complete[on_front].sort_values(columns[0])
    ax.plot(points[columns[0]], points[columns[1]], "o-", c="tab:red", label="Pareto front")
    for _, row in points.iterrows():
        ax.annotate(
            str(row["number"]), (row[columns[0]], row[columns[1]]), xytext=(4, 4), textcoords="offset points"
        )
    directions = [d.name.lower() for d in study.directions]
    ax.set_xlabel(f"{names[0]} ({directions[0]})")
    ax.set_ylabel(f"{names[1]} ({directions[1]})")
    more = f", {len(names) - 2} more objectives not drawn" if len(names) > 2 else ""
    ax.set_title(f"{study.study_name}: {len(front)} of {len(complete)} completed trials on the front{more}")
    ax.legend()
    return figure


def _metric_names(study: optuna.Study) -> list[str]:
    return study.metric_names or [f"objective {i}" for i in range(len(study.directions))]


def _write_best_config(sweep_dir: Path, number: int, out_dir: Path, name: str = BEST_CONFIG) -> Path | None:
    job_config = sweep_dir / str(number) / ".hydra" / "config.yaml"
    if not job_config.is_file():
        log.warning("%s is missing: cannot write %s.yaml", job_config, name)
        return None
    cfg = OmegaConf.load(job_config)
    assert isinstance(cfg, DictConfig)
    for key in TRIAL_KEYS:
        if OmegaConf.select(cfg, f"sweep.{key}", default=None) is not None:
            cfg.sweep[key] = None
    body = OmegaConf.to_yaml(OmegaConf.merge({"defaults": ["train_schema", "_self_"]}, cfg))
    path = out_dir / f"{name}.yaml"
    which = "The best trial" if name == BEST_CONFIG else "A Pareto-front trial"
    path.write_text(
        f"# {which} ({number}) of the sweep in {sweep_dir}. Train it again with\n"
        f"#   python train.py --config-dir {out_dir} --config-name {name}\n{body}"
    )
    return path


def _plot_history(study: optuna.Study, path: Path) -> Path:
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_optimization_history

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = plot_optimization_history(study)
    figure = ax.figure
    assert isinstance(figure, Figure)
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def param_importances(complete: pd.DataFrame) -> dict[str, float]:
    """Eta squared of the objective per `params_*` column, largest first; numeric values binned by rank.

    NaN for every parameter when all trials scored the same: no variance, nothing to explain.
    """
    values = complete["value"].to_numpy(dtype=float)
    total = float(((values - values.mean()) ** 2).sum())
    importances: dict[str, float] = {}
    for column in (c for c in complete.columns if c.startswith("params_")):
        groups = _groups(complete[column])
        explained = sum(len(g) * (values[g].mean() - values.mean()) ** 2 for g in groups if len(g))
        importances[column.removeprefix("params_")] = float(explained / total) if total > 0 else math.nan
    return dict(sorted(importances.items(), key=lambda item: item[1], reverse=True))


def _groups(column: pd.Series) -> list[np.ndarray]:
    positions = np.arange(len(column))
    if pd.api.types.is_numeric_dtype(column) and column.nunique() > MAX_BINS:
        order = np.argsort(column.to_numpy(), kind="stable")
        return list(np.array_split(order, MAX_BINS))
    codes: Any = pd.factorize(column.astype(str))[0]
    return [positions[codes == code] for code in np.unique(codes)]


def _plot_importances(complete: pd.DataFrame, study: optuna.Study, path: Path) -> Path:
    importances_figure(complete, study.study_name).savefig(path, dpi=100, bbox_inches="tight")
    return path


def importances_figure(complete: pd.DataFrame, study_name: str) -> Figure:
    """A bar per parameter of `param_importances`; says so when no variance makes them undefined."""
    importances = param_importances(complete)
    names = list(importances)[::-1]
    figure = Figure(figsize=(7, 0.5 * len(names) + 1.5))
    ax = figure.subplots()
    ax.barh(names, [0.0 if math.isnan(importances[name]) else importances[name] for name in names])
    ax.set_xlim(0, 1)
    if all(math.isnan(value) for value in importances.values()):
        value = complete["value"].iloc[0]
        ax.text(
            0.5,
            0.5,
            f"undefined: every completed trial scored {value:.4g},\nso no parameter explains any variance",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("share of objective variance explained (eta squared)")
    ax.set_title(f"Parameter importance, {len(complete)} completed trials of {study_name}")
    return figure
