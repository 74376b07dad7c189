"""Train a VR navigation agent over the Godot HTTP API (or the embedded simulator).

python train.py                              # quick_test on the embedded simulator
python train.py preset=full_training
python train.py -m ppo.learning_rate=1e-4,3e-4
python train.py -m sweep=ppo                 # an Optuna search from sweeps/ppo.yaml; rerun to resume
python train.py --cfg job                    # show the composed config
"""

import sys

import hydra
from omegaconf import DictConfig

from spacetime_rl.app import job_config, prepare_command_line, run_reporting_errors
from spacetime_rl.config import TrainConfig, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | list[float]:
    def job() -> float | list[float]:
        config, output_dir = job_config(cfg)
        from spacetime_rl.training import train  # torch loads only once the config is known good

        if not config.sweep.per_trial:
            return train(config, output_dir)
        from spacetime_rl.sweeps import run_trial

        return run_trial(config, output_dir, train)  # a sweep trial's seeds (docs/sweeps.md)

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.argv = prepare_command_line(sys.argv, TrainConfig, config_file=True)
    main()
