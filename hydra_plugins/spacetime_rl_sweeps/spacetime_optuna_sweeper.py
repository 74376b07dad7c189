"""`hydra/sweeper=spacetime_optuna`: the Optuna sweeper with resumable studies, failed trials and pruning.

The logic lives in `spacetime_rl.sweeps.sweeper`; Hydra only instantiates sweepers from `hydra_plugins`.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import SamplerConfig
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import MISSING, DictConfig


class SpacetimeOptunaSweeper(OptunaSweeper):
    def __init__(
        self,
        sampler: SamplerConfig,
        direction: Any,
        n_trials: int,
        n_jobs: int | None,
        params: DictConfig | None,
        custom_search_space: str | None,
    ) -> None:
        from spacetime_rl.sweeps.sweeper import ResumableOptunaSweeperImpl

        self.sweeper = ResumableOptunaSweeperImpl(
            sampler, direction, n_trials, n_jobs, params, custom_search_space
        )


@dataclass
class SpacetimeOptunaSweeperConf:
    """The study's name and storage come from `sweep.study_name` and `sweep.storage` (see SweepConfig)."""

    _target_: str = "hydra_plugins.spacetime_rl_sweeps.spacetime_optuna_sweeper.SpacetimeOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: SamplerConfig = MISSING
    direction: Any = "maximize"  # Optuna's: minimize or maximize (a list of them for several objectives)
    n_trials: int = 20  # counts the study's finished trials too: rerun the command to resume
    n_jobs: int | None = None  # trials launched together; default: the launcher's n_jobs (joblib), else 1
    params: dict[str, str] | None = None  # the search space, in Hydra's override syntax
    custom_search_space: str | None = None  # a callable(cfg, trial) adding suggestions in Python


ConfigStore.instance().store(
    group="hydra/sweeper", name="spacetime_optuna", node=SpacetimeOptunaSweeperConf, provider="spacetime_rl"
)
