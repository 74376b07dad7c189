"""The `spacetime_optuna` sweeper: hydra-optuna-sweeper's search, with a resumable study, failed trials
that do not stop the sweep, the trial handed to each job for pruning, and one torch thread per parallel trial.

The upstream sweeper starts counting trials from zero on every run and stops at the first failure; this one
runs only `n_trials` minus the trials already finished in the study, and records failures as FAIL.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import DictConfig, OmegaConf

from spacetime_rl.errors import ConfigError
from spacetime_rl.studies.storage import default_storage, finished_trials, open_storage, tell_result

log = logging.getLogger(__name__)

TORCH_THREADS_KEY = "training.torch_threads"
BUSY_POLL_KEY = "env.busy_poll"


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    def __init__(
        self,
        sampler: Any,
        direction: Any,
        n_trials: int,
        n_jobs: int | None,
        params: DictConfig | None,
        custom_search_space: str | None,
    ) -> None:
        super().__init__(
            sampler,
            direction,
            storage=None,
            study_name=None,
            n_trials=n_trials,
            n_jobs=n_jobs or 1,
            max_failure_rate=1.0,
            search_space=None,
            custom_search_space=custom_search_space,
            params=params,
        )
        self.requested_jobs = n_jobs

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        sweep = config.get("sweep") or {}
        sweep_dir = Path(config.hydra.sweep.dir).resolve()
        self.resolved_study_name: str = sweep.get("study_name") or sweep_dir.name
        self.storage_url: str = sweep.get("storage") or default_storage(sweep_dir)
        self.n_jobs = self.requested_jobs or _launcher_jobs(config.hydra.launcher)
        self.pass_trial = "sweep" in config

    def sweep(self, arguments: list[str]) -> None:
        assert self.launcher is not None, "setup() comes first"
        if isinstance(self.sampler, functools.partial):
            raise ConfigError(
                "hydra/sweeper/sampler=grid is not supported by spacetime_optuna: run a grid with the basic "
                "sweeper instead (python train.py -m ppo.learning_rate=1e-4,3e-4 ppo.n_epochs=5,10)"
            )
        self._process_searchspace_config()
        distributions, fixed = create_params_from_overrides(self._parse_sweeper_params_config() + arguments)
        for name in fixed:
            distributions.pop(name, None)
        directions = self._get_directions()

        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, Path(self.sweep_dir) / "multirun.yaml")  # as the basic sweeper does
        storage = open_storage(self.storage_url)
        study = optuna.create_study(
            study_name=self.resolved_study_name,
            storage=storage,
            sampler=self.sampler,
            directions=directions,
            load_if_exists=True,
        )
        done = len(finished_trials(study))
        to_go = max(0, self.n_trials - done)
        log.info(
            "Study %s in %s: %d of %d trials finished, %d to run, %d at a time",
            study.study_name,
            self.storage_url,
            done,
            self.n_trials,
            to_go,
            self.n_jobs,
        )
        extra = self._shared_overrides(distributions, fixed)
        while to_go > 0:
            trials = [study.ask() for _ in range(min(to_go, self.n_jobs))]
            overrides = [
                (*params, *extra, *self._trial_overrides(trial))
                for trial, params in zip(
                    trials, self._configure_trials(trials, distributions, fixed), strict=True
                )
            ]
            # Folders are named after trial numbers, so a resumed sweep never reuses one.
            returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
            for trial, ret in zip(trials, returns, strict=True):
                tell_result(study, storage, trial, functools.partial(getattr, ret, "return_value"))
            to_go -= len(trials)

        self._write_results(study, directions)

    def _shared_overrides(self, distributions: dict[str, Any], fixed: dict[str, Any]) -> list[str]:
        """When trials run in parallel: one torch thread per core share, and no busy polling (the
        trials' processes share the cores), unless the command line says otherwise."""
        if self.n_jobs == 1:
            return []
        defaults = {
            TORCH_THREADS_KEY: max(1, (os.cpu_count() or 1) // self.n_jobs),
            BUSY_POLL_KEY: "off",
        }
        return [f"{key}={value}" for key, value in defaults.items() if key not in distributions | fixed]

    def _trial_overrides(self, trial: optuna.trial.Trial) -> Sequence[str]:
        if not self.pass_trial:
            return ()
        return (
            f"sweep.trial={trial.number}",
            f"sweep.study_name={_quote(self.resolved_study_name)}",
            f"sweep.storage={_quote(self.storage_url)}",
        )

    def _write_results(self, study: optuna.Study, directions: list[str]) -> None:
        from spacetime_rl.studies.report import write_sweep_report

        if not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            raise ConfigError(
                f"no trial of study {study.study_name} completed: see the trials' logs under {self.sweep_dir}"
            )
        if len(directions) == 1:
            best = study.best_trial
            log.info("Best trial %d: %s = %s", best.number, best.params, best.value)
            results: dict[str, Any] = {"name": "optuna", "best_params": best.params, "best_value": best.value}
        else:
            results = {
                "name": "optuna",
                "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials],
            }
        OmegaConf.save(OmegaConf.create(results), Path(self.sweep_dir) / "optimization_results.yaml")
        for path in write_sweep_report(Path(self.sweep_dir)):
            log.info("wrote %s", path)


def _launcher_jobs(launcher: DictConfig) -> int:
    """The launcher's parallelism: joblib's n_jobs (-1 = every core, -2 = all but one), else 1."""
    jobs = launcher.get("n_jobs")
    if not isinstance(jobs, int) or jobs == 0:
        return 1
    return jobs if jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + jobs)


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"
