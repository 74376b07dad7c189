"""train.py with a fake `train()`: the sweep machinery (config group, sweeper, study, trial jobs,
pruning, report) end to end at a second per trial instead of a real training run.

The fake objective peaks at ppo.learning_rate = 3e-4. Its evaluations are that value at steps
1..4 (scaled by `FAKE_SCALE` per trial number, so tests can make a trial look bad), and the trial
whose number is in `FAKE_CRASH` raises, like a diverged run. A trial that is not stopped writes its
final evaluation into metrics.json, with `eval/collisions` growing with the learning rate (a second
objective at odds with the first). With `FAKE_HANG` set, a trial writes
`hanging` into its folder and never ends, a worker to kill mid-trial.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

from spacetime_rl.app import job_config, run_reporting_errors
from spacetime_rl.config import TrainConfig, register_configs
from spacetime_rl.sweeps import run_trial

ROOT = Path(__file__).resolve().parents[2]
EVALUATIONS = 4
COLLISIONS_PER_RATE = 1e4  # eval/collisions grows with the learning rate: a trade-off with the objective

register_configs()


def fake_train(config: TrainConfig, output_dir: Path, on_eval=None) -> float:  # type: ignore[no-untyped-def]
    trial = config.sweep.trial
    if str(trial) in os.environ.get("FAKE_CRASH", "").split(","):
        raise RuntimeError(f"trial {trial} diverged")
    if os.environ.get("FAKE_HANG"):
        output_dir.mkdir(parents=True)
        (output_dir / "hanging").touch()
        time.sleep(3600)
    scale = json.loads(os.environ.get("FAKE_SCALE", "{}")).get(str(trial), 1.0)
    value = scale * (1 - abs(math.log10(config.ppo.learning_rate / 3e-4)) / 3)
    output_dir.mkdir(parents=True, exist_ok=True)  # a plain multirun's job folder is Hydra's
    (output_dir / "pid").write_text(str(os.getpid()))  # which process ran the trial (a launcher's worker?)
    for step in range(1, EVALUATIONS + 1):
        (output_dir / f"eval_{step}").touch()
        if on_eval is not None and not on_eval(step, {config.training.objective: value}):
            break
    else:  # the final evaluation, as train() records it
        final = {
            config.training.objective: value,
            "eval/collisions": COLLISIONS_PER_RATE * config.ppo.learning_rate,
        }
        (output_dir / "metrics.json").write_text(json.dumps({"final": final}))
    return value


@hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="train")
def main(cfg: DictConfig) -> float | list[float]:
    def job() -> float | list[float]:
        config, output_dir = job_config(cfg)
        if not config.sweep.per_trial:
            return fake_train(config, output_dir)
        return run_trial(config, output_dir, fake_train)

    return run_reporting_errors(job)


if __name__ == "__main__":
    main()
