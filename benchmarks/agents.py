"""Agent benchmark: trained PPO against the random and heuristic policies, on tasks that tell them apart.

    python -m benchmarks.agents [--timesteps 300000] [--seeds 0 1 2] [--episodes 100]
                                [--cells far obstacle_course maze multi far_comfort] [--write]

Each cell is trained once per seed with `python train.py` (the user's command; runs kept in
--out), then `python evaluate.py model=<run> policy=trained|heuristic|random` plays every policy on
the same held-out episodes of that run (training.seed + 20000: never trained or selected on; the
trained policy is the run's best model). Results pool the seeds' episodes: success with a 95%
Wilson interval and the per-seed range, collisions and falls per episode, comfort, and the path
efficiency and time to goal of successful episodes. `--write` puts the tables into
docs/benchmarks.md between the `agents` markers and the figures into docs/figures/; it replaces
the whole table, so it takes every cell's runs (refused for some cells: print those instead).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from benchmarks.learning import success_curve
from benchmarks.memory import ROOT
from benchmarks.report import machine, write_results
from benchmarks.tasks import SANITY_CHECK
from spacetime_rl.metrics import wilson_interval

#: Goals that are really far: 25-30 m on the 48 m platform (the open field fits them, mean 27 m).
FAR: Final = ["env.min_goal_distance=25", "env.max_goal_distance=30", "env.max_episode_steps=500"]
CELLS: Final = {
    "far": ["task=navigate", *FAR],
    "obstacle_course": ["task=obstacle_course"],
    "maze": ["task=maze"],
    "multi": ["task=multi"],
    "far_comfort": ["preset=comfort_optimized", "task=navigate", *FAR],
}
#: The sanity-check settings with the default [256, 256] network.
FAST: Final = [
    *SANITY_CHECK,
    "training.eval_episodes=32",
    "training.held_out_episodes=0",  # evaluate.py plays the held-out episodes below, every policy alike
    "training.torch_threads=1",
]
POLICIES: Final = ("trained", "heuristic", "random")
FIGURES: Final = ROOT / "docs" / "figures"
BEGIN: Final = (
    "<!-- agents:begin (written by python -m benchmarks.agents --write; edit outside the markers) -->"
)
END: Final = "<!-- agents:end -->"


@dataclass
class SeedRun:
    """One cell trained with one seed: its learning curve and each policy's held-out episodes."""

    cell: str
    seed: int
    timesteps: int
    overrides: list[str]  # beyond the cell's and FAST
    wall: float  # seconds of train.py
    curve: list[tuple[int, float]]  # (agent-steps, in-training eval success)
    episodes: dict[str, list[dict[str, Any]]]  # policy -> evaluate.py's per_episode


def run_cell(cell: str, seed: int, timesteps: int, episodes: int, out: Path, extra: list[str]) -> SeedRun:
    run_dir = out / cell / f"seed{seed}"
    overrides = [
        *CELLS[cell],
        *FAST,
        f"training.total_timesteps={timesteps}",
        f"training.eval_freq={max(timesteps // 10, 1)}",
        f"training.save_freq={timesteps}",
        f"training.seed={seed}",
        f"name=bench_{cell}",
        *extra,
        f"hydra.run.dir={run_dir}",
    ]
    start = time.perf_counter()
    _run([sys.executable, "train.py", *overrides])
    wall = time.perf_counter() - start
    played = {}
    for policy in POLICIES:
        where = run_dir / "evaluations" / policy
        _run(
            [
                sys.executable,
                "evaluate.py",
                f"model={run_dir}",
                f"policy={policy}",
                f"episodes={episodes}",
                "plot_episodes=0",
                f"hydra.run.dir={where}",
            ]
        )
        played[policy] = json.loads((where / "eval" / "metrics.json").read_text())["per_episode"]
    return SeedRun(cell, seed, timesteps, extra, wall, success_curve(run_dir), played)


def _run(command: list[str]) -> None:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr[-3000:]}")


def summary(episodes: list[dict[str, Any]]) -> dict[str, float]:
    """Pooled figures of episodes: success and its 95% interval, events per episode, comfort."""
    successes = [e for e in episodes if e["success"]]
    low, high = wilson_interval(len(successes), len(episodes))

    def mean(values: list[float]) -> float:
        return statistics.fmean(values) if values else float("nan")

    return {
        "episodes": len(episodes),
        "success": len(successes) / len(episodes),
        "low": low,
        "high": high,
        "collisions": mean([e["collisions"] for e in episodes]),
        "falls": mean([float(e["fell"]) for e in episodes]),
        "comfort": mean([e["comfort"] for e in episodes]),
        "efficiency": mean([e["path_efficiency"] for e in successes if e["path_efficiency"] is not None]),
        "time_to_goal": mean([e["time_to_goal"] for e in successes]),
    }


def pooled(per_seed: list[list[dict[str, Any]]]) -> dict[str, float]:
    """`summary` of every seed's episodes together."""
    return summary(list(itertools.chain.from_iterable(per_seed)))


def groups(runs: list[SeedRun]) -> dict[str, list[SeedRun]]:
    """Runs by row of the results table: each cell, and each task of a multi-task cell."""
    rows: dict[str, list[SeedRun]] = {}
    for run in runs:
        rows.setdefault(run.cell, []).append(run)
    return rows


def row_episodes(runs: list[SeedRun], policy: str, task: str | None = None) -> list[list[dict[str, Any]]]:
    """Each seed's episodes of `policy` (only those of `task`, when given)."""
    return [[e for e in r.episodes[policy] if task is None or e["task"] == task] for r in runs]


def results_table(runs: list[SeedRun]) -> str:
    lines = [
        "| cell | policy | success [95% CI] | per seed | collisions/ep | falls | comfort | path efficiency "
        "| time to goal (s) | vs heuristic |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for cell, cell_runs in groups(runs).items():
        tasks = sorted({e["task"] for e in cell_runs[0].episodes["trained"]})
        for task in [None, *tasks] if len(tasks) > 1 else [None]:
            label = cell if task is None else f"{cell}: {task}"
            per_policy = {policy: row_episodes(cell_runs, policy, task) for policy in POLICIES}
            heuristic = pooled(per_policy["heuristic"])
            for policy, per_seed in per_policy.items():
                s = pooled(per_seed)
                rates = [summary(e)["success"] for e in per_seed if e]
                seeds = f"{min(rates):.2f}-{max(rates):.2f}"
                versus = "" if policy != "trained" else _versus(s, heuristic)
                lines.append(
                    f"| {label} | {policy} | {s['success']:.3f} [{s['low']:.3f}, {s['high']:.3f}] | {seeds} "
                    f"| {s['collisions']:.2f} | {s['falls']:.3f} | {s['comfort']:.3f} "
                    f"| {_figure(s['efficiency'], 2)} | {_figure(s['time_to_goal'], 1)} | {versus} |"
                )
    return "\n".join(lines)


def _figure(value: float, digits: int) -> str:
    """A figure of successful episodes, or '-' when there were none."""
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def _versus(trained: dict[str, float], heuristic: dict[str, float]) -> str:
    """Whether the trained success interval lies above, overlaps or lies below the heuristic's."""
    if trained["low"] > heuristic["high"]:
        return "**above**"
    if trained["high"] < heuristic["low"]:
        return f"below by {heuristic['success'] - trained['success']:.2f}"
    return f"overlaps ({trained['success'] - heuristic['success']:+.2f})"


def describe(runs: list[SeedRun]) -> str:
    """What ran: the command, the budget per run, the held-out episodes and each cell's wall times."""
    cells = groups(runs)
    seeds = sorted({r.seed for r in runs})
    steps = sorted({r.timesteps for r in runs})
    episodes = sorted({len(r.episodes["trained"]) for r in runs})
    walls = "; ".join(
        f"{cell} {min(r.wall for r in rs):.0f}-{max(r.wall for r in rs):.0f} s" for cell, rs in cells.items()
    )
    extra = sorted({" ".join(r.overrides) for r in runs if r.overrides})
    command = (
        f"python -m benchmarks.agents --timesteps {'/'.join(map(str, steps))} --seeds {' '.join(map(str, seeds))} "
        f"--episodes {'/'.join(map(str, episodes))} --cells {' '.join(cells)}{' ' + ' / '.join(extra) if extra else ''}"
    )
    return (
        f"Command: `{command}` (each seed may run as its own process, then `--report <results-*.json> --write`). "
        f"{'/'.join(f'{s:,}' for s in steps)} agent-steps per training run; {'/'.join(map(str, episodes))} "
        f"held-out episodes per policy and seed. Training wall time per run (min-max over seeds): {walls}."
    )


def learning_figure(runs: list[SeedRun], path: Path) -> None:
    """In-training eval success vs agent-steps per cell: the seeds' mean and range, heuristic dashed."""
    cells = groups(runs)
    figure, axes = plt.subplots(1, len(cells), figsize=(3.2 * len(cells), 3.0), sharey=True, squeeze=False)
    for axis, (cell, cell_runs) in zip(axes[0], cells.items(), strict=True):
        steps = sorted({s for r in cell_runs for s, _ in r.curve})
        rates = [[dict(r.curve).get(s, float("nan")) for r in cell_runs] for s in steps]
        axis.plot(steps, [statistics.fmean(v) for v in rates], label="PPO, mean of seeds")
        axis.fill_between(steps, [min(v) for v in rates], [max(v) for v in rates], alpha=0.25)
        axis.axhline(
            pooled(row_episodes(cell_runs, "heuristic"))["success"],
            ls="--",
            c="k",
            label="heuristic",
        )
        axis.set_title(cell)
        axis.set_xlabel("agent-steps")
        axis.set_ylim(0, 1.02)
    axes[0][0].set_ylabel("success (in-training eval)")
    axes[0][0].legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def comfort_figure(runs: list[SeedRun], cells: list[str], path: Path) -> None:
    """Success vs comfort of each cell's policies on its held-out episodes: one point per seed, and
    the pooled figure with its success interval."""
    figure, axis = plt.subplots(figsize=(5.5, 4.0))
    by_cell = groups(runs)
    for cell in cells:
        for policy, marker in zip(("trained", "heuristic"), "os", strict=True):
            per_seed = row_episodes(by_cell[cell], policy)
            together = pooled(per_seed)
            points = axis.errorbar(
                together["comfort"],
                together["success"],
                yerr=[[together["success"] - together["low"]], [together["high"] - together["success"]]],
                marker=marker,
                ls="none",
                capsize=3,
                label=f"{cell}: {policy}",
            )
            seeds = [summary(e) for e in per_seed]
            axis.scatter(
                [s["comfort"] for s in seeds],
                [s["success"] for s in seeds],
                marker=marker,
                s=12,
                alpha=0.4,
                color=points[0].get_color(),
            )
    axis.set_xlabel("comfort (mean score per episode)")
    axis.set_ylabel("success on held-out episodes")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=300_000, help="agent-steps per training run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=100, help="held-out episodes per policy and seed")
    parser.add_argument("--cells", nargs="+", choices=list(CELLS), default=list(CELLS))
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench" / "agents")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md and docs/figures/")
    parser.add_argument(
        "--report",
        type=Path,
        nargs="+",
        help="make the tables from earlier runs' results-*.json (e.g. one per seed, run side by side)",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every training run")
    args = parser.parse_args(argv)
    if args.write and not args.report and set(args.cells) != set(CELLS):
        parser.error(_partial_write(args.cells))

    if args.report:
        runs = [SeedRun(**run) for path in args.report for run in json.loads(path.read_text())]
        runs.sort(key=lambda run: (list(CELLS).index(run.cell), run.seed))
        if args.write and {run.cell for run in runs} != set(CELLS):
            parser.error(_partial_write(sorted({run.cell for run in runs}, key=list(CELLS).index)))
        source = f" Tables made again from {', '.join(str(path) for path in args.report)}."
    else:
        runs, source = [], ""
        results = args.out / f"results-{'-'.join(map(str, args.seeds))}.json"
        for cell in args.cells:
            for seed in args.seeds:
                run = run_cell(cell, seed, args.timesteps, args.episodes, args.out, args.overrides)
                print(f"{cell} seed {seed}: trained in {run.wall:.0f} s", file=sys.stderr, flush=True)
                runs.append(run)
                results.write_text(json.dumps([asdict(r) for r in runs]))
    text = "\n\n".join([f"Machine: {machine()}{source}", describe(runs), results_table(runs)])
    print(text)
    if args.write:
        FIGURES.mkdir(parents=True, exist_ok=True)
        learning_figure(runs, FIGURES / "agents_learning.png")
        comfort = [c for c in ("far", "far_comfort") if c in groups(runs)]
        if comfort:
            comfort_figure(runs, comfort, FIGURES / "agents_comfort.png")
        write_results(text, BEGIN, END)


def _partial_write(cells: list[str]) -> str:
    return (
        f"--write replaces the whole agents table in docs/benchmarks.md, and these runs have only "
        f"{', '.join(cells)} of its cells ({', '.join(CELLS)}): leave out --write to print their "
        "rows, or --report the results-*.json of every cell"
    )


if __name__ == "__main__":
    main()
