"""Where each evaluation episode went: a transport wrapper that records paths from raw observations.

The VecEnv hands the policy preprocessed observations (camera x and z zeroed), so paths are taken
one level down: `RecordingTransport` wraps a server's transport, passes every call through, and
reads the camera position of each raw observation and the collision events of each step. At an
episode's start it can also ask the server for the arena (`GET /debug/layout`, a simulator-only
extension); a server without it (Godot) answers 404 and the plot shows paths only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spacetime_rl.metrics import EpisodeResult, Path2D
from spacetime_rl.protocol.wire import OBS

__all__ = ["RecordingTransport", "attach_paths"]

_POSITION = [OBS["camera_position"].start, OBS["camera_position"].start + 2]  # x, z
_GOAL = [OBS["goal_relative_position"].start, OBS["goal_relative_position"].start + 2]
_DISTANCE = OBS["goal_distance"].start


class _Recording:
    """One running episode of one agent."""

    def __init__(self, observation: np.ndarray, layout: dict[str, Any] | None) -> None:
        start = observation[_POSITION].astype(np.float64)
        self.points = [start]
        self.collisions: list[np.ndarray] = []
        self.goal = start + observation[_GOAL]
        self.start_distance = float(observation[_DISTANCE])
        self.layout = layout

    def add(self, observation: np.ndarray, collisions: int) -> None:
        position = observation[_POSITION].astype(np.float64)
        self.points.append(position)
        if collisions:
            self.collisions.append(position)

    def finish(self) -> Path2D:
        return Path2D(
            points=np.array(self.points),
            collisions=np.array(self.collisions).reshape(-1, 2),
            goal=self.goal,
            start_distance=self.start_distance,
            layout=self.layout,
        )


class RecordingTransport:
    """An `AgentTransport` that records every agent's episodes as `Path2D`s, in order.

    Layouts are fetched for each agent's first `layout_episodes` episodes only (one request each).
    """

    def __init__(self, transport: Any, layout_episodes: int = 0) -> None:
        self.transport = transport
        self.layout_episodes = layout_episodes
        self.layouts_available = hasattr(transport, "debug_layout")
        self.paths: list[list[Path2D]] = []
        self._running: list[_Recording | None] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._auto_reset = False

    def __getattr__(self, name: str) -> Any:  # load_scene, get_performance_metrics, ...
        return getattr(self.transport, name)

    async def spec(self) -> Any:
        # The VecEnv calls spec() on the loop it drives this transport with; receive_step, which is
        # not a coroutine, fetches layouts on that loop between its runs.
        self._loop = asyncio.get_running_loop()
        spec = await self.transport.spec()
        self.paths = [[] for _ in range(spec.num_agents)]
        self._running = [None] * spec.num_agents
        return spec

    async def reset(
        self,
        seed: int | None = None,
        agents: Sequence[int] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> Any:
        result = await self.transport.reset(seed=seed, agents=agents, options=options)
        if agents is None:  # a fresh start: what ran before is not an episode of this evaluation
            self.paths = [[] for _ in self.paths]
            self._running = [None] * len(self.paths)
            agents = range(len(self.paths))
        for agent in agents:
            self._finish(agent)  # cut by the client's time limit
        await self._begin(list(agents), result.observations)
        return result

    def send_step(self, actions: np.ndarray, auto_reset: bool = False) -> None:
        self._auto_reset = auto_reset
        self.transport.send_step(actions, auto_reset=auto_reset)

    def receive_step(self) -> Any:
        result = self.transport.receive_step()
        begun = self._record(result)
        if self._auto_reset and begun:
            assert self._loop is not None, "spec() comes first"
            self._loop.run_until_complete(self._begin(begun, result.observations[begun]))
        return result

    def _record(self, result: Any) -> list[int]:
        """Add a step to the running recordings; returns the agents whose episode ended."""
        collisions = result.events.collisions
        for agent, recording in enumerate(self._running):
            if recording is not None:
                final = result.terminal_observations.get(agent, result.observations[agent])
                recording.add(final, int(collisions[agent]))
        done: list[int] = np.flatnonzero(result.done).tolist()
        for agent in done:
            self._finish(agent)
        return done

    async def close(self) -> None:
        await self.transport.close()

    def _finish(self, agent: int) -> None:
        recording = self._running[agent]
        if recording is not None and len(recording.points) > 1:
            self.paths[agent].append(recording.finish())
        self._running[agent] = None

    async def _begin(self, agents: list[int], observations: np.ndarray) -> None:
        for agent, observation in zip(agents, observations, strict=True):
            layout = None
            if self.layouts_available and len(self.paths[agent]) < self.layout_episodes:
                layout = await self.transport.debug_layout(agent)
                self.layouts_available = layout is not None
            self._running[agent] = _Recording(observation, layout)


def attach_paths(
    results: Sequence[EpisodeResult], recorders: Sequence[RecordingTransport]
) -> list[EpisodeResult]:
    """`results` with each episode's recorded path; VecEnv agent i is the recorders' i-th agent overall."""
    by_agent = [paths for recorder in recorders for paths in recorder.paths]
    return [
        EpisodeResult(
            r.agent, r.index, r.info, by_agent[r.agent][r.index] if r.index < len(by_agent[r.agent]) else None
        )
        for r in results
    ]
