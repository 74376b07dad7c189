"""The evaluation job behind evaluate.py: play a policy, report metrics, draw the first episodes.

Output directory layout (Hydra's run directory, `outputs/eval/<date>/<time>/` by default):

    eval/metrics.json   the metrics, the settings they were measured with, and every episode
    eval/paths.png      top-down view of the first `plot_episodes` episodes
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Final

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from stable_baselines3.common.vec_env import VecEnv

from spacetime_rl.artifacts import ModelSource, resolve_model, run_env_config, write_json
from spacetime_rl.envs import SpaceTimeVecEnv, make_clients, with_server_agents
from spacetime_rl.errors import ConfigError
from spacetime_rl.evaluation.config import EvaluateConfig, to_evaluate_config
from spacetime_rl.evaluation.plots import plot_episodes
from spacetime_rl.evaluation.policies import heuristic_policy, random_policy
from spacetime_rl.evaluation.settings import apply_run_config
from spacetime_rl.evaluation.trajectories import RecordingTransport, attach_paths
from spacetime_rl.godot.launcher import server_pool
from spacetime_rl.metrics import (
    METRICS,
    Act,
    model_policy,
    play_episodes,
    seconds_per_step,
    summarize,
)
from spacetime_rl.seeds import held_out_seed, in_training_eval_seed, seen_in_training
from spacetime_rl.snapshots import load_frozen

__all__ = ["evaluate", "job_config", "run"]

log = logging.getLogger(__name__)

METRICS_FILE: Final = Path("eval") / "metrics.json"
PLOT_FILE: Final = Path("eval") / "paths.png"


def run(cfg: DictConfig) -> float:
    """evaluate.py's job: returns the success rate (a sweeper can optimise it)."""
    config, output_dir, source = job_config(cfg)
    return evaluate(config, output_dir, source)["eval/success_rate"]


def job_config(cfg: DictConfig) -> tuple[EvaluateConfig, Path, ModelSource | None]:
    """The checked config of this Hydra job (with the model's run settings), its output directory
    and the model."""
    hydra_cfg = HydraConfig.get()
    source = resolve_model(cfg.model) if cfg.get("model") else None
    run_config = source.run_config if source else None
    if run_config is not None:
        config_dir = next(
            (
                Path(s.path)
                for s in hydra_cfg.runtime.config_sources
                if s.provider == "main" and s.schema == "file"
            ),
            None,
        )
        used = apply_run_config(cfg, run_config, hydra_cfg.overrides.task, config_dir)
        log.info(
            "evaluating with the settings %s trained with: task %s, %s",
            source.run_dir if source else None,
            cfg.task.name,
            "; ".join(used) or "no curriculum",
        )
    elif source is not None:
        log.warning(
            "%s has no run directory (.hydra/config.yaml) above it: evaluating with the env settings of "
            "conf/evaluate.yaml, which must match training's (env.heading_frame, env.action_smoothing)",
            source.model,
        )
    _choose_seed(cfg, run_config)
    return to_evaluate_config(cfg), Path(hydra_cfg.runtime.output_dir), source


def _choose_seed(cfg: DictConfig, run_config: DictConfig | None) -> None:
    """Default to the run's held-out episodes; say when the chosen seed replays episodes of the run."""
    if run_config is None:  # a model without its run, or a reference policy
        if cfg.seed is None:
            cfg.seed = held_out_seed(0)
            log.info("seed=%d: the held-out episodes of a run with training.seed=0", cfg.seed)
        return
    training_seed = int(OmegaConf.select(run_config, "training.seed", default=0))
    servers = run_env_config(run_config).servers
    if cfg.seed is None:
        cfg.seed = held_out_seed(training_seed)
        log.info(
            "seed=%d: held-out episodes (training used seeds %d..%d, its model selection %d)",
            cfg.seed,
            training_seed,
            training_seed + servers - 1,
            in_training_eval_seed(training_seed),
        )
    elif seen := seen_in_training(cfg.seed, training_seed, servers):
        log.warning(
            "seed=%d replays the episodes of %s: these results are not held out; drop seed= to "
            "evaluate on the run's held-out seed %d",
            cfg.seed,
            seen,
            held_out_seed(training_seed),
        )


def evaluate(config: EvaluateConfig, output_dir: Path, source: ModelSource | None = None) -> dict[str, float]:
    """Play `config.policy` for `config.episodes` episodes on fresh servers; write and print the results.

    One server with min(episodes, env.agents_per_environment) agents (env=sim), seeded with
    `config.seed` (None: held out from a run with training.seed=0), as training's evaluation does.
    Attached (env=godot env.url=...), the first server of env.url's list plays them all.
    """
    if config.policy == "trained" and source is None:
        raise ConfigError("policy=trained needs model=<run directory or model zip>")
    env_config = with_server_agents(config.env)
    seed = held_out_seed(0) if config.seed is None else config.seed
    agents = min(config.episodes, env_config.agents)
    with contextlib.ExitStack() as stack:
        pool = server_pool(env_config, count=1, agents=agents, seed=seed, verbose=config.verbose)
        urls = stack.enter_context(pool)
        layout_rounds = math.ceil(config.plot_episodes / agents)
        clients = make_clients(urls, pool.config)  # with the token a Ray pool generated
        recorders = [RecordingTransport(client, layout_rounds) for client in clients]
        venv = SpaceTimeVecEnv(recorders, env_config, config.reward, seed=seed, tasks=config.task)
        stack.callback(venv.close)
        env, act = _policy(config, venv, source, seed)
        results = attach_paths(play_episodes(env, act, config.episodes, seed), recorders)

    step_seconds = seconds_per_step(env_config.action_repeat)
    metrics = summarize(results, step_seconds)
    write_json(
        output_dir / METRICS_FILE,
        {
            "policy": config.policy,
            "model": str(source.model) if source else None,
            "run_dir": str(source.run_dir) if source and source.run_dir else None,
            "episodes": len(results),
            "seed": seed,
            "deterministic": config.deterministic,
            "metrics": {key: _json_number(value) for key, value in metrics.items()},
            "env": asdict(env_config),
            "reward": asdict(config.reward),
            "task": asdict(config.task),
            "per_episode": [r.to_dict(step_seconds) for r in results],
        },
    )
    if config.plot_episodes:
        title = f"{config.policy} policy" + (f": {source.model}" if source else "")
        plot_episodes(results[: config.plot_episodes], output_dir / PLOT_FILE, title)
    print_metrics(metrics, f"{config.policy} policy, {len(results)} episodes, seed {seed}")
    log.info("evaluation written to %s", output_dir / METRICS_FILE.parent)
    return metrics


def print_metrics(metrics: dict[str, float], title: str) -> None:
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("meaning", style="dim")
    for key, meaning in METRICS.items():
        value = metrics[key]
        table.add_row(key, "-" if math.isnan(value) else f"{value:.3f}", meaning)
    Console().print(table)


def _policy(
    config: EvaluateConfig, venv: SpaceTimeVecEnv, source: ModelSource | None, seed: int
) -> tuple[VecEnv, Act]:
    """The env the policy sees and the policy: the trained one sees the run's normalised observations."""
    if config.policy == "random":
        return venv, random_policy(seed)
    if config.policy == "heuristic":
        return venv, heuristic_policy()
    assert source is not None
    # A forward pass over a few dozen rows is fastest on one thread; more threads only spin
    # against the simulator for the same cores.
    torch.set_num_threads(1)
    model, env = load_frozen(source.model, venv)
    if model.observation_space.shape != venv.observation_space.shape:
        raise ConfigError(
            f"model={str(source.model)!r} expects observations of shape {model.observation_space.shape}, "
            f"but protocol v1 has {venv.observation_space.shape}: it was not trained by spacetime_rl"
        )
    return env, model_policy(model, config.deterministic)


def _json_number(value: float) -> float | None:
    return None if math.isnan(value) else value
