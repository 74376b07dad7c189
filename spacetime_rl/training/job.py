"""`train(config, output_dir)`: the PPO job behind train.py; returns the objective for sweepers.

Output directory layout:

    tensorboard/<name>_<n>/         SB3 scalars plus reward/<term>, rollout/*, eval/*, engine/*, curriculum/*
    checkpoints/vr_nav_model_<steps>_steps.zip (+ _vecnormalize.pkl, _state.json)
    best_models/best_model.zip      (+ companions) best evaluation so far
    final_model.zip                 (+ companions)
    metrics.json                    name and tags, final and best evaluation, the objective, server faults,
                                    the servers (launcher, URLs, processes; Ray nodes and actors)
    progress.csv / wandb/ / mlflow.db   with logger=csv|wandb|mlflow (training/loggers.py)

SIGINT (Ctrl-C) and SIGTERM stop training at the next step: a checkpoint is saved, the servers are
stopped, and `train()` raises `SystemExit(128 + signal)` (130 and 143). A second signal interrupts
at once. A server fault the VecEnv cannot recover from (an attached Godot that stays away, a
launched server past env.max_restarts) also saves a checkpoint before the error propagates.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import math
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Final

import numpy as np
import torch
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.utils import get_latest_run_id, set_random_seed
from stable_baselines3.common.vec_env import VecNormalize, sync_envs_normalization
from torch import nn

from spacetime_rl.artifacts import (
    check_same_save,
    checkpoint_path,
    clean_stale,
    load_state,
    resolve_resume,
    save_snapshot,
    stats_path,
    write_json,
)
from spacetime_rl.budget import plan_budget
from spacetime_rl.config import ACTIVATIONS as config_activations
from spacetime_rl.config import (
    NetworkConfig,
    PPOConfig,
    TrainConfig,
    TrainingConfig,
    hyperparameters,
    run_name,
    torch_threads,
)
from spacetime_rl.curriculum import Curriculum, TaskCurricula
from spacetime_rl.envs import SpaceTimeVecEnv, connector, with_server_agents
from spacetime_rl.errors import ConfigError, GodotError
from spacetime_rl.godot.launcher import ServerPool, server_pool
from spacetime_rl.seeds import held_out_seed, in_training_eval_seed
from spacetime_rl.snapshots import Model, algorithm, load_frozen
from spacetime_rl.training.callbacks import (
    EVAL_METRICS,
    CheckpointCallback,
    CurriculumCallback,
    EpisodeMetricsCallback,
    EvalCallback,
    EvalHook,
    EvalRecord,
    Evaluator,
    HParamsCallback,
    RolloutTorch,
    evaluate,
)
from spacetime_rl.training.loggers import destinations, run_logger
from spacetime_rl.training.overlapped import CoreSplit, OverlappedPPO, Placement, core_split, rollout_groups

log = logging.getLogger(__name__)

#: PPO settings a resumed run takes from its own config: all of `PPOConfig` but the device.
RESUMABLE_PPO: Final = tuple(f.name for f in dataclasses.fields(PPOConfig) if f.name != "device")
#: network.activation_fn -> the torch module class (the names live once, in config.ACTIVATIONS).
ACTIVATIONS: Final[dict[str, type[nn.Module]]] = {
    name: getattr(nn, cls) for name, cls in config_activations.items()
}
#: The HPARAMS tab's metrics beside training.objective: every evaluation logs them.
HPARAMS_METRICS: Final = ("eval/success_rate", "eval/mean_reward", "eval/comfort")
#: Where `resume=latest` looks for runs: Hydra's default run directories (conf/train.yaml).
RUNS_ROOT: Final = Path("outputs")


def train(config: TrainConfig, output_dir: Path, on_eval: EvalHook | None = None) -> float:
    """Train PPO as configured, writing everything under `output_dir`; return the objective.

    The objective is the value of `training.objective` (an `eval/*` metric) in the *final*
    evaluation, run on the trained policy after the last step: the best-so-far evaluation would
    reward lucky noise, and the final one scores what the run actually produced. `on_eval` sees
    every periodic evaluation; when it returns False training stops and the objective is that
    evaluation's (sweeps prune trials this way).
    """
    config = dataclasses.replace(config, env=with_server_agents(config.env))  # re-runs its checks
    env_config, training = config.env, config.training
    if training.objective not in EVAL_METRICS:
        raise ConfigError(f"training.objective={training.objective!r} is invalid: use one of {EVAL_METRICS}")
    config.logger.check_installed()
    sb3_verbose = 1 if config.verbose else 0
    label = config.label

    output_dir = Path(output_dir)
    log.info(
        "training.rollout=%s%s",
        training.rollout,
        f": {config.rollout_mode}" if training.rollout == "auto" else "",
    )
    checkpoint_dir, best_dir = output_dir / "checkpoints", output_dir / "best_models"
    resume = resolve_resume(config.resume, RUNS_ROOT) if config.resume else None
    for run_dir in dict.fromkeys([output_dir, *([resume.parent.parent] if resume else [])]):
        for path in clean_stale(run_dir):
            log.warning("removed %s, left by a save that was cut short", path)
    if resume is not None:
        log.info("resume=%s: continuing from %s", config.resume, resume)
    resume_state = load_state(resume) if resume else {}
    budget = plan_budget(config, int(resume_state.get("num_timesteps", 0)))
    for note in budget.notes:
        log.warning("%s", note)

    threads = torch_threads(config)
    torch.set_num_threads(threads)
    if not training.torch_threads:
        log.info(
            "training.torch_threads=0 (auto): %d thread(s) for PPO updates, the cores the servers leave",
            threads,
        )
    set_random_seed(training.seed)
    curriculum = Curriculum(
        config.curriculum,
        env_config.max_goal_distance,
        Curriculum.state_from_dict(resume_state["curriculum"]) if resume else None,
    )
    task_curricula = TaskCurricula(config.task, int(resume_state.get("num_timesteps", 0)))
    record = EvalRecord()
    if resume and (best_dir / "best_model.zip").is_file():  # don't overwrite a better best model here
        record.best = resume_state.get("best") or {}

    with contextlib.ExitStack() as stack:
        stop = stack.enter_context(_stop_on_signals())
        # before the servers start, so a wandb run that cannot start stops the run at once
        run_dir = Path(
            resume_state.get("tensorboard_run") or _next_run_dir(output_dir / "tensorboard", label)
        )
        hparams = hyperparameters(config)
        logger = run_logger(
            config.logger,
            output_dir=output_dir,
            tensorboard_run=run_dir,
            label=label,
            tags=list(config.tags),
            hparams=hparams,
            stdout=bool(sb3_verbose),
        )
        stack.callback(logger.close)
        split = core_split(config)  # training.cpu_affinity: where the rollout and its servers run
        envs = _start_envs(stack, config, split)
        train_venv, eval_venv = envs.train, envs.eval
        for venv in (train_venv, eval_venv):
            venv.set_max_goal_distance(curriculum.max_goal_distance)
            venv.set_task_max_goal_distances(task_curricula.max_goal_distances)
        train_env, eval_env = _normalized(envs, config, resume)
        model = (
            _load_model(resume, train_env, config) if resume else _new_model(train_env, config, sb3_verbose)
        )
        if resume:
            check_same_save(resume, model, train_env, resume_state)
        model.set_logger(logger)
        if split and isinstance(model, OverlappedPPO):
            model.placement = Placement(split, envs.train_pool.place)
            log.info(
                "training.cpu_affinity: rollouts run pinned (on core %s, the training servers on cores %s) "
                "or unpinned, whichever is timed faster",
                _cores(split.trainer),
                _cores(split.servers),
            )

        def restart_training_episodes(model: BaseAlgorithm) -> None:
            # The eval env shares Godot with training: its resets cut the training episodes short.
            model._last_obs = train_env.reset()  # type: ignore[assignment]
            model._last_episode_starts = np.ones(train_env.num_envs, dtype=bool)

        evaluator = Evaluator(
            eval_env,
            episodes=training.eval_episodes,
            seed=in_training_eval_seed(training.seed),
            best_dir=best_dir,
            curriculum=curriculum,
            record=record,
            after=restart_training_episodes if env_config.attached else None,
        )

        def snapshot_state() -> dict[str, Any]:
            return {
                "num_timesteps": model.num_timesteps,
                "curriculum": curriculum.to_dict(),
                "tensorboard_run": str(run_dir.resolve()),
                "best": record.best,
            }

        stop_on_signal = _StopOnSignal(stop)
        checkpoint_callback = CheckpointCallback(checkpoint_dir, training.save_freq, snapshot_state)
        curriculum_callback = CurriculumCallback(curriculum, eval_env, task_curricula, verbose=sb3_verbose)
        eval_callback = EvalCallback(evaluator, training.eval_freq, curriculum_callback, on_eval)
        callbacks = CallbackList(
            [
                RolloutTorch(training.rollout_torch_threads),
                HParamsCallback(hparams, list(dict.fromkeys([training.objective, *HPARAMS_METRICS]))),
                curriculum_callback,
                EpisodeMetricsCallback(),
                checkpoint_callback,
                eval_callback,
                stop_on_signal,
            ]
        )

        def save_checkpoint() -> Path:
            path = checkpoint_path(checkpoint_dir, model.num_timesteps)
            save_snapshot(model, train_env, path, snapshot_state())
            return path

        remaining = training.total_timesteps - model.num_timesteps
        if remaining > 0:
            try:
                model.learn(
                    remaining,
                    callback=callbacks,
                    reset_num_timesteps=resume is None,
                    tb_log_name=label,
                    progress_bar=training.progress_bar,
                )
            except KeyboardInterrupt:
                if not stop.interrupted_update or stop.signum is None:
                    raise  # a second signal: stop at once, save nothing
            except GodotError:
                path = save_checkpoint()
                log.error(
                    "training stopped at %d steps by a server fault; saved %s. Once the server is back, "
                    "continue with resume=%s",
                    model.num_timesteps,
                    path,
                    path,
                )
                raise
            finally:
                stop.updating = False  # a signal from here on stops at the next safe point
        if stop.signum is not None:
            stop_on_signal.roll_back(model)
            path = save_checkpoint()
            log.warning(
                "interrupted by %s at %d steps; saved %s. Continue with resume=%s",
                signal.Signals(stop.signum).name,
                model.num_timesteps,
                path,
                path,
            )
            stack.close()  # stop the servers before exiting
            raise SystemExit(128 + stop.signum)
        if not eval_callback.stopped:  # the policy after the last update, as final_model.zip holds it
            checkpoint_callback.save_if_due()
            evaluator(model, model.logger)
            model.logger.dump(model.num_timesteps)
        save_snapshot(model, train_env, output_dir / "final_model.zip", snapshot_state())
        held_out = {}
        if training.held_out_episodes and not eval_callback.stopped:
            held_out = _held_out(model, eval_env, best_dir / "best_model.zip", record, training)
        env_used = train_venv.settings()
        faults = {
            "train": train_venv.faults,
            "eval": eval_venv.faults,
            "restarts": envs.train_pool.restarts + envs.eval_pool.restarts,
            "lost_agent_steps": train_venv.lost_agent_steps,
        }
        servers = {"train": envs.train_pool.record(), "eval": envs.eval_pool.record()}
        placement = model.placement if isinstance(model, OverlappedPPO) else None

    objective = float(record.last[training.objective])
    write_json(
        output_dir / "metrics.json",
        {
            "name": run_name(config.name, config.preset),
            "tags": list(config.tags),
            "objective": {"name": training.objective, "value": objective},
            "final": record.last,
            "best": record.best,
            "held_out": held_out,
            "num_timesteps": model.num_timesteps,
            "requested_timesteps": training.total_timesteps,
            "resumed_from": str(resume) if resume else None,
            "budget_notes": budget.notes,
            "env_used": env_used,
            "curriculum": curriculum.to_dict() | {"name": curriculum.stage_name},
            "server_faults": faults,
            "servers": servers,
            "rollout": "overlapped" if isinstance(model, OverlappedPPO) else "serial",  # what collected
            "rollout_cores": sorted(placement.split.trainer) if placement else [],
            "rollout_placement": placement.summary() if placement else None,
            "rollout_groups": rollout_groups(train_venv, model.groups)
            if isinstance(model, OverlappedPPO)
            else [],
        },
    )
    log.info("training done: %s = %.4f after %d steps", training.objective, objective, model.num_timesteps)
    log.info("%s", _summary(output_dir, record, held_out, destinations(logger)))
    return objective


def _cores(cores: frozenset[int]) -> str:
    return ",".join(map(str, sorted(cores)))


def _summary(
    output_dir: Path, record: EvalRecord, held_out: dict[str, Any], logged_to: dict[str, str]
) -> str:
    """Where the run went and what to do next, for the end of the log."""

    def score(metrics: dict[str, float]) -> str:
        rate = metrics.get("eval/success_rate", math.nan)
        low, high = metrics.get("eval/success_low", math.nan), metrics.get("eval/success_high", math.nan)
        return f"success {rate:.2f} [{low:.2f}, {high:.2f}]"

    best = record.best
    lines = [
        f"run directory  {output_dir}",
        f"final model    {output_dir / 'final_model.zip'}  ({score(record.last)}, "
        f"mean return {record.last.get('eval/mean_reward', math.nan):.1f})",
    ]
    if best:
        lines.append(
            f"best model     {output_dir / 'best_models' / 'best_model.zip'}  ({score(best)} at "
            f"{int(best.get('time/total_timesteps', 0))} steps)"
        )
    if held_out.get("best"):
        lines.append(
            f"held out       {held_out['episodes']} episodes never trained or selected on: best "
            f"{score(held_out['best'])}, final {score(held_out['final'])}"
        )
    lines += [
        f"metrics        {output_dir / 'metrics.json'}",
        *(f"{kind:<15}{where}" for kind, where in logged_to.items()),
        f"next           python evaluate.py model={output_dir}",
        f"               python -m spacetime_rl.export {output_dir} {output_dir / 'policy.onnx'}",
        f"               tensorboard --logdir {output_dir / 'tensorboard'}",
    ]
    return "\n".join(["the run:", *lines])


@dataclass
class _Envs:
    """The training and evaluation servers of a run, and the VecEnvs over them."""

    train_pool: ServerPool
    eval_pool: ServerPool
    train: SpaceTimeVecEnv
    eval: SpaceTimeVecEnv


def _start_envs(stack: contextlib.ExitStack, config: TrainConfig, split: CoreSplit | None) -> _Envs:
    """Start (or attach to) the servers and open a VecEnv over each pool; `stack` closes them all.

    Evaluation has a server of its own with min(eval_episodes, agents_per_environment) agents,
    seeded apart from training's (spacetime_rl.seeds).
    """
    env_config, training = config.env, config.training

    placed = {"cores": split.servers} if split else {}
    train_pool = server_pool(env_config, seed=training.seed, verbose=config.verbose, role="train", **placed)
    eval_pool = server_pool(
        env_config,
        count=1,
        agents=min(training.eval_episodes, env_config.agents),
        seed=in_training_eval_seed(training.seed),
        verbose=config.verbose,
        role="eval",
    )

    train_urls = stack.enter_context(train_pool)
    eval_urls = stack.enter_context(eval_pool)
    train_venv = SpaceTimeVecEnv(
        [connector(train_pool)(url) for url in train_urls],
        env_config,
        config.reward,
        seed=training.seed,
        recover=train_pool.recovery(connector(train_pool)),
        tasks=config.task,
    )
    stack.callback(train_venv.close)
    eval_venv = SpaceTimeVecEnv(
        [connector(eval_pool)(url) for url in eval_urls],
        env_config,
        config.reward,
        recover=eval_pool.recovery(connector(eval_pool)),
        tasks=config.task,
    )
    stack.callback(eval_venv.close)
    if train_venv.num_envs != env_config.num_agents:
        raise ConfigError(
            f"env.agents_per_environment={env_config.agents_per_environment} but the servers have "
            f"{train_venv.num_envs} agents in all; set it to what the server runs"
        )
    return _Envs(train_pool, eval_pool, train_venv, eval_venv)


def _normalized(envs: _Envs, config: TrainConfig, resume: Path | None) -> tuple[VecNormalize, VecNormalize]:
    """VecNormalize over the training env (a resumed run's saved statistics) and the frozen eval env."""
    env_config = config.env
    if resume:
        train_env = VecNormalize.load(str(stats_path(resume)), envs.train)
        train_env.training = True
        train_env.gamma = config.ppo.gamma  # discounts the returns reward normalisation scales by
    else:
        train_env = VecNormalize(
            envs.train,
            training=True,
            norm_obs=env_config.normalize_observations,
            norm_reward=env_config.normalize_reward,
            clip_obs=env_config.clip_observations,
            gamma=config.ppo.gamma,
        )
    eval_env = VecNormalize(
        envs.eval,
        training=False,
        norm_obs=env_config.normalize_observations,
        norm_reward=False,
        clip_obs=env_config.clip_observations,
    )
    return train_env, eval_env


class _SignalFlag:
    """The first SIGINT/SIGTERM received, if any, and whether PPO is updating (not stepping) now."""

    signum: int | None = None
    updating: bool = False
    interrupted_update: bool = False


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_SignalFlag]:
    """Turn the first SIGINT or SIGTERM into a flag (training stops at the next step, or at once
    during a PPO update, which train() then undoes); a second one raises KeyboardInterrupt at once.
    Only the main thread can take signals: elsewhere, nothing changes.
    """
    flag = _SignalFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if flag.signum is not None:
            raise KeyboardInterrupt
        flag.signum = signum
        log.warning(
            "%s received: stopping after this step (again to stop at once)", signal.Signals(signum).name
        )
        if flag.updating:  # an update takes up to minutes: cut it, train() rolls it back
            flag.interrupted_update = True
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _StopOnSignal(BaseCallback):
    """Stop at the next step once a signal came; keep what the current rollout started from.

    A rollout cut short is never trained on, and an update cut short is half done, so the last
    complete state is the one at the rollout's start: its step count, policy and optimiser. The
    interrupt checkpoint is saved from it (`roll_back`), and resuming it ends exactly at
    training.total_timesteps, not a rollout later.
    """

    def __init__(self, flag: _SignalFlag) -> None:
        super().__init__()
        self.flag = flag
        self.rollout_start: int | None = None
        self._weights: dict[str, Any] = {}

    def _on_rollout_start(self) -> None:
        self.flag.updating = False
        self.rollout_start = self.num_timesteps
        policy = self.model.policy
        self._weights = copy.deepcopy(
            {"policy": policy.state_dict(), "optimizer": policy.optimizer.state_dict()}
        )

    def _on_rollout_end(self) -> None:
        self.flag.updating = True  # PPO's update follows

    def _on_step(self) -> bool:
        return self.flag.signum is None

    def roll_back(self, model: BaseAlgorithm) -> None:
        """Put `model` back at the current rollout's start (nothing to undo before the first)."""
        self.flag.updating = False
        if self.rollout_start is None:
            return
        model.num_timesteps = self.rollout_start
        model.policy.load_state_dict(self._weights["policy"])
        model.policy.optimizer.load_state_dict(self._weights["optimizer"])


def _algorithm(config: TrainConfig) -> type[Model]:
    """The algorithm class that trains `config`'s network with its rollout mode."""
    if config.rollout_mode == "overlapped":
        return OverlappedPPO
    return algorithm(config.network.policy)


def _new_model(env: VecNormalize, config: TrainConfig, verbose: int) -> Model:
    ppo, network = config.ppo, config.network
    return _algorithm(config)(
        network.policy,
        env,
        learning_rate=ppo.learning_rate,
        n_steps=ppo.n_steps,
        batch_size=ppo.batch_size,
        n_epochs=ppo.n_epochs,
        gamma=ppo.gamma,
        gae_lambda=ppo.gae_lambda,
        clip_range=ppo.clip_range,
        ent_coef=ppo.ent_coef,
        vf_coef=ppo.vf_coef,
        max_grad_norm=ppo.max_grad_norm,
        target_kl=ppo.target_kl,
        policy_kwargs=_policy_kwargs(network),
        device=ppo.device,
        seed=config.training.seed,
        verbose=verbose,
    )


def _load_model(path: Path, env: VecNormalize, config: TrainConfig) -> Model:
    """The checkpoint's model, stepping `env` from its saved step count, with this run's PPO settings.

    A `ppo.*` value that differs from the checkpoint's applies (SB3's load rebuilds the schedules
    and the rollout buffer from them) and is logged; a different network is refused, since the
    weights are the checkpoint's.
    """
    saved, _, _ = load_from_zip_file(str(path), device="cpu")
    saved = saved or {}
    network, kwargs = config.network, saved.get("policy_kwargs", {})
    recurrent = issubclass(saved.get("policy_class", object), RecurrentActorCriticPolicy)
    for key, wanted, had in (
        ("network.policy", network.policy, "MlpLstmPolicy" if recurrent else "MlpPolicy"),
        *((f"network.{key}", value, kwargs.get(key)) for key, value in _policy_kwargs(network).items()),
    ):
        if wanted != had:
            raise ConfigError(
                f"{key}={_shown(wanted)} but resume={str(path)!r} was trained with {_shown(had)}: a resumed "
                f"run keeps the checkpoint's network; pass {key}={_shown(had)}, or train a new run"
            )
    changed = {}
    for name in RESUMABLE_PPO:
        wanted, had = getattr(config.ppo, name), saved.get(name)
        had = had(1.0) if callable(had) else had  # clip_range is saved as a schedule
        if wanted != had:
            changed[name] = wanted
            log.info("resume: ppo.%s=%s applies (the checkpoint trained with %s)", name, wanted, had)
    model = _algorithm(config).load(str(path), env=env, device=config.ppo.device, **changed)
    model.set_random_seed(config.training.seed)
    return model


def _policy_kwargs(network: NetworkConfig) -> dict[str, Any]:
    """SB3's `policy_kwargs` for `network`."""
    kwargs: dict[str, Any] = {
        "net_arch": list(network.net_arch),
        "activation_fn": ACTIVATIONS[network.activation_fn],
    }
    if network.recurrent:
        kwargs |= {"lstm_hidden_size": network.lstm_hidden_size, "n_lstm_layers": network.n_lstm_layers}
    return kwargs


def _shown(value: Any) -> str:
    """A config value as the user types it (`nn.Tanh` -> tanh)."""
    if isinstance(value, type):
        return next((name for name, module in ACTIVATIONS.items() if module is value), value.__name__)
    return str(value).replace(" ", "")


def _held_out(
    model: Model, eval_env: VecNormalize, best_path: Path, record: EvalRecord, training: TrainingConfig
) -> dict[str, Any]:
    """The final and the best model on `training.held_out_episodes` episodes neither trained nor
    picked the best on; the best's in-training score beside it shows how optimistic that pick was."""
    seed, episodes = held_out_seed(training.seed), training.held_out_episodes
    train_env = model.get_env()
    assert train_env is not None
    sync_envs_normalization(train_env, eval_env)
    result: dict[str, Any] = {
        "seed": seed,
        "episodes": episodes,
        "final": evaluate(model, eval_env, episodes, seed),
    }
    if record.best is record.last:
        result["best"] = result["final"]  # the final evaluation kept the final model as the best
    elif best_path.is_file():
        result["best"] = evaluate(*load_frozen(best_path, eval_env.venv), episodes, seed)
    if "best" in result:
        log.info(
            "best model: %s = %.3f on the in-training evaluation (%d episodes), %.3f [%.3f, %.3f] on %d "
            "held-out episodes (seed %d)",
            "eval/success_rate",
            record.best["eval/success_rate"],
            training.eval_episodes,
            result["best"]["eval/success_rate"],
            result["best"]["eval/success_low"],
            result["best"]["eval/success_high"],
            episodes,
            seed,
        )
    return result


def _next_run_dir(tensorboard_dir: Path, label: str) -> Path:
    """`<label>_<n>`: TensorBoard lists a run by its folder, so the run's name and tags show there."""
    return tensorboard_dir / f"{label}_{get_latest_run_id(str(tensorboard_dir), label) + 1}"
