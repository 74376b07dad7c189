"""Compare training runs: one row per run, sorted by the objective, and their learning curves.

python -m spacetime_rl.compare multirun/2024-01-01/12-00-00          # every run of a multirun
python -m spacetime_rl.compare outputs/2024-01-01/12-00-00 outputs/...  # chosen run directories
python -m spacetime_rl.compare multirun/... --out report/             # where the CSV and PNG go

Each row holds the run's name and tags, its overrides (`.hydra/overrides.yaml`) and its final and
best evaluation (`metrics.json`). Writes `comparison.csv` and `learning_curves.png` (eval/success_rate and
eval/mean_reward against timesteps from the runs' TensorBoard events, one line per run) into the
multirun directory, or the current directory when several paths are given, or `--out`.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from spacetime_rl import studies
from spacetime_rl.artifacts import EVALUATIONS, RUN_CONFIG, load_overrides
from spacetime_rl.config import joined_label
from spacetime_rl.metrics import EVAL_METRICS

__all__ = ["RunRow", "compare", "find_runs", "is_sweep_dir", "learning_curves", "report_sweep"]

log = logging.getLogger(__name__)

CSV_NAME: Final = "comparison.csv"
CURVES_NAME: Final = "learning_curves.png"
CURVE_TAGS: Final = ("eval/success_rate", "eval/mean_reward")
DEFAULT_OBJECTIVE: Final = "eval/success_rate"
#: Objectives where less is better; every other eval/* metric is maximised.
LOWER_IS_BETTER: Final = frozenset({"eval/collisions", "eval/falls", "eval/timeouts", "eval/time_to_goal"})


@dataclass
class RunRow:
    """One run as the comparison shows it; `final`/`best` are empty for a run without metrics.json."""

    run_dir: Path
    overrides: list[str]
    objective: str
    name: str | None = None  # metrics.json's (name= on the command line, else the preset)
    tags: list[str] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    num_timesteps: int | None = None

    @property
    def value(self) -> float:
        return float(self.final.get(self.objective, math.nan))

    def to_csv(self, root: Path | None) -> dict[str, Any]:
        row: dict[str, Any] = {
            "run": _relative(self.run_dir, root),
            "name": self.name,
            "tags": " ".join(self.tags),
            "overrides": " ".join(self.overrides),
            "objective": self.objective,
            "value": self.value,
            "num_timesteps": self.num_timesteps,
        }
        for kind, metrics in (("final", self.final), ("best", self.best)):
            row |= {f"{kind}/{key}": metrics.get(key) for key in EVAL_METRICS}
        row |= {f"final/{key}": value for key, value in self.final.items() if key.count("/") == 2}  # per task
        return row


def is_sweep_dir(path: Path) -> bool:
    """An Optuna sweep directory (`python train.py -m sweep=<name>`)."""
    return studies.is_sweep_dir(path)


def report_sweep(sweep_dir: Path, out_dir: Path) -> None:
    """The study report of an Optuna sweep: trials.csv, best_config.yaml and figures (docs/sweeps.md)."""
    for path in studies.write_sweep_report(sweep_dir, out_dir):
        log.info("wrote %s", path)


def find_runs(paths: Sequence[Path]) -> list[Path]:
    """Training run directories among `paths`: each path is a run directory or holds run directories
    below it (evaluations kept inside runs, `<run>/evaluations/...`, are not runs)."""
    runs: list[Path] = []
    for path in paths:
        if (path / RUN_CONFIG).is_file():
            runs.append(path)
        else:
            found = (p.parent.parent for p in path.rglob(str(RUN_CONFIG)))
            runs.extend(
                sorted((r for r in found if EVALUATIONS not in r.relative_to(path).parts), key=_natural)
            )
    return list(dict.fromkeys(runs))


def read_run(run_dir: Path, objective: str | None) -> RunRow:
    metrics_path = run_dir / "metrics.json"
    metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
    name = objective or metrics.get("objective", {}).get("name") or DEFAULT_OBJECTIVE
    return RunRow(
        run_dir=run_dir,
        overrides=[o for o in load_overrides(run_dir) if not o.startswith("hydra.")],
        objective=name,
        name=metrics.get("name"),
        tags=metrics.get("tags", []),
        final=metrics.get("final", {}),
        best=metrics.get("best", {}),
        num_timesteps=metrics.get("num_timesteps"),
    )


def sort_rows(rows: list[RunRow]) -> list[RunRow]:
    """Best first by each row's objective; runs without a value last."""

    def key(row: RunRow) -> tuple[bool, float]:
        value = row.value
        if math.isnan(value):
            return (True, 0.0)
        return (False, value if row.objective in LOWER_IS_BETTER else -value)

    return sorted(rows, key=key)


def learning_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """`CURVE_TAGS` scalars of a run's TensorBoard events (every <name>_<n> of it), by step.

    A sweep trial trains its seeds into `seed_<k>/`: its curve is the mean over the seeds at the
    steps every seed logged.
    """
    seed_dirs = (
        [run_dir] if (run_dir / "tensorboard").is_dir() else sorted(run_dir.glob("seed_*"), key=_natural)
    )
    per_seed = [_tensorboard_curves(d / "tensorboard") for d in seed_dirs]
    curves: dict[str, list[tuple[int, float]]] = {}
    for tag in CURVE_TAGS:
        seeds = [seed[tag] for seed in per_seed]
        steps = sorted(set.intersection(*(set(s) for s in seeds))) if seeds else []
        curves[tag] = [(step, sum(s[step] for s in seeds) / len(seeds)) for step in steps]
    return curves


def _tensorboard_curves(tensorboard_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, dict[int, float]] = {tag: {} for tag in CURVE_TAGS}
    for events_dir in sorted({p.parent for p in tensorboard_dir.rglob("events.out.tfevents.*")}):
        events = EventAccumulator(str(events_dir))
        events.Reload()
        available = set(events.Tags()["scalars"])
        for tag in CURVE_TAGS:
            if tag in available:
                curves[tag] |= {e.step: e.value for e in events.Scalars(tag)}
    return curves


def plot_learning_curves(rows: Sequence[RunRow], labels: Sequence[str], path: Path) -> Path:
    learning_curves_figure(rows, labels).savefig(path, dpi=90)
    return path


def learning_curves_figure(rows: Sequence[RunRow], labels: Sequence[str]) -> Figure:
    """One panel per `CURVE_TAGS` tag, a line per run; a panel no run has data for says so."""
    figure = Figure(figsize=(6.0 * len(CURVE_TAGS), 4.5))
    axes = figure.subplots(1, len(CURVE_TAGS), squeeze=False)[0]
    for row, label in zip(rows, labels, strict=True):
        curves = learning_curves(row.run_dir)
        for ax, tag in zip(axes, CURVE_TAGS, strict=True):
            if curves[tag]:
                steps, values = zip(*curves[tag], strict=True)
                ax.plot(steps, values, marker=".", label=label)
    for ax, tag in zip(axes, CURVE_TAGS, strict=True):
        ax.set_title(tag)
        ax.set_xlabel("timesteps")
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(
                0.5, 0.5, f"no data: no run logged {tag}", ha="center", va="center", transform=ax.transAxes
            )
    if axes[0].lines:
        axes[0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def compare(paths: Sequence[Path], out_dir: Path | None = None, objective: str | None = None) -> list[RunRow]:
    """Compare the runs under `paths`; write the CSV and the learning curves; return the sorted rows."""
    if out_dir is None:
        out_dir = paths[0] if len(paths) == 1 and not (paths[0] / RUN_CONFIG).is_file() else Path.cwd()
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        if is_sweep_dir(path):
            report_sweep(path, out_dir)
    runs = find_runs(paths)
    if not runs:
        raise FileNotFoundError(
            f"no training runs (a directory with {RUN_CONFIG}) under {', '.join(map(str, paths))}: "
            "pass a multirun directory or run directories written by train.py"
        )
    rows = sort_rows([read_run(run, objective) for run in runs])
    root = paths[0] if len(paths) == 1 else None
    records = [row.to_csv(root) for row in rows]
    with open(out_dir / CSV_NAME, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(dict.fromkeys(k for r in records for k in r)))
        writer.writeheader()
        writer.writerows(records)
    labels = _labels(rows, root)
    plot_learning_curves(rows, labels, out_dir / CURVES_NAME)
    _print(rows, labels, root)
    log.info("wrote %s and %s", out_dir / CSV_NAME, out_dir / CURVES_NAME)
    return rows


def _labels(rows: Sequence[RunRow], root: Path | None) -> list[str]:
    """Each run's overrides that not every run shares (its directory when none differ)."""
    shared = set.intersection(*(set(row.overrides) for row in rows)) if rows else set()
    return [
        " ".join(o for o in row.overrides if o not in shared) or _relative(row.run_dir, root) for row in rows
    ]


def _print(rows: Sequence[RunRow], labels: Sequence[str], root: Path | None) -> None:
    table = Table(title=f"{len(rows)} runs, best first by {rows[0].objective}")
    for column in ("run", "name", "differs", "objective", "final", "best", "steps"):
        table.add_column(column, justify="right" if column in ("final", "best", "steps") else "left")
    # multi-task runs: each task's final success rate (eval/<task>/success_rate)
    tasks = sorted({key.split("/")[1] for row in rows for key in row.final if key.count("/") == 2})
    for task in tasks:
        table.add_column(f"{task} success", justify="right")
    for row, label in zip(rows, labels, strict=True):
        best = row.best.get(row.objective)
        per_task = [row.final.get(f"eval/{task}/success_rate") for task in tasks]
        table.add_row(
            _relative(row.run_dir, root),
            joined_label(row.name, row.tags) if row.name else "-",
            label,
            row.objective,
            "-" if math.isnan(row.value) else f"{row.value:.3f}",
            "-" if best is None else f"{best:.3f}",
            str(row.num_timesteps or "-"),
            *("-" if value is None else f"{value:.3f}" for value in per_task),
        )
    Console().print(table)


def _relative(path: Path, root: Path | None) -> str:
    return str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)


def _natural(path: Path) -> tuple[Any, ...]:
    """Multirun job folders in numeric order (2_quick_test before 10_quick_test)."""
    return tuple(
        tuple((0, int(piece), "") if piece.isdigit() else (1, 0, piece) for piece in re.split(r"(\d+)", part))
        for part in path.parts
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spacetime_rl.compare",
        description="Compare training runs: overrides, final and best metrics, learning curves.",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="a multirun directory, or run directories")
    parser.add_argument("--out", type=Path, default=None, help="directory for comparison.csv and the PNG")
    parser.add_argument(
        "--objective", default=None, help="metric to sort by (default: each run's training.objective)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # "No path found after ..." per run
    missing = [str(p) for p in args.paths if not p.is_dir()]
    if missing:
        log.error(
            "not a directory: %s; pass multirun or run directories written by train.py", ", ".join(missing)
        )
        return 1
    if args.objective is not None and args.objective not in EVAL_METRICS:
        log.error("--objective %s is invalid: use one of %s", args.objective, ", ".join(EVAL_METRICS))
        return 1
    try:
        compare(args.paths, args.out, args.objective)
    except FileNotFoundError as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
