"""spacetime_rl: Hydra-configured RL training for SpaceTime VR locomotion over Godot's HTTP API."""

import logging

# alembic, which optuna imports (sweeps, compare), logs its plugin setup at INFO on import: noise in
# every job's log. Set here, before anything of the package can import optuna.
logging.getLogger("alembic").setLevel(logging.WARNING)

__version__ = "0.1.0"
