"""quick_test with `training.torch_threads` auto (the default) against torch's own default, quiet and loaded.

    python -m benchmarks.threads [--repeats 3]

torch's default takes a thread per core for PPO updates, and its spinning workers fight the
simulator processes for the cores; auto leaves the servers theirs. Each setting runs
`python train.py preset=quick_test` (benchmarks.training.quick_test_run) interleaved with the other,
first on a quiet machine, then with one busy-looping process per core beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator

from benchmarks.training import quick_test_run

SETTINGS = {
    "auto (the default)": [],
    "torch's default (a thread per core)": [f"training.torch_threads={os.cpu_count() or 1}"],
}


@contextlib.contextmanager
def cpu_hogs(count: int) -> Iterator[None]:
    """`count` processes that keep a core busy each, as other work on a shared machine does."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print("| load | torch_threads | runs | median wall (s) | min-max (s) | vs auto |")
    print("|---|---|---:|---:|---:|---:|")
    for load, hogs in (("quiet", 0), (f"{cores} CPU hogs", cores)):
        seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
        with cpu_hogs(hogs):
            for _ in range(args.repeats):
                for name, overrides in SETTINGS.items():
                    run = quick_test_run(overrides=overrides)
                    if run.status:
                        raise SystemExit(f"quick_test failed with {name}: exit {run.status}")
                    seconds[name].append(run.seconds)
        auto = statistics.median(seconds["auto (the default)"])
        for name, values in seconds.items():
            median = statistics.median(values)
            print(
                f"| {load} | {name} | {len(values)} | {median:.1f} | {min(values):.1f}-{max(values):.1f} "
                f"| {median / auto:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
