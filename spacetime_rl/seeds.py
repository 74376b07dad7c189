"""Which seeds each set of episodes is drawn from, so evaluation never replays training's arenas.

A server's arenas and goals follow from its seed and the agent alone, so two sets of episodes
are disjoint when their seeds are. A run with `training.seed=s` uses:

    s .. s + n - 1      the n training servers (env.num_environments)
    s + 10000           the evaluation during training, which picks the best model
    s + 20000           held out: evaluate.py's default and the best model's confirmation at the end
"""

from __future__ import annotations

from typing import Final

#: Offsets from `training.seed`; far apart so that any realistic number of servers fits between.
IN_TRAINING_EVAL_OFFSET: Final = 10_000
HELD_OUT_OFFSET: Final = 20_000


def in_training_eval_seed(training_seed: int) -> int:
    """Seed of the evaluation episodes training picks its best model on."""
    return training_seed + IN_TRAINING_EVAL_OFFSET


def held_out_seed(training_seed: int) -> int:
    """Seed of episodes neither training nor its model selection has seen."""
    return training_seed + HELD_OUT_OFFSET


def seen_in_training(seed: int, training_seed: int, num_environments: int) -> str | None:
    """What a run with `training_seed` used `seed` for, or None when evaluating on it is held out."""
    if training_seed <= seed < training_seed + num_environments:
        return f"training server {seed - training_seed}"
    if seed == in_training_eval_seed(training_seed):
        return "the in-training evaluation that picked the best model"
    return None
