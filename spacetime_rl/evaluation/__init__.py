"""The evaluation job behind evaluate.py, and the episode metrics training's evaluation shares.

`spacetime_rl.evaluation.job` (SB3, torch) loads on first use of `evaluate`/`run`, so training can
import `episodes` without a cycle.
"""

from typing import Any

from spacetime_rl.evaluation.episodes import METRICS, EpisodeResult, play_episodes, summarize

__all__ = ["METRICS", "EpisodeResult", "evaluate", "play_episodes", "run", "summarize"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "run"):
        from spacetime_rl.evaluation import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
