"""Study storages several sweep workers share: a real PostgreSQL server (started by the session
fixture), Optuna's journal file and SQLite; the workers lock, counting, heartbeats, error messages."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import optuna
import pytest

from spacetime_rl.errors import ConfigError
from spacetime_rl.studies.storage import counted_trials, open_storage, redact, trial_id, workers_lock
from spacetime_rl.sweeps.heartbeat import HEARTBEAT_ATTR, Heartbeat, fail_stale_trials

TrialState = optuna.trial.TrialState


@pytest.fixture(params=["postgresql", "journal", "sqlite"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_url"))
    if request.param == "journal":
        return f"journal://{tmp_path / 'study.log'}"
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_counted_trials_are_finished_or_running_as_stored(
    storage_url: str, request: pytest.FixtureRequest
) -> None:
    name = request.node.name  # one PostgreSQL database serves every test: a study per test
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    done, running, _waiting = study.ask(), study.ask(), study.enqueue_trial({})
    study.tell(done, 1.0)

    other_worker = optuna.load_study(study_name=name, storage=open_storage(storage_url))
    assert [(t.number, t.state) for t in counted_trials(open_storage(storage_url), other_worker)] == [
        (done.number, TrialState.COMPLETE),
        (running.number, TrialState.RUNNING),
    ]


def test_the_workers_lock_excludes_other_processes_threads_alike(
    storage_url: str, request: pytest.FixtureRequest
) -> None:
    name, inside, overlaps = request.node.name, [], []

    def worker() -> None:
        for _ in range(5):
            with workers_lock(storage_url, name):
                inside.append(1)
                overlaps.append(len(inside))
                time.sleep(0.01)
                inside.pop()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert overlaps == [1] * 15


def test_a_trial_without_heartbeat_fails_and_a_beating_one_runs_on(
    storage_url: str, request: pytest.FixtureRequest
) -> None:
    name = request.node.name
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    alive, dead = study.ask(), study.ask()
    with Heartbeat(storage, interval=1) as heartbeat:
        heartbeat.add({trial_id(storage, name, alive.number)})
        stamped = storage.get_trial(trial_id(storage, name, alive.number)).system_attrs[HEARTBEAT_ATTR]
        later = stamped + 5  # 5 s after the live trial's stamp: past a 3 s grace period for both
        running = counted_trials(storage, study)
        assert fail_stale_trials(study, running, grace_period=10, now=later) == []
        assert fail_stale_trials(study, running, grace_period=3, now=later) == [alive.number, dead.number]
    states = {
        t.number: t.state
        for t in optuna.load_study(study_name=name, storage=open_storage(storage_url)).trials
    }
    assert states == {alive.number: TrialState.FAIL, dead.number: TrialState.FAIL}


def test_the_heartbeat_thread_keeps_stamping(storage_url: str, request: pytest.FixtureRequest) -> None:
    name = request.node.name
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name=name, storage=storage)
    trial = study.ask()
    number = trial_id(storage, name, trial.number)
    with Heartbeat(storage, interval=1) as heartbeat:
        heartbeat.add({number})
        first = storage.get_trial(number).system_attrs[HEARTBEAT_ATTR]
        for _ in range(300):  # up to 30 s for a 1 s interval: a liveness bound, not a speed test
            if storage.get_trial(number).system_attrs[HEARTBEAT_ATTR] != first:
                break
            time.sleep(0.1)
    assert storage.get_trial(number).system_attrs[HEARTBEAT_ATTR] > first


def test_an_unsupported_storage_is_refused_without_its_password() -> None:
    with pytest.raises(
        ConfigError, match=r"sweep\.storage=mysql://me:\*\*\*@db/optuna.*postgresql://"
    ) as error:
        open_storage("mysql://me:secret@db/optuna")
    assert "secret" not in str(error.value)


def test_a_relative_journal_path_is_refused_with_the_absolute_one() -> None:
    with pytest.raises(ConfigError, match=r"sweep\.storage=journal://sweeps/x\.log.*journal:///"):
        open_storage("journal://sweeps/x.log")


def test_an_unreachable_server_is_named_without_its_password() -> None:
    url = "postgresql+psycopg://me:secret@127.0.0.1:1/optuna"
    with pytest.raises(
        ConfigError,
        match=r"sweep\.storage=postgresql\+psycopg://me:\*\*\*@127\.0\.0\.1:1/optuna: cannot open",
    ) as error:
        open_storage(url)
    assert "secret" not in str(error.value)
    assert redact("postgresql://me@db/optuna") == "postgresql://me@db/optuna"  # no password, nothing hidden
