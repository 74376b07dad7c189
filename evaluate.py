"""Evaluate a trained agent, or a reference policy, on the embedded simulator (or Godot).

python evaluate.py model=outputs/2024-01-01/12-00-00 episodes=20   # a run directory: its best model
python evaluate.py model=path/to/final_model.zip seed=3
python evaluate.py policy=heuristic                                # reference policies need no model
python evaluate.py --cfg job                                       # show the composed config
"""

import sys

import hydra
from omegaconf import DictConfig

from spacetime_rl.app import prepare_command_line, run_reporting_errors
from spacetime_rl.evaluation.config import EvaluateConfig, register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> float:
    def job() -> float:
        from spacetime_rl.evaluation.job import run  # torch loads only once the command is known good

        return run(cfg)

    return run_reporting_errors(job)


if __name__ == "__main__":
    sys.argv = prepare_command_line(sys.argv, EvaluateConfig)
    main()
