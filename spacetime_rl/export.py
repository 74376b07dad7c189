"""Export a trained policy to ONNX for Godot's `RLPolicy`, with the JSON sidecar it reads.

python -m spacetime_rl.export outputs/2024-01-01/12-00-00 policy.onnx        # a run's best model
python -m spacetime_rl.export outputs/.../final_model.zip policy.onnx

The graph takes the *preprocessed* observation (`envs/preprocessing.py`: camera x/z zeroed,
controllers relative to the camera, the heading frame) and does the rest of what training's env
stack does: VecNormalize's `clip((obs - mean) / sqrt(var + eps), -clip, clip)`, the policy's
deterministic action (the Gaussian's mean) and SB3's clip to [-1, 1]. Preprocessing stays out of the
graph because `RLPolicy` already applies it, driven by the sidecar's `heading_frame` (see
godot/README.md); the sidecar therefore carries no `observation_normalization`.

Tensors use godot_rl_agents' names: inputs `obs` [B, 48 + T] float32 and `state_ins` [B], outputs
`output` [B, 3] and `state_outs`. T is 0 for a single-task run; a multi-task run's `obs` ends with
the one-hot task block of training, in the order of the sidecar's `tasks`. An MLP policy has no
memory: `state_outs` is `state_ins`, passed through. An LSTM policy (network=lstm) carries its
actor's state in a third input, `lstm_state` [B, S] with S = 2 x layers x hidden (the sidecar's
`state_size`: h of each layer, then c of each layer), and returns the next one as `state_outs`
[B, S]; the caller feeds it back as the next step's `lstm_state`, and zeros at an episode's start
(sb3-contrib resets the state there too). The state does not travel in `state_ins` because
godot_rl_agents' ONNX wrapper always fills that one from an int, shaped [B]; it feeds every other
key of its input Dictionary as the input of that name, shaped [B, n].
"""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import warnings
from pathlib import Path
from typing import Final

import numpy as np
import torch
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from spacetime_rl.artifacts import (
    ModelSource,
    check_same_save,
    config_hash,
    resolve_model,
    run_env_config,
    run_task_config,
    write_json,
)
from spacetime_rl.errors import ConfigError, SpaceTimeError
from spacetime_rl.protocol import wire
from spacetime_rl.snapshots import load_model

__all__ = ["ACTION_FIELDS", "OnnxPolicy", "OnnxRecurrentPolicy", "export_onnx", "sidecar_path"]

log = logging.getLogger(__name__)

OPSET: Final = 17
#: The action vector's components, in order (protocol v1).
ACTION_FIELDS: Final = (
    {"name": "h", "meaning": "strafe right"},
    {"name": "v", "meaning": "move forward"},
    {"name": "r", "meaning": "turn right"},
)
INPUT_NAMES: Final = ["obs", "state_ins"]
OUTPUT_NAMES: Final = ["output", "state_outs"]
#: The LSTM policy's state input (see the module docstring).
MEMORY_INPUT: Final = "lstm_state"


class OnnxPolicy(nn.Module):
    """Preprocessed observation -> VecNormalize -> deterministic action clipped to [-1, 1]."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, policy: ActorCriticPolicy, normalization: VecNormalize | None, size: int) -> None:
        super().__init__()
        self.policy = policy
        self.normalize = normalization is not None and bool(normalization.norm_obs)
        mean, scale, clip = np.zeros(size), np.ones(size), np.inf
        if normalization is not None and self.normalize:
            statistics = normalization.obs_rms
            if not isinstance(statistics, RunningMeanStd):
                raise ConfigError(
                    "the model's VecNormalize statistics are per key (a dict observation space)"
                )
            mean = statistics.mean
            scale = np.sqrt(statistics.var + normalization.epsilon)
            clip = float(normalization.clip_obs)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.clip = clip

    def normalized(self, obs: torch.Tensor) -> torch.Tensor:
        if self.normalize:
            return torch.clamp((obs - self.mean) / self.scale, -self.clip, self.clip)
        return obs

    def forward(self, obs: torch.Tensor, state_ins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        latent = self.policy.mlp_extractor.forward_actor(
            self.policy.pi_features_extractor(self.normalized(obs))
        )
        return torch.clamp(self.policy.action_net(latent), -1.0, 1.0), state_ins


class OnnxRecurrentPolicy(OnnxPolicy):
    """The same for an LSTM policy: the actor's LSTM state goes in and out as [B, 2 x layers x hidden]."""

    policy: RecurrentActorCriticPolicy

    def __init__(
        self, policy: RecurrentActorCriticPolicy, normalization: VecNormalize | None, size: int
    ) -> None:
        super().__init__(policy, normalization, size)
        self.layers, self.hidden = policy.lstm_actor.num_layers, policy.lstm_actor.hidden_size

    @property
    def state_size(self) -> int:
        return 2 * self.layers * self.hidden

    def forward(  # type: ignore[override]
        self, obs: torch.Tensor, state_ins: torch.Tensor, lstm_state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.policy.pi_features_extractor(self.normalized(obs))
        # [B, 2 * L * H] -> h and c, each [L, B, H] as torch's LSTM takes them
        state = lstm_state.reshape(-1, 2, self.layers, self.hidden).permute(1, 2, 0, 3)
        output, (h, c) = self.policy.lstm_actor(features.unsqueeze(0), (state[0], state[1]))
        latent = self.policy.mlp_extractor.forward_actor(output.squeeze(0))
        state_outs = torch.stack((h, c)).permute(2, 0, 1, 3).reshape(-1, self.state_size)
        # state_ins carries nothing, but the exporter drops an unused input and the wrapper sends it
        state_outs = state_outs + 0.0 * state_ins.unsqueeze(1)
        return torch.clamp(self.policy.action_net(latent), -1.0, 1.0), state_outs


def sidecar_path(onnx_path: Path) -> Path:
    """`<model>.json` next to `<model>.onnx`, where RLPolicy looks for it."""
    return onnx_path.with_suffix(".json")


def export_onnx(source: ModelSource, out: Path) -> Path:
    """Write the ONNX graph of `source` to `out` and its sidecar next to it; return the sidecar path."""
    run_config = source.run_config
    if run_config is None:
        raise ConfigError(
            f"{source.model} is not inside a training run directory (no .hydra/config.yaml above it): "
            "the sidecar needs the run's env.heading_frame, env.action_smoothing and env.action_repeat. "
            "Export from the run directory or a model zip inside it"
        )
    env = run_env_config(run_config)
    tasks = run_task_config(run_config)
    block = list(tasks.names) if tasks.multi else []  # the task one-hot's order, as TaskSchedule builds it
    size = wire.OBSERVATION_SIZE + len(block)
    model = load_model(source.model, device="cpu")
    if not isinstance(model.policy, ActorCriticPolicy) or model.observation_space.shape != (size,):
        raise ConfigError(
            f"{source.model} is not a spacetime_rl MlpPolicy or MlpLstmPolicy with {size} observations "
            f"({wire.OBSERVATION_SIZE} + one per task of its run's task.tasks {block}): "
            f"its observation space is {model.observation_space.shape}"
        )
    with open(source.stats, "rb") as file:
        normalization = pickle.load(file)
    check_same_save(source.model, model, normalization)
    inputs: dict[str, list[int | str]] = {"obs": ["batch", size], "state_ins": ["batch"]}
    dummy = [torch.zeros(1, size), torch.zeros(1)]
    if isinstance(model.policy, RecurrentActorCriticPolicy):
        recurrent = OnnxRecurrentPolicy(model.policy, normalization, size)
        module: OnnxPolicy = recurrent
        state_size = recurrent.state_size
        inputs[MEMORY_INPUT] = ["batch", state_size]
        dummy.append(torch.zeros(1, state_size))
    else:
        module, state_size = OnnxPolicy(model.policy, normalization, size), 0
    module.eval()
    state_outs = ["batch", state_size] if state_size else ["batch"]

    out.parent.mkdir(parents=True, exist_ok=True)
    batch = {0: "batch"}
    with torch.no_grad(), warnings.catch_warnings():
        # The TorchScript exporter is deprecated but needs no onnxscript, and this graph is plain.
        warnings.simplefilter("ignore", DeprecationWarning)
        # About LSTMs whose initial state is not an input; here h and c come in through lstm_state.
        warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size other than 1")
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # torch's LSTM checks its input sizes
        torch.onnx.export(
            module,
            tuple(dummy),
            str(out),
            input_names=list(inputs),
            output_names=OUTPUT_NAMES,
            dynamic_axes=dict.fromkeys([*inputs, *OUTPUT_NAMES], batch),
            opset_version=OPSET,
            dynamo=False,
        )
    sidecar = sidecar_path(out)
    write_json(
        sidecar,
        {
            "protocol": wire.PROTOCOL_VERSION,
            "observation_fields": [{"name": name, "size": size} for name, size in wire.OBSERVATION_FIELDS],
            "action_fields": list(ACTION_FIELDS),
            "action_repeat": env.action_repeat,
            "action_smoothing": env.action_smoothing,
            "heading_frame": env.heading_frame,
            "physics_hz": wire.PHYSICS_HZ,
            "tasks": block,
            "inputs": inputs,
            "outputs": {"output": ["batch", wire.ACTION_SIZE], "state_outs": state_outs},
            "state_size": state_size,  # 0: no memory; else feed state_outs back as lstm_state
            "observation_input": "preprocessed (envs/preprocessing.py), not normalised",
            "normalization_in_graph": module.normalize,
            "action_clip": [-1.0, 1.0],
            "config_hash": config_hash(run_config),
            "model": str(source.model),
            "num_timesteps": int(model.num_timesteps),
        },
    )
    return sidecar


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spacetime_rl.export", description=__doc__.split("\n\n")[0] if __doc__ else None
    )
    parser.add_argument("model", help="a training run directory (its best model) or a model zip inside one")
    parser.add_argument("out", type=Path, help="the .onnx file to write; the sidecar goes next to it (.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.out.suffix != ".onnx":
        log.error(
            "out=%r must end in .onnx: RLPolicy finds the sidecar by swapping .onnx for .json", str(args.out)
        )
        return 1
    try:
        sidecar = export_onnx(resolve_model(args.model, key="model"), args.out)
    except SpaceTimeError as err:
        log.error("%s", err)
        return 1
    log.info("wrote %s and %s", args.out, sidecar)
    return 0


if __name__ == "__main__":
    sys.exit(main())
