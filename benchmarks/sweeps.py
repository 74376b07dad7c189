"""Sweep overhead: what a sweep worker spends per trial outside training, on each study storage.

    python -m benchmarks --only sweeps [--repeats 3] [--sweep-trials 20]

One trial's round of the sweeper's own code (spacetime_rl.sweeps, spacetime_rl.studies), training
left out (a no-op objective), timed phase by phase:

    ask         under the workers lock: count the study's trials, fail stale ones, `study.ask`
    heartbeat   one stamp on the trial (`Heartbeat.add`; a worker repeats it every heartbeat_interval)
    open        the trial job opens the storage, loads the study and its trial (`open_trial`)
    report      EVALUATIONS evaluations reported for pruning (`trial.report` + `should_prune`, MedianPruner)
    tell        the sweeper reads the trial's state and tells its value (`tell_result`)

SQLite and the journal file live in a temporary folder; PostgreSQL is a throwaway server started
as the tests start theirs (tests/postgres.py: Debian's `postgresql` binaries). Each repeat goes
round the three storages (interleaved), each on a fresh study of `trials` trials.
"""

from __future__ import annotations

import functools
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import optuna

from benchmarks.memory import ROOT
from spacetime_rl.config import SweepConfig
from spacetime_rl.studies.storage import (
    counted_trials,
    default_storage,
    open_storage,
    tell_result,
    trial_id,
    workers_lock,
)
from spacetime_rl.sweeps.heartbeat import Heartbeat, fail_stale_trials
from spacetime_rl.sweeps.trial import open_trial

STORAGES: Final = ("sqlite", "postgresql", "journal")
PHASES: Final = ("ask", "heartbeat", "open", "report", "tell")
GRACE: Final = SweepConfig.grace_period
EVALUATIONS: Final = 10  # a 100k-step trial evaluated every 10k steps (sweeps/ppo.yaml)
DISTRIBUTIONS: Final = {
    "ppo.learning_rate": optuna.distributions.FloatDistribution(1e-5, 3e-3, log=True),
    "ppo.n_steps": optuna.distributions.CategoricalDistribution([32, 64, 128, 256]),
    "ppo.gamma": optuna.distributions.FloatDistribution(0.95, 0.999),
}


@dataclass
class Timings:
    """Seconds per trial of each phase, one list entry per repeat (the mean over its trials)."""

    values: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def add(self, storage: str, phase: str, seconds: float) -> None:
        self.values.setdefault((storage, phase), []).append(seconds)


def postgres_server() -> AbstractContextManager[str]:
    """tests/postgres.py's throwaway server (one source for starting it)."""
    spec = importlib.util.spec_from_file_location("postgres", ROOT / "tests" / "postgres.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server: Callable[[], AbstractContextManager[str]] = module.postgres_server
    return server()


def one_study(url: str, name: str, trials: int) -> dict[str, float]:
    """Run `trials` no-op trials through the sweeper's steps; mean seconds per trial of each phase."""
    spent = dict.fromkeys(PHASES, 0.0)

    @contextmanager
    def timed(phase: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        spent[phase] += time.perf_counter() - start

    with workers_lock(url, name):
        storage = open_storage(url)
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    settings = SweepConfig(
        study_name=name,
        storage=url,
        pruner={"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5},
    )
    with Heartbeat(storage, interval=3600) as heartbeat:  # beats timed one by one below
        for number in range(trials):
            with timed("ask"), workers_lock(url, name):
                counted = counted_trials(storage, study)
                fail_stale_trials(study, [t for t in counted if not t.state.is_finished()], GRACE)
                trial = study.ask(DISTRIBUTIONS)
            ids = {trial_id(storage, name, trial.number)}
            with timed("heartbeat"):
                heartbeat.add(ids)
            with timed("open"):
                job_trial = open_trial(replace(settings, trial=number))
            value = float(trial.params["ppo.gamma"])
            with timed("report"):
                for step in range(1, EVALUATIONS + 1):
                    job_trial.report(value, step)
                    job_trial.should_prune()
            with timed("tell"):
                tell_result(study, storage, trial, functools.partial(float, value))
            heartbeat.remove(ids)
    return {phase: seconds / trials for phase, seconds in spent.items()}


def measure(repeats: int, trials: int) -> Timings:
    timings = Timings()
    with postgres_server() as postgres, tempfile.TemporaryDirectory(prefix="spacetime_rl-bench-") as tmp:
        urls = {
            "sqlite": default_storage(Path(tmp)),
            "postgresql": postgres,
            "journal": f"journal://{Path(tmp) / 'study.log'}",
        }
        for repeat in range(repeats):
            for storage in STORAGES:
                per_trial = one_study(urls[storage], f"bench_{repeat}", trials)
                for phase, seconds in per_trial.items():
                    timings.add(storage, phase, seconds)
                timings.add(storage, "total", sum(per_trial.values()))
    return timings


def sweeps_table(repeats: int, trials: int) -> tuple[str, dict[str, float]]:
    timings = measure(repeats, trials)

    def cell(storage: str, phase: str) -> str:
        values = [1000 * v for v in timings.values[(storage, phase)]]
        return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"

    lines = [
        "#### 6. Sweep overhead per trial, by study storage (ms)",
        "",
        f"The sweeper's own steps for one trial with training left out (`benchmarks/sweeps.py`): a fresh "
        f"study of {trials} trials per storage and repeat, {repeats} repeats interleaved. ask = workers "
        "lock + count + stale check + `study.ask`; heartbeat = one stamp; open = the trial job loading "
        f"its study and trial; report = {EVALUATIONS} pruning reports; tell = `tell_result`. "
        "Median of the repeats' per-trial means (min-max).",
        "",
        "| storage | ask | heartbeat | open | report | tell | total |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for storage in STORAGES:
        cells = " | ".join(cell(storage, phase) for phase in (*PHASES, "total"))
        lines.append(f"| {storage} | {cells} |")
    key = {f"sweep_ms_{s}": 1000 * statistics.median(timings.values[(s, "total")]) for s in STORAGES}
    return "\n".join(lines), key
