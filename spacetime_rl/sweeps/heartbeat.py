"""Heartbeats of the trials a sweep worker runs, so that a killed worker's trials end FAIL.

Each worker stamps its RUNNING trials every `sweep.heartbeat_interval` seconds (a trial system attribute,
so it works on every storage, the journal file included, which has no heartbeat of Optuna's own); any
worker fails a RUNNING trial whose last stamp (or start, before the first) is older than
`sweep.grace_period` seconds. Stamps are the workers' wall clocks: keep the machines' clocks in sync.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from types import TracebackType
from typing import Final

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

HEARTBEAT_ATTR: Final = "spacetime_rl:heartbeat"  # seconds since the epoch


class Heartbeat:
    """A thread stamping the worker's trials, used as `with Heartbeat(...) as heartbeat:`."""

    def __init__(self, storage: BaseStorage, interval: float) -> None:
        self.storage = storage
        self.interval = interval
        self._trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweep-heartbeat", daemon=True)

    def add(self, trial_ids: set[int]) -> None:
        """Stamp these trials (storage ids) now and from now on: call right after asking for them."""
        with self._lock:
            self._trial_ids |= trial_ids
        self._beat(trial_ids)

    def remove(self, trial_ids: set[int]) -> None:
        with self._lock:
            self._trial_ids -= trial_ids

    def _beat(self, trial_ids: set[int]) -> None:
        now = time.time()
        for trial_id in trial_ids:
            try:
                self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, now)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # finished since the copy of the set was taken
            except Exception:  # a storage hiccup: the next beat tries again, well within the grace period
                log.warning("heartbeat of trial id %d not recorded", trial_id, exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                ids = set(self._trial_ids)
            self._beat(ids)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()


def last_sign_of_life(trial: FrozenTrial) -> float:
    stamp = trial.system_attrs.get(HEARTBEAT_ATTR)
    if isinstance(stamp, int | float):
        return float(stamp)
    started = trial.datetime_start or datetime.now()
    return started.timestamp()


def fail_stale_trials(
    study: optuna.Study, running: list[FrozenTrial], grace_period: float, now: float | None = None
) -> list[int]:
    """Tell FAIL every trial of `running` without a heartbeat for `grace_period` s; their numbers."""
    now = time.time() if now is None else now
    failed = []
    for trial in running:
        if trial.state == TrialState.RUNNING and now - last_sign_of_life(trial) > grace_period:
            try:
                study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # it finished (or another worker failed it) since it was read
            log.warning(
                "trial %d failed: no heartbeat from its worker for %.0f s (the worker died?)",
                trial.number,
                now - last_sign_of_life(trial),
            )
            failed.append(trial.number)
    return failed
