"""Experiment tracking through Accelerate's trackers (``--report-to``).

The run's resolved config is logged once as hyperparameters, each epoch's row
(losses, validation metrics, learning rate, seconds) as a step, and the tracker is
closed when training ends. TensorBoard writes under the run folder
(``runs/NAME/tensorboard/NAME``); MLflow and Weights & Biases go where their own
environment variables point (``MLFLOW_TRACKING_URI``, ``WANDB_MODE``...).
"""

from __future__ import annotations

from accelerate import Accelerator
from accelerate.tracking import get_available_trackers
from accelerate.utils import LoggerType

from training.config import TrainConfig

INSTALL = {
    "tensorboard": "pip install 'visiontune[tracking]'",
    "mlflow": "pip install mlflow",
    "wandb": "pip install wandb",
}


class TrackingError(ValueError):
    """A tracker that cannot run here; the message is one line with the fix."""


def tracker(config: TrainConfig) -> str | None:
    """What ``Accelerator(log_with=...)`` gets; refuses a tracker whose package is missing
    (Accelerate would drop it silently)."""
    if config.report_to == "none":
        return None
    if LoggerType(config.report_to) not in get_available_trackers():
        raise TrackingError(
            f"--report-to {config.report_to}: the {config.report_to} package is not installed; "
            f"{INSTALL[config.report_to]}"
        )
    return config.report_to


def tracking_dir(config: TrainConfig) -> str:
    return str(config.run_dir / "tensorboard")


def start(accelerator: Accelerator, config: TrainConfig) -> None:
    """Open the run (named after the model) and record its config as hyperparameters."""
    if config.report_to != "none":
        accelerator.init_trackers(config.name, config=hyperparameters(config))


def log_epoch(accelerator: Accelerator, row: dict) -> None:
    """One epoch's row as one step (the epoch number)."""
    values = {key: value for key, value in row.items() if key != "epoch"}
    accelerator.log(values, step=row["epoch"])


def hyperparameters(config: TrainConfig) -> dict[str, int | float | str | bool]:
    """The config as scalars, as every tracker takes them (lists joined, unset left out)."""
    values = config.recorded({"resume"}, mode="json")
    return {
        key: ",".join(map(str, value)) if isinstance(value, list) else value
        for key, value in values.items()
        if value is not None
    }
