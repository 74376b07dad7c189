"""What the protocol v1 RL endpoints answer, decoded: one type per answer, rows are agents."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Events", "RLSpec", "ResetResult", "StepResult"]


@dataclass(frozen=True)
class RLSpec:
    """What `/rl/spec` reports about the loaded RL scene."""

    protocol: int
    num_agents: int
    observation_size: int
    action_size: int
    observation_fields: tuple[tuple[str, int], ...]
    physics_hz: float
    action_repeat: int  # physics frames per action
    scenarios: tuple[str, ...] = ()  # values of the `scenario` reset option; () when the server has none


@dataclass(frozen=True)
class Events:
    """Per-agent counts since the previous action; each array has one entry per agent."""

    collisions: np.ndarray  # int32 (N,)
    fell: np.ndarray  # bool (N,)
    goal_reached: np.ndarray  # bool (N,)
    teleports: np.ndarray  # int32 (N,)


@dataclass(frozen=True)
class StepResult:
    """One `/rl/step`: rows are agents. With auto_reset, finished agents' rows start their next episode."""

    observations: np.ndarray  # float32 (N, 48)
    done: np.ndarray  # bool (N,)
    events: Events
    tick: int
    terminal_observations: dict[int, np.ndarray]  # agent -> float32 (48,), only with auto_reset


@dataclass(frozen=True)
class ResetResult:
    """One `/rl/reset`: a row per reset agent, in the order asked for."""

    observations: np.ndarray  # float32 (k, 48)
    ignored_options: tuple[str, ...]
