"""Hyperparameter sweeps: Optuna studies behind `python train.py -m sweep=<name>` (docs/sweeps.md)."""

from spacetime_rl.sweeps.report import is_sweep_dir, write_sweep_report
from spacetime_rl.sweeps.trial import PruningReporter, run_trial

__all__ = ["PruningReporter", "is_sweep_dir", "run_trial", "write_sweep_report"]
