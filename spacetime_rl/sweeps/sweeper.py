"""The `spacetime_optuna` sweeper: an Optuna study driven through Hydra's public Sweeper and Launcher APIs.

Each `python train.py -m sweep=<name>` process is a worker of the study `sweep.study_name` in
`sweep.storage`. Under the study's workers lock it fails trials whose worker died (no heartbeat),
counts the trials finished or running, and asks for at most `n_trials` minus those, up to `n_jobs` at a
time; the launcher runs them as Hydra jobs (folder = trial number) and each job's result is told to the
study: COMPLETE, FAIL (an error, a NaN) or PRUNED (told by the job). So a rerun resumes, and workers
started together on one study run exactly `n_trials` between them. A worker whose quota is used up
waits for the other workers' trials to end, then writes the report.
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.study import StudyDirection

from spacetime_rl.config import CPU_AFFINITY_KEY, SweepConfig
from spacetime_rl.errors import ConfigError
from spacetime_rl.studies.storage import (
    check_storage,
    counted_trials,
    default_storage,
    open_storage,
    redact,
    tell_result,
    trial_id,
    workers_lock,
)
from spacetime_rl.sweeps.heartbeat import Heartbeat, fail_stale_trials
from spacetime_rl.sweeps.search_space import SearchSpace

log = logging.getLogger(__name__)

TORCH_THREADS_KEY = "training.torch_threads"
BUSY_POLL_KEY = "env.busy_poll"


class OptunaSweep:
    """What `SpacetimeOptunaSweeper` does (hydra_plugins/spacetime_rl_sweeps), kept out of the plugin
    module so that Hydra's plugin scan in every run does not import Optuna."""

    def __init__(
        self,
        sampler: optuna.samplers.BaseSampler | DictConfig,
        direction: Any,
        n_trials: int,
        n_jobs: int | None,
        params: DictConfig | None,
        custom_search_space: str | None,
    ) -> None:
        # Hydra instantiates the sweeper's config recursively, sampler included; a test passes a config.
        self.sampler: optuna.samplers.BaseSampler = (
            sampler if isinstance(sampler, optuna.samplers.BaseSampler) else instantiate(sampler)
        )
        self.directions: list[Any] = [direction] if isinstance(direction, str) else list(direction)
        self.n_trials = n_trials
        self.requested_jobs = n_jobs
        self.params: dict[str, Any] = {str(key): value for key, value in (params or {}).items()}
        self.extend_search_space: Callable[[DictConfig, optuna.trial.Trial], None] | None = (
            get_method(custom_search_space) if custom_search_space else None
        )
        self.launcher: Launcher | None = None
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)
        self.pass_trial = "sweep" in config
        self.settings: SweepConfig = OmegaConf.to_object(config.sweep) if self.pass_trial else SweepConfig()  # type: ignore[assignment]
        self.study_name: str = self.settings.study_name or self.sweep_dir.resolve().name
        self.storage_url: str = self.settings.storage or default_storage(self.sweep_dir)
        check_storage(self.storage_url)
        if self.settings.objectives:
            self._check_one_direction("sweep.objectives gives each objective its direction")
            self.directions = [o.direction for o in self.settings.objectives]
        elif self.pass_trial:
            self._check_one_direction(
                "a trial returns one objective, training.objective; several go in sweep.objectives, "
                "each with its metric and direction"
            )
        self.n_jobs = self.requested_jobs or _launcher_jobs(config.hydra.launcher)

    def _check_one_direction(self, why: str) -> None:
        if len(self.directions) > 1:
            raise ConfigError(
                f"hydra.sweeper.direction={self.directions} names {len(self.directions)} directions, but "
                f"{why}: leave hydra.sweeper.direction out (or give one)"
            )

    def _check_same_objectives(self, study: optuna.Study) -> None:
        """A resumed study keeps its directions and metrics (Optuna loads it as stored, silently)."""
        stored = [d.name.lower() for d in study.directions]
        wanted = [
            d.name.lower() if isinstance(d, StudyDirection) else str(d).lower() for d in self.directions
        ]
        metrics = [o.metric for o in self.settings.objectives]
        if stored != wanted or (study.metric_names is not None and study.metric_names != metrics):
            began = f"{study.metric_names or 'one objective'} in directions {stored}"
            raise ConfigError(
                f"study {study.study_name} in {redact(self.storage_url)} began with {began}; "
                f"sweep.objectives={metrics or 'none'} with directions {wanted} do not match: start a new "
                "study with another sweep.study_name, or keep its objectives"
            )

    def sweep(self, arguments: list[str]) -> None:
        assert self.launcher is not None and self.config is not None, "setup() comes first"
        space = SearchSpace.from_overrides(
            [f"{key}={value}" for key, value in self.params.items()] + arguments
        )
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        with workers_lock(self.storage_url, self.study_name):  # workers may share the folder
            OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")  # as the basic sweeper does
            storage = open_storage(self.storage_url)
            study = optuna.create_study(
                study_name=self.study_name,
                storage=storage,
                sampler=self.sampler,
                directions=self.directions,
                load_if_exists=True,
            )
            self._check_same_objectives(study)
            if self.settings.multi_objective:  # the report's and the dashboard's column names
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names([o.metric for o in self.settings.objectives])
            counted = counted_trials(storage, study)
        done = sum(t.state.is_finished() for t in counted)
        log.info(
            "Study %s in %s: %d of %d trials finished, %d to run, %d at a time",
            study.study_name,
            redact(self.storage_url),
            done,
            self.n_trials,
            max(0, self.n_trials - len(counted)),
            self.n_jobs,
        )
        extra = self._shared_overrides(space)
        with Heartbeat(storage, self.settings.heartbeat_interval) as heartbeat:
            while trials := self._ask(study, storage, space):
                ids = {trial_id(storage, study.study_name, trial.number) for trial in trials}
                heartbeat.add(ids)
                for batch in _consecutive(trials):
                    overrides = [
                        (*space.trial_overrides(trial.params), *extra, *self._trial_overrides(trial))
                        for trial in batch
                    ]
                    # Folders are named after trial numbers, so a resumed sweep never reuses one.
                    returns = self.launcher.launch(overrides, initial_job_idx=batch[0].number)
                    for trial, ret in zip(batch, returns, strict=True):
                        tell_result(study, storage, trial, functools.partial(getattr, ret, "return_value"))
                heartbeat.remove(ids)
            self._wait_for_other_workers(study, storage)
        with workers_lock(self.storage_url, self.study_name):  # one report at a time
            self._write_results(study)

    def _ask(
        self, study: optuna.Study, storage: optuna.storages.BaseStorage, space: SearchSpace
    ) -> list[Any]:
        """The next trials to run (none once the study holds n_trials finished or running ones)."""
        with workers_lock(self.storage_url, self.study_name):
            trials = counted_trials(storage, study)
            fail_stale_trials(
                study, [t for t in trials if not t.state.is_finished()], self.settings.grace_period
            )
            wanted = min(self.n_jobs, self.n_trials - len(trials))
            asked = [study.ask(space.distributions) for _ in range(max(0, wanted))]
        for trial in asked:
            if self.extend_search_space is not None:
                assert self.config is not None
                self.extend_search_space(self.config, trial)
        return asked

    def _wait_for_other_workers(self, study: optuna.Study, storage: optuna.storages.BaseStorage) -> None:
        """Until every trial of the study has ended: finished by its worker, or failed here once stale."""
        logged: list[int] = []
        while running := [t for t in counted_trials(storage, study) if not t.state.is_finished()]:
            if (numbers := [t.number for t in running]) != logged:
                log.info("waiting for trials %s of other workers to end", numbers)
                logged = numbers
            with workers_lock(self.storage_url, self.study_name):
                fail_stale_trials(study, running, self.settings.grace_period)
            time.sleep(self.settings.heartbeat_interval)

    def _shared_overrides(self, space: SearchSpace) -> list[str]:
        """When trials run in parallel: one torch thread per core share, no busy polling and no
        pinning (the trials' processes share the cores; each would pin its rollout to the same
        first core), unless the command line says otherwise."""
        if self.n_jobs == 1:
            return []
        defaults = {
            TORCH_THREADS_KEY: max(1, (os.cpu_count() or 1) // self.n_jobs),
            BUSY_POLL_KEY: "off",
            CPU_AFFINITY_KEY: "false",
        }
        given = space.distributions.keys() | space.fixed.keys()
        return [f"{key}={value}" for key, value in defaults.items() if key not in given]

    def _trial_overrides(self, trial: optuna.trial.Trial) -> Sequence[str]:
        if not self.pass_trial:
            return ()
        return (
            f"sweep.trial={trial.number}",
            f"sweep.study_name={_quote(self.study_name)}",
            f"sweep.storage={_quote(self.storage_url)}",
        )

    def _write_results(self, study: optuna.Study) -> None:
        from spacetime_rl.studies.report import write_sweep_report

        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            raise ConfigError(
                f"no trial of study {study.study_name} completed: see the trials' logs under {self.sweep_dir}"
            )
        if len(self.directions) == 1:
            best = study.best_trial
            log.info("Best trial %d: %s = %s", best.number, best.params, best.value)
            results: dict[str, Any] = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        else:
            front = sorted(study.best_trials, key=lambda t: t.number)
            log.info(
                "Pareto front (%s): trials %s", ", ".join(study.metric_names or []), [t.number for t in front]
            )
            results = {
                "name": "optuna",
                "solutions": [{"params": t.params, "values": t.values} for t in front],
            }
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        for path in write_sweep_report(self.sweep_dir):
            log.info("wrote %s", path)


def _consecutive(trials: list[optuna.trial.Trial]) -> list[list[optuna.trial.Trial]]:
    """Runs of consecutive trial numbers: a launch numbers its jobs from one index on. Asked under the
    workers lock, a batch is one run unless the study held trials queued by hand (enqueue_trial)."""
    runs = itertools.groupby(enumerate(trials), key=lambda pair: pair[1].number - pair[0])
    return [[trial for _, trial in run] for _, run in runs]


def _launcher_jobs(launcher: DictConfig) -> int:
    """The launcher's parallelism: joblib's n_jobs (-1 = every core, -2 = all but one), else 1."""
    jobs = launcher.get("n_jobs")
    if not isinstance(jobs, int) or jobs == 0:
        return 1
    return jobs if jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + jobs)


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
