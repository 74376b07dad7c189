"""The training job behind train.py: PPO over the SpaceTime VecEnv, callbacks, curriculum."""

from spacetime_rl.training.job import train

__all__ = ["train"]
