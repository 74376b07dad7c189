"""The run's SB3 logger: TensorBoard always, plus the `logger=` option's output (csv, wandb, mlflow).

wandb and mlflow are SB3 `KVWriter`s over the libraries' own logging calls, so every value the
callbacks record (rollout/*, eval/*, reward/*, ...) reaches them at the step TensorBoard shows it.
Their packages are extras (`pip install -e '.[wandb]'`), imported only when chosen.
"""

from __future__ import annotations

import numbers
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stable_baselines3.common.logger import (
    CSVOutputFormat,
    HumanOutputFormat,
    KVWriter,
    Logger,
    TensorBoardOutputFormat,
)

from spacetime_rl.config import LoggerConfig
from spacetime_rl.errors import ConfigError

__all__ = ["CSV_NAME", "MLFLOW_DB", "destinations", "run_logger"]

CSV_NAME = "progress.csv"
#: mlflow's store in the run directory when neither logger.tracking_uri nor $MLFLOW_TRACKING_URI says where.
MLFLOW_DB = "mlflow.db"

Hyperparameters = Mapping[str, bool | int | float | str]


def run_logger(
    config: LoggerConfig,
    *,
    output_dir: Path,
    tensorboard_run: Path,
    label: str,
    tags: list[str],
    hparams: Hyperparameters,
    stdout: bool,
) -> Logger:
    """A logger writing `tensorboard_run` and the `config.kind` output; close it to end wandb/mlflow runs."""
    formats: list[KVWriter] = [HumanOutputFormat(sys.stdout)] if stdout else []
    formats.append(TensorBoardOutputFormat(str(tensorboard_run)))
    if config.kind == "csv":
        formats.append(CSVOutputFormat(str(output_dir / CSV_NAME)))
    elif config.kind == "wandb":
        formats.append(_WandbWriter(config, output_dir, label, tags, hparams))
    elif config.kind == "mlflow":
        formats.append(_MLflowWriter(config, output_dir, label, tags, hparams))
    return Logger(str(tensorboard_run), formats)


def destinations(logger: Logger) -> dict[str, str]:
    """Where each output beyond TensorBoard went (`{"mlflow": "sqlite:///... run <id>"}`), for the summary."""
    found = {}
    for output in logger.output_formats:
        if isinstance(output, CSVOutputFormat):
            found["csv"] = output.file.name
        elif isinstance(output, _WandbWriter | _MLflowWriter):
            found[output.name] = output.where
    return found


def _scalars(values: dict[str, Any], excluded: dict[str, tuple[str, ...]], name: str) -> dict[str, float]:
    """The numbers among `values` that are not excluded from the output `name` (HParam, text: skipped)."""
    return {
        key: float(value)
        for key, value in values.items()
        if name not in (excluded.get(key) or ()) and isinstance(value, numbers.Real)
    }


class _WandbWriter(KVWriter):
    """A Weights & Biases run (files in <run dir>/wandb/): the config as its config, metrics by step."""

    name = "wandb"

    def __init__(
        self, config: LoggerConfig, output_dir: Path, label: str, tags: list[str], hparams: Hyperparameters
    ) -> None:
        import wandb

        try:
            self.run = wandb.init(
                project=config.project, name=label, tags=tags, config=dict(hparams), dir=str(output_dir)
            )
        except wandb.errors.Error as err:
            raise ConfigError(
                f"logger=wandb could not start a run ({err}): log in with `wandb login`, or set "
                "WANDB_MODE=offline to keep the run on disk (`wandb sync` uploads it later)"
            ) from err
        self.where = (
            f"{self.run.url or Path(self.run.dir).parent} (project {config.project}, run {self.run.id})"
        )

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0
    ) -> None:
        if metrics := _scalars(key_values, key_excluded, "wandb"):
            self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflowWriter(KVWriter):
    """An MLflow run in the experiment `logger.project`: the config as params, the tags, metrics by step."""

    name = "mlflow"

    def __init__(
        self, config: LoggerConfig, output_dir: Path, label: str, tags: list[str], hparams: Hyperparameters
    ) -> None:
        import mlflow

        uri = (
            config.tracking_uri
            or os.environ.get("MLFLOW_TRACKING_URI")
            or f"sqlite:///{(output_dir / MLFLOW_DB).resolve()}"
        )
        self.client = mlflow.MlflowClient(tracking_uri=uri)
        experiment = self.client.get_experiment_by_name(config.project)
        experiment_id = (
            experiment.experiment_id if experiment else self.client.create_experiment(config.project)
        )
        run = self.client.create_run(
            experiment_id, run_name=label, tags={"run_dir": str(output_dir)} | {tag: "true" for tag in tags}
        )  # a tag is searchable as tags.<tag> = 'true'
        self.run_id = run.info.run_id
        self.where = f"{uri} (experiment {config.project}, run {self.run_id})"
        params = [mlflow.entities.Param(key, str(value)) for key, value in hparams.items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def write(
        self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0
    ) -> None:
        import mlflow

        metrics = _scalars(key_values, key_excluded, "mlflow")
        timestamp = mlflow.utils.time.get_current_time_millis()
        entries = [mlflow.entities.Metric(key, value, timestamp, step) for key, value in metrics.items()]
        for start in range(0, len(entries), 1000):  # at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=entries[start : start + 1000])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)
