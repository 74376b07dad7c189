"""Playing a saved policy: its model zip and VecNormalize statistics, frozen, over a VecEnv (SB3).

Training's held-out check and evaluate.py load snapshots the same way, so both play what the files
hold: the statistics of the same save (`artifacts.check_same_save`), no longer updated, and the raw
reward.
"""

from __future__ import annotations

from pathlib import Path

from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from spacetime_rl.artifacts import check_same_save, stats_path

__all__ = ["load_frozen"]


def load_frozen(model_path: Path, venv: VecEnv) -> tuple[PPO, VecNormalize]:
    """The PPO model at `model_path` and its statistics over `venv`, frozen."""
    model = PPO.load(str(model_path), device="cpu")
    env = VecNormalize.load(str(stats_path(model_path)), venv)
    check_same_save(model_path, model, env)
    env.training = False
    env.norm_reward = False
    return model, env
