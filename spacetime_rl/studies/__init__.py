"""Optuna studies of sweep folders, shared by the sweeps job and compare: storage and the report."""

import logging

# alembic, which optuna imports, logs its plugin setup at INFO on import: noise in every job's log.
logging.getLogger("alembic").setLevel(logging.WARNING)

from spacetime_rl.studies.report import is_sweep_dir, write_sweep_report  # noqa: E402

__all__ = ["is_sweep_dir", "write_sweep_report"]
