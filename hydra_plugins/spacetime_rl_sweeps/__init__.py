"""spacetime_rl's Hydra plugins: the `sweep` config group and the `spacetime_optuna` sweeper (docs/sweeps.md)."""
