"""Optuna studies of sweep folders, shared by the sweeps job and compare: storage and the report."""

import optuna

# Optuna's own handler colours its lines (colorlog) even into files; through the job's logging they
# reach the console and the job's log file plain, like every other line.
optuna.logging.disable_default_handler()
optuna.logging.enable_propagation()

from spacetime_rl.studies.report import is_sweep_dir, write_sweep_report  # noqa: E402

__all__ = ["is_sweep_dir", "write_sweep_report"]
