"""Playing a policy for a fixed number of episodes, the metrics of those episodes and their names.

Training's periodic evaluation and `evaluate.py` both use `play_episodes` and `summarize`, so an
`eval/*` number means the same thing in TensorBoard, `metrics.json` and `eval/metrics.json`.
Torch-free, so `compare` can read the names without loading a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from spacetime_rl.protocol import wire

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

__all__ = [
    "METRICS",
    "Act",
    "EpisodeResult",
    "Path2D",
    "model_policy",
    "play_episodes",
    "seconds_per_step",
    "summarize",
    "wilson_interval",
]

#: The metrics training's evaluation reports; `training.objective` names one of them.
EVAL_METRICS: Final = (
    "eval/success_rate",
    "eval/success_low",
    "eval/success_high",
    "eval/mean_reward",
    "eval/mean_ep_length",
    "eval/collisions",
    "eval/falls",
    "eval/comfort",
)

#: Called after each periodic evaluation with (agent-steps, metrics); returning False stops training.
EvalHook = Callable[[int, dict[str, float]], bool]

#: The normal quantile of a two-sided 95% interval.
WILSON_Z: Final = 1.959963984540054

#: Maps a batch of the env's observations (N, 48) and which of them start an episode (N,) to
#: actions (N, 3); a recurrent policy resets its memory of the agents that start one.
Act = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Every metric `summarize` reports, with what it means; training logs a subset (`EVAL_METRICS`).
METRICS: Final[dict[str, str]] = {
    "eval/success_rate": "fraction of episodes that reached the goal",
    "eval/success_low": "lower end of the success rate's 95% Wilson interval",
    "eval/success_high": "upper end of the success rate's 95% Wilson interval",
    "eval/mean_reward": "mean raw (unnormalised) return",
    "eval/std_reward": "standard deviation of the return",
    "eval/mean_ep_length": "mean episode length, actions",
    "eval/collisions": "mean collisions per episode",
    "eval/falls": "fraction of episodes that ended in a fall",
    "eval/timeouts": "fraction of episodes cut by env.max_episode_steps",
    "eval/comfort": "mean per-step comfort score, in [0.3, 1]",
    "eval/path_efficiency": "successful episodes: goal distance covered / path length walked (1 = straight)",
    "eval/time_to_goal": "successful episodes: seconds of simulated time to reach the goal",
}


@dataclass(frozen=True)
class Path2D:
    """Where one episode went on the floor (x, z world metres), from the raw observations."""

    points: np.ndarray  # (T + 1, 2) camera x, z at the start and after every action
    collisions: np.ndarray  # (k, 2) where the player was after each action that counted a collision
    goal: np.ndarray  # (2,)
    start_distance: float  # goal distance at the start, m
    layout: dict[str, Any] | None  # the server's /debug/layout answer at the episode's start, if any

    @property
    def length(self) -> float:
        return float(np.linalg.norm(np.diff(self.points, axis=0), axis=1).sum())


@dataclass(frozen=True)
class EpisodeResult:
    """One finished episode: agent `agent`'s `index`-th, described by the VecEnv's final info."""

    agent: int
    index: int
    info: dict[str, Any]
    path: Path2D | None = None

    @property
    def success(self) -> bool:
        return bool(self.info["is_success"])

    @property
    def reward(self) -> float:
        return float(self.info["episode"]["r"])

    @property
    def length(self) -> int:
        return int(self.info["episode"]["l"])

    def to_dict(self, step_seconds: float) -> dict[str, Any]:
        stats = self.info["episode_stats"]
        efficiency = _efficiency(self)
        return {
            "agent": self.agent,
            "index": self.index,
            "task": self.info.get("task"),
            "success": self.success,
            "return": self.reward,
            "length": self.length,
            "fell": bool(stats["falls"]),
            "timeout": bool(self.info["TimeLimit.truncated"]),
            "collisions": int(stats["collisions"]),
            "comfort": float(stats["comfort"]),
            "final_goal_distance": float(stats["goal_distance"]),
            "start_distance": None if self.path is None else self.path.start_distance,
            "path_length": None if self.path is None else self.path.length,
            "path_efficiency": None if math.isnan(efficiency) else efficiency,
            "time_to_goal": self.length * step_seconds if self.success else None,
        }


def model_policy(model: BaseAlgorithm, deterministic: bool = True) -> Act:
    """The model's actions; a recurrent model carries each agent's LSTM state from step to step."""
    state: tuple[np.ndarray, ...] | None = None

    def act(obs: np.ndarray, episode_start: np.ndarray) -> np.ndarray:
        nonlocal state
        actions, state = model.predict(
            obs, state=state, episode_start=episode_start, deterministic=deterministic
        )
        return actions

    return act


def play_episodes(
    env: VecEnv,
    act: Act,
    episodes: int,
    seed: int,
    after_step: Callable[[], None] | None = None,
) -> list[EpisodeResult]:
    """Play `episodes` episodes spread evenly over the env's agents; results in (index, agent) order.

    Each agent plays a fixed share (as SB3's `evaluate_policy` does), so short episodes do not
    crowd out long ones; the env is re-seeded so every call sees the same goals. `after_step` runs
    after every step (the trajectory recorder uses it).
    """
    env.seed(seed)
    obs: Any = env.reset()
    targets = np.array([(episodes + i) // env.num_envs for i in range(env.num_envs)])
    counts = np.zeros(env.num_envs, dtype=int)
    results: list[EpisodeResult] = []
    dones = np.ones(env.num_envs, dtype=bool)  # every agent starts an episode at the reset
    while (counts < targets).any():
        obs, _, dones, infos = env.step(act(obs, dones))  # a done agent's next observation starts one
        if after_step is not None:
            after_step()
        for i in np.flatnonzero(dones & (counts < targets)):
            results.append(EpisodeResult(agent=int(i), index=int(counts[i]), info=infos[i]))
            counts[i] += 1
    return sorted(results, key=lambda r: (r.index, r.agent))


def summarize(results: Sequence[EpisodeResult], step_seconds: float | None = None) -> dict[str, float]:
    """Every metric of `METRICS` over `results`, with actions lasting `step_seconds` (None: unknown).

    A metric of no episode (no success, no recorded path, unknown step duration) is NaN. Episodes
    of several tasks (multi-task training) add every metric per task: `eval/<task>/success_rate`...
    """
    stats = [r.info["episode_stats"] for r in results]
    rewards = [r.reward for r in results]
    successes = [r for r in results if r.success]
    low, high = wilson_interval(len(successes), len(results))
    metrics = {
        "eval/success_rate": float(np.mean([r.success for r in results])),
        "eval/success_low": low,
        "eval/success_high": high,
        "eval/mean_reward": float(np.mean(rewards)),
        "eval/std_reward": float(np.std(rewards)),
        "eval/mean_ep_length": float(np.mean([r.length for r in results])),
        "eval/collisions": float(np.mean([s["collisions"] for s in stats])),
        "eval/falls": float(np.mean([s["falls"] for s in stats])),
        "eval/timeouts": float(np.mean([r.info["TimeLimit.truncated"] for r in results])),
        "eval/comfort": float(np.mean([s["comfort"] for s in stats])),
        "eval/path_efficiency": _mean([_efficiency(r) for r in successes]),
        "eval/time_to_goal": _mean([r.length * (step_seconds or math.nan) for r in successes]),
    }
    tasks = sorted({str(r.info["task"]) for r in results if "task" in r.info})
    for task in tasks if len(tasks) > 1 else ():
        own = summarize([r for r in results if r.info.get("task") == task], step_seconds)
        metrics |= {key.replace("eval/", f"eval/{task}/", 1): value for key, value in own.items()}
    return metrics


def wilson_interval(successes: int, trials: int, z: float = WILSON_Z) -> tuple[float, float]:
    """The Wilson score interval of a success rate (95% with the default z).

    Unlike rate +- z * standard error it stays inside [0, 1] and does not shrink to nothing at
    0 or 1 successes out of a few trials.
    """
    if trials == 0:
        return math.nan, math.nan
    rate = successes / trials
    denominator = 1 + z * z / trials
    centre = (rate + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(rate * (1 - rate) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def seconds_per_step(action_repeat: int) -> float:
    """Simulated seconds one action lasts."""
    return action_repeat / wire.PHYSICS_HZ


def _efficiency(result: EpisodeResult) -> float:
    """How much of the walk went toward the goal: (start - final goal distance) / path length.

    For a success that is the straight-line start-goal distance (less the last < 0.6 m the goal
    radius spares) over the path walked: 1 for a straight line. NaN for a failed episode or one
    without a recorded path.
    """
    if not result.success or result.path is None:
        return math.nan
    gained = result.path.start_distance - float(result.info["episode_stats"]["goal_distance"])
    length = result.path.length
    return min(gained / length, 1.0) if length > 0 else 1.0


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
