"""`SpaceTimeEnv`: one agent as a Gymnasium env (`SpaceTime/VRNavigation-v0`), for tools that want one.

Training uses `SpaceTimeVecEnv`, which steps many agents per request; this env speaks the same
protocol with one agent and no auto-reset, so `DummyVecEnv([SpaceTimeEnv])` is the reference the
VecEnv's semantics are tested against.
"""

from __future__ import annotations

import asyncio
from typing import Any

import gymnasium as gym
import numpy as np

from spacetime_rl.config import EnvConfig, RewardConfig
from spacetime_rl.envs.episodes import EpisodeTracker
from spacetime_rl.envs.preprocessing import preprocess_observations
from spacetime_rl.envs.vec_env import action_space, make_clients, observation_space, reset_options
from spacetime_rl.errors import ConfigError
from spacetime_rl.godot.launcher import ServerPool

__all__ = ["ENV_ID", "SpaceTimeEnv"]

ENV_ID = "SpaceTime/VRNavigation-v0"


class SpaceTimeEnv(gym.Env[np.ndarray, np.ndarray]):
    """One agent: attaches to `url` (or env.url's first for env.kind=godot) or starts its own simulator.

    `reset(options=...)` takes the server's reset options (e.g. max_goal_distance); they persist.
    """

    def __init__(
        self, config: EnvConfig | None = None, reward: RewardConfig | None = None, *, url: str | None = None
    ) -> None:
        self.config = config or EnvConfig()
        self.observation_space = observation_space()
        self.action_space = action_space()
        self._pool: ServerPool | None = None
        if url is None and self.config.kind == "sim":
            self._pool = ServerPool(self.config, count=1, agents=1)
            url = self._pool.start()[0]
        self._loop = asyncio.new_event_loop()
        self._client = make_clients([url or next(iter(self.config.urls), "")], self.config)[0]
        try:
            if self.config.kind == "godot":
                self._run(self._client.load_scene(self.config.scene))
            agents = self._run(self._client.spec()).num_agents
            if agents != 1:
                raise ConfigError(
                    f"{ENV_ID} drives one agent but the server at {url} has {agents}; start it with "
                    "--agents 1, or use SpaceTimeVecEnv for many agents"
                )
        except BaseException:
            self.close()
            raise
        self._options = reset_options(self.config)
        self._tracker = EpisodeTracker(1, self.config, reward or RewardConfig())

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._options |= options or {}
        result = self._run(self._client.reset(seed=seed, options=self._options))
        self._tracker.start(result.observations)
        return self._observe(result.observations), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        applied = self._tracker.smooth(np.asarray(action).reshape(1, -1))
        result = self._run(self._client.step(applied))
        record = self._tracker.record(result.observations, applied, result.events, result.done)
        terminated, truncated = bool(result.done[0]), bool(record.truncated[0])
        info: dict[str, Any] = {}
        if terminated or truncated:
            info = self._tracker.episode_info(0, result.observations[0], result.events, truncated)
            del info["TimeLimit.truncated"]  # DummyVecEnv derives it from `truncated`
        return self._observe(result.observations), float(record.rewards[0]), terminated, truncated, info

    def close(self) -> None:
        client = getattr(self, "_client", None)
        if not self._loop.is_closed():
            if client is not None:
                self._run(client.close())
            self._loop.close()
        if self._pool is not None:
            self._pool.stop()
            self._pool = None

    def _observe(self, raw: np.ndarray) -> np.ndarray:
        return preprocess_observations(raw, heading_frame=self.config.heading_frame)[0]

    def _run(self, awaitable: Any) -> Any:
        return self._loop.run_until_complete(awaitable)
