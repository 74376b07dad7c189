"""What a run's step budget will really do: whole rollouts, and the work a short budget skips.

`train()` logs these notes once at the start and records them, with the steps it trained, in
metrics.json, so a run that makes no checkpoint or never leaves a curriculum stage says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from spacetime_rl.config import CurriculumConfig, TrainConfig
from spacetime_rl.curriculum import Curriculum


@dataclass(frozen=True)
class Budget:
    """The agent-steps a run asks for and trains, and what the difference leaves out."""

    requested: int  # training.total_timesteps
    start: int  # steps already in the resumed checkpoint (0 for a new run)
    trained: int  # where training ends: PPO collects whole rollouts
    notes: list[str] = field(default_factory=list)


def plan_budget(config: TrainConfig, start: int = 0) -> Budget:
    """The budget of `config` from `start` steps (a resumed checkpoint's), with a note per skipped piece."""
    training = config.training
    rollout = config.ppo.n_steps * config.env.num_agents
    remaining = max(training.total_timesteps - start, 0)
    trained = start + math.ceil(remaining / rollout) * rollout
    notes = []
    if trained != training.total_timesteps and remaining:
        notes.append(
            f"training.total_timesteps={training.total_timesteps} is not a whole number of rollouts "
            f"(ppo.n_steps x agents = {config.ppo.n_steps} x {config.env.num_agents} = {rollout}): "
            f"training runs to {trained} steps"
        )
    for key, every, what in (
        ("training.eval_freq", training.eval_freq, "no evaluation before the final one"),
        ("training.save_freq", training.save_freq, "no checkpoint before final_model.zip"),
    ):
        if remaining and (start // every + 1) * every > trained:  # as the periodic callbacks count
            notes.append(f"{key}={every} is more than the {trained - start} steps this run trains: {what}")
    if config.curriculum.enabled:
        notes += _stage_notes("curriculum.stages", config.curriculum, trained)
    for name, task in config.task.chosen.items():
        if task.curriculum:
            stages = CurriculumConfig(enabled=True, stages=task.curriculum)  # as TaskCurricula runs them
            notes += _stage_notes(f"task.tasks.{name}.curriculum", stages, trained)
    return Budget(training.total_timesteps, start, trained, notes)


def _stage_notes(key: str, config: CurriculumConfig, trained: int) -> list[str]:
    """A note when the run ends before the last stage: the stage training's own `Curriculum` reaches
    by `trained` steps, so the note says what metrics.json's curriculum will."""
    curriculum = Curriculum(config, math.inf)
    curriculum.update(trained)
    stages = config.stages
    if curriculum.stage == len(stages) - 1:
        return []
    missed = stages[curriculum.stage + 1]
    starts_at = sum(stage.timesteps for stage in stages[: curriculum.stage + 1])
    early = (
        " unless evaluations reach curriculum.success_threshold sooner"
        if config.mode == "success_rate"
        else ""
    )
    return [
        f"{key}: stage {missed.name!r} starts at {starts_at} steps, after the {trained} this run trains: it "
        f"ends in stage {curriculum.stage_name!r}{early}; raise training.total_timesteps or shorten the stages"
    ]
