"""Memory of a training run: peak RSS of `train.py` and its simulators, and growth over a long run.

    python -m benchmarks.memory [--timesteps 1000000] [--interval 10] [train.py overrides...]

Runs `train.py` in a subprocess, samples the resident set size of it and of every child (the
simulator servers) every `--interval` seconds, and prints a Markdown table of the samples. Growth
is judged on the trainer after its first rollouts (imports, buffers and the network are allocated
by then): the slope of a line fitted through the second half of the samples, in MiB per million steps.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import psutil

ROOT: Final = Path(__file__).resolve().parents[1]
MIB: Final = 1 << 20
#: A long run with few side jobs: checkpoints and evaluations are kept rare so they don't dominate.
SOAK_OVERRIDES: Final = (
    "preset=quick_test",
    "training.progress_bar=false",
    "training.save_freq=250000",
    "training.eval_freq=250000",
    "training.eval_episodes=16",
    "env.agents_per_environment=64",
    "network=small",
    "ppo.n_epochs=2",
)
_STEPS = re.compile(r"total_timesteps\s*\|\s*(\d+)")


@dataclass(frozen=True)
class Sample:
    seconds: float
    trainer_mib: float
    servers_mib: float  # every child process together


def tree_rss(process: psutil.Process) -> tuple[float, float]:
    """(the process's RSS, its descendants' RSS summed), in MiB; vanished processes count 0."""
    try:
        own = process.memory_info().rss
        children = process.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    total = 0
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return own / MIB, total / MIB


def run_sampled(command: list[str], interval: float, cwd: Path) -> tuple[list[Sample], float, int]:
    """Run `command`, sampling RSS every `interval` s; returns samples, wall seconds, exit status."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        handle = psutil.Process(process.pid)
        samples = []
        while process.poll() is None:
            trainer, servers = tree_rss(handle)
            if trainer:
                samples.append(Sample(time.perf_counter() - start, trainer, servers))
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(interval)
        wall = time.perf_counter() - start
        if process.returncode:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-3000:])
    return samples, wall, process.returncode


def growth_mib_per_hour(samples: list[Sample]) -> float:
    """Slope of the trainer's RSS over the second half of the run, MiB per hour (0 with too few samples)."""
    tail = samples[len(samples) // 2 :]
    if len(tail) < 3:
        return 0.0
    seconds = np.array([s.seconds for s in tail])
    rss = np.array([s.trainer_mib for s in tail])
    return float(np.polyfit(seconds, rss, 1)[0] * 3600)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=1_000_000)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples")
    parser.add_argument("overrides", nargs="*", help="extra train.py overrides")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as out:
        command = [
            sys.executable,
            "train.py",
            *SOAK_OVERRIDES,
            f"training.total_timesteps={args.timesteps}",
            f"hydra.run.dir={out}",
            *args.overrides,
        ]
        samples, wall, status = run_sampled(command, args.interval, ROOT)
    print(f"`{' '.join(command[1:-1])}`: exit {status}, {wall:.0f} s wall\n")
    print("| t (s) | trainer RSS (MiB) | servers RSS (MiB) |\n|---|---|---|")
    step = max(1, len(samples) // 20)
    for s in [*samples[::step], *samples[-1:]]:
        print(f"| {s.seconds:.0f} | {s.trainer_mib:.0f} | {s.servers_mib:.0f} |")
    if samples:
        peak = max(s.trainer_mib + s.servers_mib for s in samples)
        print(
            f"\npeak total RSS {peak:.0f} MiB; trainer growth over the second half {growth_mib_per_hour(samples):+.1f} MiB/h"
        )


if __name__ == "__main__":
    main()
