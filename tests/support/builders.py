"""Configs and metadata the tests build: tiny digits training runs, valid stored-model metadata."""

from __future__ import annotations

import uuid
from pathlib import Path

from contract.savedmodel import Metrics, ModelMetadata
from tests.support.images import write_classes
from training.config import TrainConfig

IMAGE_SIZE = 16
CLASSES = ["0", "1", "2", "3"]


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def digits_config(backbone: Path, run_dir: Path, **flags) -> TrainConfig:
    """A few seconds of training: four digit classes, 20 training images each, 16x16."""
    values = {
        "data": "digits",
        "backbone": str(backbone),
        "name": unique_name(),
        "image_size": IMAGE_SIZE,
        "classes": CLASSES,
        "per_class": 20,
        "batch_size": 16,
        "epochs": 3,
        "lr": 3e-3,
        "test_fraction": 0,
        "output_dir": run_dir,
    }
    return TrainConfig(**{**values, **flags})


def metadata(labels=("3", "5", "8"), **changes) -> ModelMetadata:
    """Valid metadata for saving a model outside a training run."""
    metrics = Metrics(
        accuracy=0.5,
        macro_f1=0.4,
        per_class_f1={name: 0.4 for name in labels},
        ece=0.1,
        nll=1.0,
        n=30,
    )
    values = {
        "labels": list(labels),
        "backbone": "some/backbone",
        "strategy": "linear",
        "image_size": (16, 16),
        "temperature": 1.5,
        "label_counts": {name: 10 for name in labels},
        "validation": metrics,
        "dataset_fingerprint": "abc",
        "split": {"train": 30, "val": 30, "test": 0},
        "training_config": {"data": "digits", "epochs": 1},
        "versions": {"torch": "2"},
    }
    return ModelMetadata(**{**values, **changes})


def digits_classifier_config(backbone: Path, name: str, output_dir: Path, epochs: int):
    """A tiny ResNet fine-tuned on all digits at 16 px: the model the served tiers classify with."""
    return TrainConfig(
        data="digits",
        backbone=str(backbone),
        image_size=16,
        strategy="full",
        lr=3e-3,
        epochs=epochs,
        name=name,
        output_dir=output_dir,
    )


def store_random_classifier(folder: Path, name: str) -> str:
    """A tiny random (untrained) ResNet digits classifier saved in the store; its tag."""
    from transformers import AutoModelForImageClassification

    from contract.images import Preprocessing
    from training.backbones import save_random_backbone
    from training.store import save_model

    labels = [str(digit) for digit in range(10)]
    backbone = save_random_backbone(folder, "resnet", IMAGE_SIZE, num_labels=10)
    model = AutoModelForImageClassification.from_pretrained(backbone)
    preprocessing = Preprocessing(IMAGE_SIZE, IMAGE_SIZE, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    metrics = Metrics(
        accuracy=0.1, macro_f1=0.1, per_class_f1=dict.fromkeys(labels, 0.1), ece=0, nll=2.3, n=10
    )
    stored = metadata(
        labels=labels,
        backbone="resnet tiny (random)",
        strategy="full",
        image_size=(IMAGE_SIZE, IMAGE_SIZE),
        temperature=1.0,
        label_counts=dict.fromkeys(labels, 1),
        validation=metrics,
        dataset_fingerprint="none",
        split={"train": 10},
        training_config={},
        versions={},
    )
    return str(save_model(model, preprocessing, stored, name=name))


def digit_folder(root: Path, per_class: int, start: int = 0, classes=CLASSES) -> Path:
    """``root/<digit>/*.png``: ``per_class`` real digits of each class, from the ``start``-th."""
    return write_classes(root, dict.fromkeys(classes, per_class), start=start)


def lifecycle_v1_config(root: Path, backbone: Path, prefix: str) -> TrainConfig:
    """The first model of a lifecycle: a tiny ResNet fine-tuned on 8 images per class,
    a quarter held out (what retrain's challengers are gated against)."""
    return TrainConfig(
        data=str(digit_folder(root / "v1", 8)),
        backbone=str(backbone),
        name=unique_name(prefix),
        image_size=IMAGE_SIZE,
        strategy="full",
        lr=3e-3,
        epochs=3,
        batch_size=16,
        test_fraction=0.25,
        output_dir=root / "v1-run",
    )


def captured(
    inference_id: str,
    label: str,
    score: float,
    *,
    image: bytes,
    when=None,
    model: str = "digits:v1",
    shadow: tuple[str, str, float] | None = None,
    reason: str = "sampled",
):
    """A capture (``service.capture.Capture``) of one PNG answered ``label`` at ``score``;
    ``shadow`` is (tag, label, score) of the shadow's answer."""
    from datetime import UTC, datetime

    from contract.capture import Answer, CaptureRecord, LabelScore, image_path
    from service.capture import Capture

    when = when or datetime.now(UTC)

    def answer(tag: str, top: str, top_score: float) -> Answer:
        top_k = [LabelScore(label=top, score=top_score)]
        return Answer(model=tag, label=top, score=top_score, top_k=top_k, seconds=0.02, batch=4)

    record = CaptureRecord(
        inference_id=inference_id,
        time=when,
        answer=answer(model, label, score),
        shadow=answer(*shadow) if shadow else None,
        reason=reason,
        image=image_path(when, inference_id, "png"),
        media_type="image/png",
        image_bytes=len(image),
        headers={"user-agent": "test"},
    )
    return Capture(record, image, priority=reason == "low_confidence")
