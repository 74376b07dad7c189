"""Curriculum over goal distance: stages advanced by timesteps (the seed) or by eval success rate.

mode=timesteps: stage i lasts `stages[i].timesteps` agent-steps; the last stage lasts for ever.
mode=success_rate: a stage ends early when an evaluation's success rate reaches
`success_threshold`, and at the latest after its `timesteps` (so training never stalls on a stage).
A task's own stages (`task.tasks.<name>.curriculum`) always advance by timesteps.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from spacetime_rl.config import CurriculumConfig, TasksConfig
from spacetime_rl.errors import ConfigError


@dataclass
class CurriculumState:
    """What a checkpoint stores to resume the curriculum."""

    stage: int = 0
    stage_start: int = 0  # agent-steps when the stage began


class Curriculum:
    def __init__(
        self, config: CurriculumConfig, default_distance: float, state: CurriculumState | None = None
    ) -> None:
        self.config = config
        self.default_distance = default_distance
        self.state = state or CurriculumState()
        if self.enabled and not 0 <= self.state.stage < len(config.stages):
            raise ConfigError(
                f"resume: the checkpoint is at curriculum stage {self.state.stage} but curriculum.stages has "
                f"{len(config.stages)} stages; resume with the curriculum the checkpoint was trained with"
            )

    @property
    def enabled(self) -> bool:
        return self.config.enabled and bool(self.config.stages)

    @property
    def stage(self) -> int:
        return self.state.stage

    @property
    def stage_name(self) -> str:
        return self.config.stages[self.stage].name if self.enabled else "none"

    @property
    def max_goal_distance(self) -> float:
        """The goal distance limit of the current stage (env.max_goal_distance without a curriculum)."""
        return self.config.stages[self.stage].max_goal_distance if self.enabled else self.default_distance

    def update(self, timesteps: int, success_rate: float | None = None) -> bool:
        """Advance as far as `timesteps` (and an eval's `success_rate`) allow; True if the stage changed."""
        if not self.enabled:
            return False
        before = self.stage
        last = len(self.config.stages) - 1
        if (
            self.config.mode == "success_rate"
            and success_rate is not None
            and success_rate >= self.config.success_threshold
            and self.stage < last
        ):
            self.state = CurriculumState(self.stage + 1, timesteps)
        while self.stage < last:
            end = self.state.stage_start + self.config.stages[self.stage].timesteps
            if timesteps < end:
                break
            self.state = CurriculumState(self.stage + 1, end)
        return self.stage != before

    def to_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    @staticmethod
    def state_from_dict(data: dict[str, Any]) -> CurriculumState:
        return CurriculumState(stage=int(data["stage"]), stage_start=int(data["stage_start"]))


class TaskCurricula:
    """The goal distance of every task with its own stages, by task name; they advance by timesteps.

    Their stage follows from the step count alone, so a resumed run needs no stored state.
    """

    def __init__(self, tasks: TasksConfig, timesteps: int = 0) -> None:
        self.curricula = {
            name: Curriculum(CurriculumConfig(enabled=True, stages=task.curriculum), math.inf)
            for name, task in tasks.chosen.items()
            if task.curriculum
        }
        self.update(timesteps)

    @property
    def max_goal_distances(self) -> dict[str, float]:
        return {name: curriculum.max_goal_distance for name, curriculum in self.curricula.items()}

    def update(self, timesteps: int) -> bool:
        """Advance every task's stages as far as `timesteps` allow; True if any stage changed."""
        # A list, not a generator: every task advances, not only those before the first change.
        return any([curriculum.update(timesteps) for curriculum in self.curricula.values()])
