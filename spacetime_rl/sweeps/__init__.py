"""Hyperparameter sweeps: Optuna studies behind `python train.py -m sweep=<name>` (docs/sweeps.md)."""

import logging

# alembic, which optuna imports, logs its plugin setup at INFO on import: noise in every job's log.
logging.getLogger("alembic").setLevel(logging.WARNING)

from spacetime_rl.sweeps.report import is_sweep_dir, write_sweep_report  # noqa: E402
from spacetime_rl.sweeps.trial import PruningReporter, run_trial  # noqa: E402

__all__ = ["PruningReporter", "is_sweep_dir", "run_trial", "write_sweep_report"]
