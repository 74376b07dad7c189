"""Hyperparameter sweeps: Optuna studies behind `python train.py -m sweep=<name>` (docs/sweeps.md)."""

from spacetime_rl.sweeps.trial import PruningReporter, run_trial

__all__ = ["PruningReporter", "run_trial"]
