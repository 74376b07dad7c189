"""Per-agent episode bookkeeping shared by the VecEnv and the Gymnasium env, vectorised over N agents.

One `EpisodeTracker` holds, for every agent, what the server does not: the action smoothing state,
the reward calculator's closest approach, the client-side time limit and the running episode stats
that end up in `info["episode"]` (Monitor's r and l) and `info["episode_stats"]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spacetime_rl.config import EnvConfig, RewardConfig
from spacetime_rl.envs.preprocessing import ActionSmoother
from spacetime_rl.protocol import Events
from spacetime_rl.protocol.wire import OBS
from spacetime_rl.rewards import REWARD_TERMS, RewardCalculator


@dataclass(frozen=True)
class StepRecord:
    """What the tracker makes of one step: shaped rewards (N,) and time-limit truncations (N,)."""

    rewards: np.ndarray  # float32
    truncated: np.ndarray  # bool: hit max_episode_steps without finishing


class EpisodeTracker:
    def __init__(
        self, num_agents: int, env: EnvConfig, reward: RewardConfig | Sequence[RewardConfig]
    ) -> None:
        self.num_agents = num_agents
        self.max_episode_steps = env.max_episode_steps
        self.smoother = ActionSmoother(num_agents, env.action_smoothing)
        self.rewards = RewardCalculator(reward, num_agents, env.max_speed)
        self.steps = np.zeros(num_agents, dtype=np.int64)
        self.returns = np.zeros(num_agents)
        self.collisions = np.zeros(num_agents, dtype=np.int64)
        self.teleports = np.zeros(num_agents, dtype=np.int64)
        self.comfort = np.zeros(num_agents)
        self.terms = np.zeros((len(REWARD_TERMS), num_agents))

    def start(self, observations: np.ndarray, agents: np.ndarray | slice = slice(None)) -> None:
        """Begin episodes for `agents` from their first raw observations (k, 48)."""
        self.restart_actions(agents)
        self.restart_stats(observations, agents)

    def restart_actions(self, agents: np.ndarray | slice) -> None:
        """The action smoothing of `start`: before a new episode's first actions are sent."""
        self.smoother.reset(agents)

    def restart_stats(self, observations: np.ndarray, agents: np.ndarray | slice) -> None:
        """The rest of `start`: the episode stats, restarted once the old episode's last step is
        scored, which may come after the new episode's first actions are sent
        (`SpaceTimeVecEnv.score_group`)."""
        self.rewards.reset(observations, agents)
        for stat in (self.steps, self.returns, self.collisions, self.teleports, self.comfort):
            stat[agents] = 0
        self.terms[:, agents] = 0.0

    def smooth(self, raw_actions: np.ndarray, agents: slice = slice(None)) -> np.ndarray:
        """Applied actions (k, 3) for the policy's actions of `agents` (all N by default): smoothed
        and clipped to [-1, 1]."""
        return self.smoother(raw_actions, agents)

    def record(
        self,
        observations: np.ndarray,
        applied: np.ndarray,
        events: Events,
        done: np.ndarray,
        agents: slice = slice(None),
    ) -> StepRecord:
        """Count and score one step of `agents` (all N by default; a slice, so every update below is
        in place) under a single task's rewards (the Gymnasium env's); `observations` (k, 48) are each
        one's last raw observation of it, the rest (k,) likewise."""
        truncated = self.count(done, agents)
        return StepRecord(self.score(observations, applied, events, truncated, agents), truncated)

    def count(self, done: np.ndarray, agents: slice = slice(None)) -> np.ndarray:
        """Count one step of `agents`; returns which hit the time limit without finishing (k,)."""
        steps = self.steps[agents]
        steps += 1
        return (steps >= self.max_episode_steps) & ~done

    def score(
        self,
        observations: np.ndarray,
        applied: np.ndarray,
        events: Events,
        truncated: np.ndarray,
        agents: slice = slice(None),
        tasks: np.ndarray | None = None,
    ) -> np.ndarray:
        """The float32 rewards (k,) of the step `count` counted, added to the episodes' stats;
        `tasks` (k,) are the tasks it ran under (required with several tasks' rewards)."""
        breakdown = self.rewards.step(observations, applied, events, truncated, agents, tasks)
        self.returns[agents] += breakdown.total
        self.collisions[agents] += events.collisions
        self.teleports[agents] += events.teleports
        self.comfort[agents] += breakdown.comfort
        self.terms[:, agents] += breakdown.weighted
        return breakdown.total.astype(np.float32)

    def episode_info(
        self,
        agent: int,
        final_observation: np.ndarray,
        events: Events,
        truncated: bool,
        row: int | None = None,
    ) -> dict[str, Any]:
        """Info entries for an agent whose episode just ended (before `start` or `restart_stats`
        clears its stats);
        `row` is its row of `events` when they cover only some agents (default: `agent`)."""
        length = int(self.steps[agent])
        row = agent if row is None else row
        return {
            "episode": {"r": float(self.returns[agent]), "l": length},
            "is_success": bool(events.goal_reached[row]),
            "TimeLimit.truncated": truncated,
            "episode_stats": {
                "collisions": int(self.collisions[agent]),
                "falls": int(events.fell[row]),
                "teleports": int(self.teleports[agent]),
                "comfort": float(self.comfort[agent] / max(length, 1)),
                "goal_distance": float(final_observation[OBS["goal_distance"].start]),
                "terms": {name: float(self.terms[i, agent]) for i, name in enumerate(REWARD_TERMS)},
            },
        }
