"""The Optuna study behind a sweep: where it is stored, which trials count, how results are told, and the
lock that lets several sweep processes (workers) share one study.

`sweep.storage` accepts

    sqlite:///<absolute path>           the default, <sweep folder>/study.db: workers on one machine
    postgresql://user@host/db           a PostgreSQL server (psycopg 3; postgresql+psycopg2:// with psycopg2)
    journal:///<absolute path>          Optuna's journal file (JournalStorage), e.g. on a shared file system
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from spacetime_rl.errors import ConfigError

log = logging.getLogger(__name__)

STUDY_FILE: Final = "study.db"
JOURNAL_SCHEME: Final = "journal://"
#: Trials that count toward `hydra.sweeper.n_trials`: finished ones, and those a worker is running.
COUNTED: Final = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
#: Seconds an SQLite writer waits for the lock: parallel trials report into the same file.
SQLITE_LOCK_TIMEOUT: Final = 60
#: Seconds after which a worker lock file left by a killed worker is removed (the lock is held for
#: the few milliseconds of asking for trials, and while the report is written).
LOCK_FILE_GRACE: Final = 60
STORAGE_FORMS: Final = "sqlite:///<path>, postgresql://<user>@<host>/<database> or journal:///<path>"


def default_storage(sweep_dir: Path) -> str:
    """`sqlite:///<sweep_dir>/study.db` with an absolute path, so any job's working directory finds it."""
    return f"sqlite:///{(Path(sweep_dir) / STUDY_FILE).resolve()}"


def redact(url: str) -> str:
    """`url` without its password, for messages and logs."""
    if url.startswith(JOURNAL_SCHEME) or "@" not in url:
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<an unparsable URL>"


def journal_path(url: str) -> Path:
    path = Path(url.removeprefix(JOURNAL_SCHEME))
    if not path.is_absolute():
        raise ConfigError(
            f"sweep.storage={url}: a journal storage needs an absolute path, as every worker and trial "
            f"job opens it from its own directory: write journal://{path.resolve()}"
        )
    return path


def check_storage(url: str) -> None:
    """Raise ConfigError unless `url` is a storage several sweep workers can share safely."""
    if url.startswith(JOURNAL_SCHEME):
        journal_path(url)
    elif not url.startswith(("sqlite:///", "postgresql:", "postgresql+")):
        raise ConfigError(
            f"sweep.storage={redact(url)} is not a storage the sweeper supports: use {STORAGE_FORMS}"
        )


def open_storage(url: str) -> BaseStorage:
    """The storage at `url`; SQLite with a generous lock timeout (the default 5 s is short for parallel trials).

    The first opening of a database creates Optuna's tables: workers open it under `workers_lock`.
    """
    check_storage(url)
    if url.startswith(JOURNAL_SCHEME):
        path = journal_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path))))
    if url.startswith("sqlite:"):
        return RDBStorage(url, engine_kwargs={"connect_args": {"timeout": SQLITE_LOCK_TIMEOUT}})
    with _reporting_database_errors(url):
        return RDBStorage(url, engine_kwargs={"pool_pre_ping": True})


@contextmanager
def _reporting_database_errors(url: str) -> Iterator[None]:
    """SQLAlchemy's errors for an unknown host, a refused connection or a missing driver, as a
    ConfigError naming sweep.storage (without the password) and what to check."""
    from sqlalchemy.exc import ArgumentError, OperationalError

    try:
        yield
    except (OperationalError, ArgumentError, ImportError) as err:
        reason = redact(str(getattr(err, "orig", None) or err)).strip().splitlines()[0]
        raise ConfigError(
            f"sweep.storage={redact(url)}: cannot open the study's database ({reason}); check that the "
            "server runs and the URL's user, host, port and database (keep the password in ~/.pgpass "
            "or PGPASSWORD, not in the URL)"
        ) from err


@contextmanager
def workers_lock(url: str, study_name: str) -> Iterator[None]:
    """Held while a worker counts the study's trials and asks for new ones (and writes the report), so
    two workers of one study never both take the last trial: together they run exactly `n_trials`.

    PostgreSQL: an advisory lock, released by the server if the worker dies. Files (SQLite, journal):
    a lock file beside the study, `<file>.workers.lock`, removed after LOCK_FILE_GRACE s if its holder died.
    """
    if url.startswith("postgresql"):
        yield from _advisory_lock(url, f"spacetime_rl sweep {study_name}")
        return
    path = journal_path(url) if url.startswith(JOURNAL_SCHEME) else Path(url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = JournalFileOpenLock(f"{path}.workers", grace_period=LOCK_FILE_GRACE)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _advisory_lock(url: str, key: str) -> Iterator[None]:
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    with _reporting_database_errors(url):
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        connection = engine.connect()
    try:
        with connection:
            connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(hashtext(:key))"), {"key": key})
            try:
                yield
            finally:
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(hashtext(:key))"), {"key": key})
    finally:
        engine.dispose()


def counted_trials(storage: BaseStorage, study: optuna.Study) -> list[FrozenTrial]:
    """The study's trials that count toward n_trials, read from `storage` itself (not the study's cache)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    return storage.get_all_trials(study_id, deepcopy=False, states=COUNTED)


def trial_id(storage: BaseStorage, study_name: str, number: int) -> int:
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def tell_result(
    study: optuna.Study, storage: BaseStorage, trial: optuna.trial.Trial, result: Callable[[], Any]
) -> TrialState:
    """Record a job's outcome: COMPLETE with finite values, one per objective, else FAIL; a trial the job
    pruned stays PRUNED.

    `result` returns the job's value (a list of them for several objectives) or raises the job's
    exception (Hydra's `JobReturn.return_value`). The state is read from `storage` itself (the study's
    own storage): the study caches the trials it asked for and does not see what their jobs wrote.
    """
    state = storage.get_trial(trial_id(storage, study.study_name, trial.number)).state
    if state.is_finished():  # the job told the study itself (pruned), or another worker failed it
        log.info("trial %d: %s", trial.number, state.name)
        return state
    try:
        returned = result()
        values = [float(v) for v in returned] if isinstance(returned, list | tuple) else [float(returned)]
    except Exception as err:
        log.warning(
            "trial %d failed: %s: %s (its job log has the traceback)", trial.number, type(err).__name__, err
        )
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    shown = values[0] if len(values) == 1 else values
    if not all(math.isfinite(v) for v in values):
        log.warning("trial %d failed: its objective is %s (an error or a diverged run)", trial.number, shown)
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    if len(values) != len(study.directions):
        log.warning(
            "trial %d failed: it returned %d values for the study's %d objectives (sweep.objectives "
            "changed since the study began? start a new study with another sweep.study_name)",
            trial.number,
            len(values),
            len(study.directions),
        )
        study.tell(trial, state=TrialState.FAIL)
        return TrialState.FAIL
    study.tell(trial, shown)
    log.info("trial %d: %s", trial.number, shown)
    return TrialState.COMPLETE
