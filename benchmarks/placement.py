"""Where overlapped rollouts run (`training.cpu_affinity`): every rollout pinned, none, or the training
job's timed choice (`Placement`), against serial rollouts, on the quiet machine and beside another
training run.

Pinning pays on a quiet machine and costs on a busy one; the choice should track the faster of the
two in both, less what its trials and retimings cost. The other run is a real `train.py` (its own
simulator, PPO updates on its own threads), started before and stopped after the loaded repeats.
"""

from __future__ import annotations

import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from benchmarks.memory import ROOT
from benchmarks.training import TrainingRate, measure_training, train_config

#: The ways compared, by row name: (train.py overrides, whether the job's Placement chooses).
WAYS: Final = {
    "pinned": (("training.rollout=overlapped",), False),
    "unpinned": (("training.rollout=overlapped", "training.cpu_affinity=false"), False),
    "chosen": (("training.rollout=overlapped",), True),
    "serial": (("training.rollout=serial",), False),
}
CONDITIONS: Final = ("quiet", "loaded")
#: The other job of the loaded condition: a long default training run, left running meanwhile.
LOAD_COMMAND: Final = (
    sys.executable,
    "train.py",
    "training.total_timesteps=1000000000",
    "training.progress_bar=false",
    "training.held_out_episodes=0",
)
LOAD_WARM_UP_SECONDS: Final = 20.0  # its servers start and its first rollouts run


@dataclass
class PlacementSamples:
    """Per (condition, servers, way): one `TrainingRate` per repeat."""

    rates: dict[tuple[str, int, str], list[TrainingRate]] = field(default_factory=dict)


@contextlib.contextmanager
def other_training_run() -> Iterator[None]:
    """`train.py` running in the background in a scratch output folder for the block."""
    with tempfile.TemporaryDirectory(prefix="bench-load-") as out:
        process = subprocess.Popen(
            [*LOAD_COMMAND, f"hydra.run.dir={out}"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            process_group=0,
        )
        try:
            time.sleep(LOAD_WARM_UP_SECONDS)
            if process.poll() is not None:
                raise RuntimeError(f"the background training run exited with {process.returncode}")
            yield
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its servers follow (they watch their parent)
            process.wait()


def measure_placement(repeats: int, rollouts: int, servers: tuple[int, ...] = (1, 2)) -> PlacementSamples:
    """Every way in turn per repeat, for each server count, quiet then loaded."""
    samples = PlacementSamples()
    for condition in CONDITIONS:
        with other_training_run() if condition == "loaded" else contextlib.nullcontext():
            for _ in range(repeats):
                for n in servers:
                    for way, (overrides, choose) in WAYS.items():
                        config = train_config([f"env.num_environments={n}", *overrides])
                        rate = measure_training(config, "http", rollouts, choose_placement=choose)
                        samples.rates.setdefault((condition, n, way), []).append(rate)
    return samples


def placement_table(repeats: int, rollouts: int) -> tuple[str, dict[str, float]]:
    samples = measure_placement(repeats, rollouts)
    lines = [
        "#### Where overlapped rollouts run (`training.cpu_affinity`)",
        "",
        f"`preset=quick_test` hyperparameters, {rollouts} rollouts per run after set-up, over HTTP to "
        "simulator subprocesses: overlapped rollouts always pinned, never pinned "
        "(`training.cpu_affinity=false`) and as the training job places them (`Placement`: a warm-up "
        "and two trials each way, then the faster way, the other retimed every 8th rollout), and serial "
        "rollouts; quiet, then beside a default `train.py` run. PPO steps/s of the whole `learn()` as "
        f"a ratio to serial in the same repeat; {repeats} repeats, every way in turn.",
        "",
        "| machine | servers | pinned / serial | unpinned / serial | chosen / serial | min-max | chosen: rollouts pinned |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    key: dict[str, float] = {}
    for condition, n in dict.fromkeys((c, n) for c, n, _ in samples.rates):
        ratio = {way: _ratios(samples, condition, n, way) for way in ("pinned", "unpinned", "chosen")}
        for way, values in ratio.items():
            key[f"placement_{condition}_{n}_{way}"] = statistics.median(values)
        chosen = ratio["chosen"]
        shares = [_pinned_share(r.placement) for r in samples.rates[(condition, n, "chosen")] if r.placement]
        lines.append(
            f"| {condition} | {n} | {statistics.median(ratio['pinned']):.2f} | "
            f"{statistics.median(ratio['unpinned']):.2f} | **{statistics.median(chosen):.2f}** | "
            f"{min(chosen):.2f}-{max(chosen):.2f} | "
            + (f"{statistics.median(shares):.0%} |" if shares else "- |")
        )
    return "\n".join(lines), key


def _ratios(samples: PlacementSamples, condition: str, n: int, way: str) -> list[float]:
    """PPO steps/s of `way` over serial's, repeat by repeat."""
    serial = samples.rates[(condition, n, "serial")]
    rates = samples.rates[(condition, n, way)]
    return [r.steps_per_second / s.steps_per_second for r, s in zip(rates, serial, strict=True)]


def _pinned_share(summary: dict[str, Any]) -> float:
    pinned, unpinned = summary["pinned"]["rollouts"], summary["unpinned"]["rollouts"]
    return pinned / (pinned + unpinned)
