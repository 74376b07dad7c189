"""`hydra/sweeper=spacetime_optuna`: an Optuna sweeper on Hydra's public Sweeper API, with resumable
studies shared by several workers, failed trials that do not stop the sweep, and pruning.

The logic lives in `spacetime_rl.sweeps.sweeper`, imported when a sweep starts: Hydra imports this
module in every run to find its plugins, and a single training run loads no Optuna.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import MISSING, DictConfig

from spacetime_rl.errors import SpaceTimeError

log = logging.getLogger(__name__)
_Result = TypeVar("_Result")


def _reporting_errors(step: Callable[[], _Result]) -> _Result:
    """A configuration or study error as one line (it names the key and the fix), then exit 1."""
    try:
        return step()
    except SpaceTimeError as err:
        log.error("%s", err)
        raise SystemExit(1) from None


class SpacetimeOptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,  # the sampler Hydra instantiated from hydra/sweeper/sampler
        direction: Any,
        n_trials: int,
        n_jobs: int | None,
        params: DictConfig | None,
        custom_search_space: str | None,
    ) -> None:
        from spacetime_rl.sweeps.sweeper import OptunaSweep

        self.sweeper = OptunaSweep(sampler, direction, n_trials, n_jobs, params, custom_search_space)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        _reporting_errors(
            lambda: self.sweeper.setup(
                hydra_context=hydra_context, task_function=task_function, config=config
            )
        )

    def sweep(self, arguments: list[str]) -> None:
        _reporting_errors(lambda: self.sweeper.sweep(arguments))


@dataclass
class TPESamplerConfig:
    """optuna.samplers.TPESampler; keep `seed` null: a seeded sampler replays its suggestions on resume."""

    _target_: str = "optuna.samplers.TPESampler"
    seed: int | None = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False


@dataclass
class RandomSamplerConfig:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: int | None = None


@dataclass
class SpacetimeOptunaSweeperConf:
    """The study's name and storage come from `sweep.study_name` and `sweep.storage` (see SweepConfig)."""

    _target_: str = "hydra_plugins.spacetime_rl_sweeps.spacetime_optuna_sweeper.SpacetimeOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING  # hydra/sweeper/sampler=tpe|random, or any optuna.samplers class by _target_
    direction: Any = "maximize"  # Optuna's: minimize or maximize (a list of them for several objectives)
    n_trials: int = 20  # counts the study's finished and running trials: rerun the command to resume
    n_jobs: int | None = None  # trials launched together; default: the launcher's n_jobs (joblib), else 1
    params: dict[str, str] | None = None  # the search space, in Hydra's override syntax
    custom_search_space: str | None = None  # a callable(cfg, trial) adding suggestions in Python


_store = ConfigStore.instance()
_store.store(
    group="hydra/sweeper", name="spacetime_optuna", node=SpacetimeOptunaSweeperConf, provider="spacetime_rl"
)
_store.store(group="hydra/sweeper/sampler", name="tpe", node=TPESamplerConfig, provider="spacetime_rl")
_store.store(group="hydra/sweeper/sampler", name="random", node=RandomSamplerConfig, provider="spacetime_rl")
