"""`hydra/launcher=ray`: each job (a sweep trial) runs as a Ray task on a Ray cluster, on Ray's public API.

hydra-ray-launcher cannot be installed beside this project's pins (it needs cloudpickle<3), so this
is a small one of our own: `ray.init(address=...)`, one `ray.remote(num_cpus=...)` task per job, the
job run by Hydra's own `run_job` on the node Ray picks. Ray is imported only when jobs launch (the
`ray` extra: pip install -e '.[ray]'); Hydra imports this module in every run to find its plugins,
which is also why it has no `from __future__ import annotations` (Hydra's scan breaks dataclasses
with string annotations).
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from spacetime_rl.config import CPU_AFFINITY_KEY, DEFAULT_ENVIRONMENTS
from spacetime_rl.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class RayLauncherConf:
    _target_: str = "hydra_plugins.spacetime_rl_sweeps.ray_launcher.RayLauncher"
    # ray.init's address: host:port of a running cluster's head (`ray start --head` prints it), or
    # "auto"; null: $RAY_ADDRESS if set, else a Ray started on this machine for the sweep.
    address: str | None = None
    n_jobs: int = 2  # trials launched together (the sweeper's default n_jobs): raise it with the cluster
    # CPUs Ray reserves per trial; null: its simulators (env.num_environments, null: one) + the trainer
    num_cpus: int | None = None


class RayLauncher(Launcher):
    def __init__(self, address: str | None, n_jobs: int, num_cpus: int | None) -> None:
        del n_jobs  # the sweeper reads hydra.launcher.n_jobs from the config to size its batches
        self.address = address
        self.num_cpus = num_cpus
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        try:
            import ray
        except ImportError as err:
            raise ConfigError(
                "hydra/launcher=ray needs Ray on this machine and every node: pip install -c "
                "constraints.txt -e '.[ray]'"
            ) from err

        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        # Absolute, so a task finds the folder whatever its working directory (shared file system).
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        log.info("Launching %d jobs on Ray (%s)", len(job_overrides), self.address or "RAY_ADDRESS or local")
        run_remote = ray.remote(_run_job)
        pending = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = idx
                config.hydra.job.num = idx
                config.hydra.sweep.dir = str(sweep_dir)
                if not any(o.startswith(f"{CPU_AFFINITY_KEY}=") for o in overrides):
                    # Ray does not pin its tasks: trials sharing a node would pin their rollouts to
                    # the same first core
                    OmegaConf.update(config, CPU_AFFINITY_KEY, False)
            cpus = (
                self.num_cpus
                or (OmegaConf.select(config, "env.num_environments") or DEFAULT_ENVIRONMENTS) + 1
            )
            task = run_remote.options(num_cpus=cpus)
            pending.append(task.remote(self.hydra_context, config, self.task_function, Singleton.get_state()))
        return list(ray.get(pending))


def _run_job(
    hydra_context: HydraContext, config: DictConfig, task_function: TaskFunction, singleton_state: Any
) -> JobReturn:
    """One job in a Ray worker: Hydra's state as the driver had it, then Hydra's own run_job."""
    Singleton.set_state(singleton_state)
    setup_globals()
    return run_job(
        hydra_context=hydra_context,
        task_function=task_function,
        config=config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


ConfigStore.instance().store(
    group="hydra/launcher", name="ray", node=RayLauncherConf, provider="spacetime_rl"
)
