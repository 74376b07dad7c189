"""Scenario benchmark: one single-task policy per task, and one multi-task policy, at the same step budget.

    python -m benchmarks.tasks [--timesteps 150000] [--seed 0] [extra overrides...]

Each run trains on the embedded simulator with the `conf/` defaults plus the fast settings of the
docs/training.md sanity check (32 agents, a small network), then the final evaluation (48
episodes) scores it. The multi-task run (task=multi) gets the same total budget as one
single-task run, so each of its tasks sees about a third of the experience. Prints a Markdown
table: per task, the single-task policy's final eval success rate and the multi-task policy's.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from spacetime_rl.config import compose_train_config
from spacetime_rl.training import train

TASKS = ("navigate", "obstacle_course", "maze")
#: The docs/training.md sanity-check settings: 32 agents on one simulator, short rollouts, few epochs.
SANITY_CHECK = [
    "env.agents_per_environment=32",
    "ppo.n_steps=64",
    "ppo.batch_size=512",
    "ppo.n_epochs=5",
    "training.progress_bar=false",
]
FAST = [*SANITY_CHECK, "network=small", "training.eval_episodes=48"]


def run(task: str, seed: int, timesteps: int, overrides: list[str]) -> tuple[dict[str, float], float]:
    """The final evaluation's metrics of one training run, and its wall time in seconds."""
    config = compose_train_config(
        [
            f"task={task}",
            f"training.total_timesteps={timesteps}",
            f"training.eval_freq={timesteps}",
            f"training.save_freq={timesteps}",
            f"training.seed={seed}",
            *FAST,
            *overrides,
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(config, Path(tmp))
        wall = time.perf_counter() - start
        return json.loads((Path(tmp) / "metrics.json").read_text())["final"], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=150_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run")
    args = parser.parse_args()

    single = {task: run(task, args.seed, args.timesteps, args.overrides) for task in TASKS}
    multi, multi_wall = run("multi", args.seed, args.timesteps, args.overrides)
    print(f"\n{args.timesteps:,} agent-steps per run, seed {args.seed}")
    print("| task | single-task success | falls | collisions/ep | wall s | multi-task success | falls |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for task, (metrics, wall) in single.items():
        print(
            f"| {task} | {metrics['eval/success_rate']:.2f} | {metrics['eval/falls']:.2f} | "
            f"{metrics['eval/collisions']:.1f} | {wall:.0f} | {multi[f'eval/{task}/success_rate']:.2f} | "
            f"{multi[f'eval/{task}/falls']:.2f} |"
        )
    print(f"| all (multi-task aggregate) | | | | {multi_wall:.0f} | {multi['eval/success_rate']:.2f} | |")


if __name__ == "__main__":
    main()
