"""Augmentation, mixing, label smoothing and EMA in real training runs; resume replays them."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import bentoml
import pytest
import torch

from tests.support.builders import IMAGE_SIZE, unique_name
from tests.support.cli import train_command, train_signalled_after_first_epoch
from tests.support.store import stored_tensors
from training.config import TrainConfig
from training.train import train

pytestmark = pytest.mark.slow

MIXING = {
    "augment": "strong",
    "mixup": 0.4,
    "cutmix": 1.0,
    "label_smoothing": 0.1,
    "ema_decay": 0.9,
}


def config(backbone: Path, run_dir: Path, name: str) -> TrainConfig:
    """Full fine-tuning in many small batches (an epoch lasts long enough to interrupt)."""
    return TrainConfig(
        data="digits", classes=["0", "1", "2", "3"], per_class=40, backbone=str(backbone),
        strategy="full", image_size=IMAGE_SIZE, batch_size=4, epochs=3, lr=3e-3,
        test_fraction=0, seed=2, name=name, output_dir=run_dir, **MIXING,
    )  # fmt: skip


def as_flags(config: TrainConfig) -> list[str]:
    values = config.model_dump(exclude_unset=True, exclude={"data", "classes"})
    flags = ["--data", config.data, "--classes", ",".join(config.classes)]
    for key, value in values.items():
        flags += ["--" + key.replace("_", "-"), str(value)]
    return flags


def test_mixing_and_ema_resume_to_the_unbroken_run(make_backbone, tmp_path):
    backbone = make_backbone("resnet", IMAGE_SIZE)
    name = unique_name("augment-resume")
    args = as_flags(config(backbone, tmp_path / "run", name))
    code, stdout, stderr = train_signalled_after_first_epoch(
        args, signal.SIGTERM, tmp_path / "err", epochs=3
    )
    assert code == 130, stderr[-3000:]
    assert "ema_val_acc" in stdout
    resumed = train_command([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch 1/3" not in resumed.stdout and "epoch 3/3" in resumed.stdout
    [model] = bentoml.models.list(name)

    unbroken = train(config(backbone, tmp_path / "unbroken", unique_name("augment-unbroken")))
    expected, found = stored_tensors(unbroken.tag), stored_tensors(model.tag)
    assert found.keys() == expected.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(found[key], tensor, rtol=1e-5, atol=1e-6, msg=key)
    history = json.loads((tmp_path / "run" / "report.json").read_text())["history"]
    for row, unbroken_row in zip(history, unbroken.history, strict=True):
        assert row["val_accuracy"] == pytest.approx(unbroken_row["val_accuracy"])
        assert row["ema_val_accuracy"] == pytest.approx(unbroken_row["ema_val_accuracy"])


@pytest.mark.parametrize("policy", ["light", "randaugment", "trivialaugment"])
def test_the_better_of_model_and_ema_is_stored(make_backbone, train_digits, policy):
    result = train_digits(
        make_backbone("vit", IMAGE_SIZE),
        strategy="full",
        augment=policy,
        ema_decay=0.95,
        metric="accuracy",
        epochs=4,
    )
    best = max(max(row["val_accuracy"], row["ema_val_accuracy"]) for row in result.history)
    assert result.metadata.validation.accuracy == pytest.approx(best)
    assert result.metadata.training_config["augment"] == policy

    report = json.loads((result.run_dir / "report.json").read_text())
    validation = report["calibration"]["validation"]
    assert validation["after"]["nll"] <= validation["before"]["nll"] + 1e-6
    assert validation["after"]["nll"] == pytest.approx(result.metadata.validation.nll)
    assert "## Calibration" in (result.run_dir / "report.md").read_text()
