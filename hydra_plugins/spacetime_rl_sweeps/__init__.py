"""spacetime_rl's Hydra plugins: the `sweep` config group, the `spacetime_optuna` sweeper and the `ray`
launcher (docs/sweeps.md)."""
