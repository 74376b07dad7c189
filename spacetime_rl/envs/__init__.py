"""Environments over protocol v1: the SB3 VecEnv used for training and a single-agent Gymnasium env.

Importing this package registers `SpaceTime/VRNavigation-v0` with Gymnasium.
"""

import gymnasium as gym

from spacetime_rl.envs.gym_env import ENV_ID, SpaceTimeEnv
from spacetime_rl.envs.vec_env import (
    AgentTransport,
    GroupAnswer,
    SpaceTimeVecEnv,
    connector,
    make_clients,
    with_server_agents,
)

__all__ = [
    "ENV_ID",
    "AgentTransport",
    "GroupAnswer",
    "SpaceTimeEnv",
    "SpaceTimeVecEnv",
    "connector",
    "make_clients",
    "with_server_agents",
]

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="spacetime_rl.envs.gym_env:SpaceTimeEnv")
