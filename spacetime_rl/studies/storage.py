"""The Optuna study behind a sweep: where it is stored, which trials count as done, how results are told."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import optuna
from optuna.storages import BaseStorage, RDBStorage, get_storage
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

STUDY_FILE: Final = "study.db"
#: Trials that count toward `hydra.sweeper.n_trials`, so a resumed sweep runs only the rest.
FINISHED: Final = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
#: Seconds an SQLite writer waits for the lock: parallel trials report into the same file.
SQLITE_LOCK_TIMEOUT: Final = 60


def default_storage(sweep_dir: Path) -> str:
    """`sqlite:///<sweep_dir>/study.db` with an absolute path, so any job's working directory finds it."""
    return f"sqlite:///{(Path(sweep_dir) / STUDY_FILE).resolve()}"


def open_storage(url: str) -> BaseStorage:
    """The storage at `url`; SQLite with a generous lock timeout (the default 5 s is short for parallel trials)."""
    if url.startswith("sqlite:"):
        return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT}})
    return get_storage(url)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=FINISHED)


def trial_id(storage: BaseStorage, study_name: str, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def tell_result(
    study: optuna.Study, storage: BaseStorage, trial: optuna.trial.Trial, result: Callable[[], Any]
) -> TrialState:
    """Record a job's outcome: COMPLETE with a finite value, else FAIL; a trial the job pruned stays PRUNED.

    `result` returns the job's value or raises the job's exception (Hydra's `JobReturn.return_value`).
    The state is read from `storage` itself (the study's own storage): the study caches the trials it
    asked for and does not see what their jobs wrote.
    """
    state = storage.get_trial(trial_id(storage, study.study_name, trial.number)).state
    if state.is_finished():  # the job told the study itself: pruned
        log.info("trial %d: %s", trial.number, state.name)
        return state
    try:
        value = float(result())
    except Exception as err:
        log.warning(
            "trial %d failed: %s: %s (its job log has the traceback)", trial.number, type(err).__name__, err
        )
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    if not math.isfinite(value):
        log.warning("trial %d failed: its objective is %s (an error or a diverged run)", trial.number, value)
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    study.tell(trial, value)
    log.info("trial %d: %s", trial.number, value)
    return TrialState.COMPLETE
