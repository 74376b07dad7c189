"""What the e2e tests share: the project root and the overrides that make a `train.py` run tiny."""

from __future__ import annotations

from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[2]

#: 4 agents, a small network, short rollouts; one torch thread, since the tests run beside other
#: jobs and torch's thread pool would thrash. Each test adds its budget and frequencies.
TINY_RUN: Final = (
    "env.agents_per_environment=4",
    "ppo.n_steps=64",
    "ppo.batch_size=64",
    "network=small",
    "training.eval_episodes=4",
    "training.progress_bar=false",
    "training.torch_threads=1",
    "training.held_out_episodes=4",
)
