"""Learning benchmark: does PPO with the default reward and settings learn easy goals in 300k steps?

    python -m benchmarks.learning [--timesteps 300000] [--eval-freq 20000] [--seeds 0] [extra overrides...]

Trains with the real `conf/` defaults (quick_test's episode length, goals 3-10 m) on the embedded
simulator over HTTP, evaluates every `--eval-freq` steps, and prints the eval success-rate curve and
the wall time as a Markdown table. Target: >= 0.80 success within 300k steps.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spacetime_rl.config import compose_train_config
from spacetime_rl.training import train

TARGET = 0.8


def success_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(timesteps, eval/success_rate) pairs from the run's TensorBoard events."""
    points: dict[int, float] = {}
    for events in sorted((run_dir / "tensorboard").rglob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if "eval/success_rate" in accumulator.Tags()["scalars"]:
            points |= {e.step: e.value for e in accumulator.Scalars("eval/success_rate")}
    return sorted(points.items())


def run(
    seed: int, timesteps: int, eval_freq: int, overrides: list[str]
) -> tuple[list[tuple[int, float]], float]:
    config = compose_train_config(
        [
            f"training.total_timesteps={timesteps}",
            f"training.eval_freq={eval_freq}",
            f"training.save_freq={timesteps}",
            "training.eval_episodes=32",
            f"training.seed={seed}",
            "training.progress_bar=false",
            *overrides,
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(config, Path(tmp))
        wall = time.perf_counter() - start
        return success_curve(Path(tmp)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=300_000)
    parser.add_argument("--eval-freq", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. env.max_goal_distance=10")
    args = parser.parse_args()

    for seed in args.seeds:
        curve, wall = run(seed, args.timesteps, args.eval_freq, args.overrides)
        first = next((steps for steps, rate in curve if rate >= TARGET), None)
        print(f"\nseed {seed}: wall {wall:.0f} s, first eval >= {TARGET:.0%} at {first or 'never'} steps")
        print("| timesteps | eval success rate |\n|---:|---:|")
        for steps, rate in curve:
            print(f"| {steps:,} | {rate:.2f} |")


if __name__ == "__main__":
    main()
