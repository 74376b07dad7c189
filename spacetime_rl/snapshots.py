"""Playing a saved policy: its model zip and VecNormalize statistics, frozen, over a VecEnv (SB3).

Training's held-out check and evaluate.py load snapshots the same way, so both play what the files
hold: the statistics of the same save (`artifacts.check_same_save`), no longer updated, and the raw
reward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeAlias

from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3 import PPO
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.vec_env import VecEnv, VecNormalize

from spacetime_rl.artifacts import check_same_save, stats_path

__all__ = ["Model", "algorithm", "load_frozen", "load_model"]

#: A trained model: PPO with MlpPolicy, or sb3-contrib's RecurrentPPO with MlpLstmPolicy.
Model: TypeAlias = PPO | RecurrentPPO


def algorithm(policy: str) -> type[PPO] | type[RecurrentPPO]:
    """The algorithm that trains `policy` (network.policy)."""
    return RecurrentPPO if policy == "MlpLstmPolicy" else PPO


def load_model(model_path: Path, **kwargs: Any) -> Model:
    """The model saved at `model_path`, by the algorithm that saved it; `kwargs` go to SB3's `load`."""
    data, _, _ = load_from_zip_file(str(model_path), device="cpu")
    recurrent = issubclass((data or {}).get("policy_class", object), RecurrentActorCriticPolicy)
    return (RecurrentPPO if recurrent else PPO).load(str(model_path), **kwargs)


def load_frozen(model_path: Path, venv: VecEnv) -> tuple[Model, VecNormalize]:
    """The model at `model_path` and its statistics over `venv`, frozen."""
    model = load_model(model_path, device="cpu")
    env = VecNormalize.load(str(stats_path(model_path)), venv)
    check_same_save(model_path, model, env)
    env.training = False
    env.norm_reward = False
    return model, env
