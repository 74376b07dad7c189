"""`InProcessTransport`: the VecEnv's transport seam over a `World` in this process, no HTTP.

It answers `spec`, `reset` and `send_step`/`receive_step` with the protocol's result types and
the simulator server's semantics (auto_reset, terminal observations), so a VecEnv over it differs
from one over `GodotClient` only in the transport: what the benchmarks compare. The world steps
in `receive_step`, in the caller's thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spacetime_rl.protocol import Events, ResetResult, RLSpec, StepResult, wire
from spacetime_rl.sim.world import World, ignored_options

__all__ = ["InProcessTransport"]


class InProcessTransport:
    """One simulated scene of `num_agents` agents, stepped in the caller's thread."""

    def __init__(
        self, num_agents: int, *, seed: int | None = None, action_repeat: int = wire.DEFAULT_ACTION_REPEAT
    ):
        self.world = World(num_agents, action_repeat=action_repeat, seed=seed)
        self._sent: tuple[np.ndarray, bool] = (np.zeros((num_agents, wire.ACTION_SIZE)), False)

    async def spec(self) -> RLSpec:
        return RLSpec(
            protocol=wire.PROTOCOL_VERSION,
            num_agents=self.world.num_agents,
            observation_size=wire.OBSERVATION_SIZE,
            action_size=wire.ACTION_SIZE,
            observation_fields=wire.OBSERVATION_FIELDS,
            physics_hz=float(wire.PHYSICS_HZ),
            action_repeat=self.world.action_repeat,
        )

    async def reset(
        self,
        seed: int | None = None,
        agents: Sequence[int] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> ResetResult:
        options = dict(options or {})
        observations = self.world.reset(agents, seed, options)
        return ResetResult(observations, tuple(ignored_options(options)))

    def send_step(self, actions: np.ndarray, auto_reset: bool = False) -> None:
        self._sent = (actions, auto_reset)

    def receive_step(self) -> StepResult:
        actions, auto_reset = self._sent
        outcome = self.world.step(actions)
        observations = self.world.observe()
        terminal: dict[int, np.ndarray] = {}
        if auto_reset:
            finished = np.flatnonzero(outcome.done)
            if finished.size:
                terminal = dict(zip(finished.tolist(), observations[finished], strict=True))
                observations[finished] = self.world.reset(finished)
        events = Events(
            collisions=outcome.collisions.astype(np.int32),
            fell=outcome.fell,
            goal_reached=outcome.goal_reached,
            teleports=outcome.teleports.astype(np.int32),
        )
        return StepResult(observations, outcome.done, events, outcome.tick, terminal)

    async def close(self) -> None:
        """Nothing to release; present for the transport seam."""
