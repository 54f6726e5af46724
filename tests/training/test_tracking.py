"""`--report-to`: Accelerate's TensorBoard tracker records the config and every epoch's
row (read back from the event file); a tracker whose package is missing is refused."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.support import REPO
from tests.support.cli import assert_one_line_error

pytestmark = pytest.mark.slow


def test_tensorboard_gets_every_epoch(make_backbone, train_digits):
    result = train_digits(make_backbone("vit", 16), report_to="tensorboard", epochs=2)

    runs = list(
        (result.run_dir / "tensorboard").glob(f"{result.metadata.training_config['name']}*")
    )
    assert len(runs) == 1
    events = EventAccumulator(str(runs[0]))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for name in ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr"):
        assert name in scalars
    logged = events.Scalars("val_accuracy")
    assert [event.step for event in logged] == [1, 2]
    expected = [row["val_accuracy"] for row in result.history]
    assert [event.value for event in logged] == pytest.approx(expected)
    (hparams_file,) = runs[0].rglob("hparams.yml")  # Accelerate's copy of the hyperparameters
    hparams = hparams_file.read_text()
    assert "strategy: full" in hparams and "report_to: tensorboard" in hparams


def test_tracking_is_off_by_default(make_backbone, train_digits):
    result = train_digits(make_backbone("vit", 16), epochs=1)
    assert not (result.run_dir / "tensorboard").exists()


@pytest.mark.parametrize("tracker", ["mlflow", "wandb"])
def test_missing_tracker_package_is_one_line_exit_2(tracker):
    if importlib.util.find_spec(tracker) is not None:
        pytest.skip(f"{tracker} is installed here")
    result = subprocess.run(
        [sys.executable, "-m", "visiontune", "train", "--data", "digits", "--backbone", "b"]
        + ["--report-to", tracker],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ),
    )
    assert_one_line_error(
        result, f"--report-to {tracker}", "not installed", f"pip install {tracker}"
    )
