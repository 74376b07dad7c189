"""Which task each agent's episode belongs to: drawn per episode, sent as reset options, shown to the policy.

With one task nothing changes: no draws, no extra reset option for the open field, 48-float
observations. With several, every episode start draws its agent's task from a stream seeded by
`training.seed`, the task's scenario and goal distances go to the server as reset options, and the
observation gains a one-hot block of the task (docs/training.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spacetime_rl.config import TasksConfig
from spacetime_rl.errors import ConfigError
from spacetime_rl.protocol import wire

__all__ = ["TaskSchedule"]


class TaskSchedule:
    """The task of every agent's running episode (`ids`, indices into `names`)."""

    def __init__(self, config: TasksConfig, num_agents: int, seed: int | None = None) -> None:
        self.config = config
        self.names = config.names
        self.probabilities = np.array(config.probabilities)
        self.multi = config.multi
        self.ids = np.zeros(num_agents, dtype=np.int64)
        self.ids[:] = int(np.argmax(self.probabilities))  # one task: that one
        self._rng = np.random.default_rng(seed)
        tasks = list(config.chosen.values())
        # The open field is every server's world: say "scenario" only when a task needs another.
        self._send_scenario = any(task.scenario != wire.DEFAULT_SCENARIO for task in tasks)
        self._overrides = [self._task_options(task) for task in tasks]

    @property
    def size(self) -> int:
        """Floats the task block adds to an observation: the number of tasks, or 0 with one task."""
        return len(self.names) if self.multi else 0

    def reseed(self, seed: int) -> None:
        self._rng = np.random.default_rng(seed)

    def draw(self, agents: np.ndarray) -> np.ndarray:
        """Draw new tasks for the agents flagged in `agents` (N,) bool; returns which ones changed task."""
        changed = np.zeros(len(self.ids), dtype=bool)
        count = int(agents.sum())
        if not self.multi or not count:
            return changed
        new = self._rng.choice(len(self.names), size=count, p=self.probabilities)
        changed[agents] = self.ids[agents] != new
        self.ids[agents] = new
        return changed

    def options(self, task: int, base: Mapping[str, Any]) -> dict[str, Any]:
        """The reset options of an episode of `task`: `base` with the task's scenario and goal distances."""
        options = {**base, **self._overrides[task]}
        low, high = options.get("min_goal_distance"), options.get("max_goal_distance")
        if low is not None and high is not None and low > high:  # a task's short goals
            options["min_goal_distance"] = high
        return options

    def set_max_goal_distances(self, distances: Mapping[str, float]) -> np.ndarray:
        """Give the named tasks' episodes these goal distance limits; returns the agents now in them."""
        for name, distance in distances.items():
            self._overrides[self.names.index(name)]["max_goal_distance"] = distance
        return np.isin(self.ids, [self.names.index(name) for name in distances])

    def one_hot(self, ids: np.ndarray) -> np.ndarray:
        """(k, size) float32 task blocks of the task indices `ids` (k,)."""
        return np.eye(len(self.names), dtype=np.float32)[ids][:, : self.size]

    def check_servers(self, specs: Sequence[Any]) -> None:
        """Refuse servers that lack a scenario a task needs (their spec's `scenarios`)."""
        needed = {task.scenario for task in self.config.chosen.values()} - {wire.DEFAULT_SCENARIO}
        for index, spec in enumerate(specs):
            missing = sorted(needed - set(getattr(spec, "scenarios", ())))
            if missing:
                raise ConfigError(
                    f"server {index} offers scenarios {list(getattr(spec, 'scenarios', ()))}, but task "
                    f"{self.config.name!r} needs {missing}: use env=sim, or add the scenarios' spawn "
                    "markers to the Godot scene (docs/godot.md), or pick another task (task=navigate)"
                )

    def _task_options(self, task: Any) -> dict[str, Any]:
        options: dict[str, Any] = {"scenario": task.scenario} if self._send_scenario else {}
        if task.max_goal_distance is not None:
            options["max_goal_distance"] = task.max_goal_distance
        if task.min_goal_distance is not None:
            options["min_goal_distance"] = task.min_goal_distance
        return options
