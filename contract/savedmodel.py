"""What a visiontune model in the BentoML model store holds, and its names.

The folder of a stored model is a Hugging Face model folder (``config.json``,
``model.safetensors``, ``preprocessor_config.json``) plus ``visiontune.json``
(the resolved training config). Everything else lives in the BentoML metadata,
validated by :class:`ModelMetadata`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

DEFAULT_MODEL_NAME = "visiontune-classifier"
MODEL_ENV = "VISIONTUNE_MODEL"
DEFAULT_MODEL_TAG = f"{DEFAULT_MODEL_NAME}@production"
CONFIG_FILENAME = "visiontune.json"


class Stage(StrEnum):
    """Where a stored version is in its lifecycle (recorded by ``contract.stages``)."""

    candidate = "candidate"
    production = "production"
    archived = "archived"


class Metrics(BaseModel):
    """Classification and calibration quality on one split."""

    accuracy: float
    macro_f1: float
    per_class_f1: dict[str, float]
    ece: float = Field(description="Expected calibration error of the calibrated scores.")
    nll: float = Field(description="Negative log-likelihood of the calibrated scores.")
    n: int = Field(description="Number of images scored.")


class Lineage(BaseModel):
    """Where a retrained model came from (``visiontune retrain``)."""

    parent: str | None = Field(None, description="Tag of the champion it was retrained from.")
    data: dict[str, str] = Field(
        default_factory=dict, description="Fingerprint of each data source it was trained on."
    )
    held_out: str | None = Field(None, description="The images the gate scored it on.")
    gate: dict[str, Any] | None = Field(None, description="The gate's verdict against the parent.")
    captured: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per data source labelled from live traffic, the inference ids of its "
        "images (contract.capture).",
    )


class ModelMetadata(BaseModel):
    """The metadata every stored visiontune model carries."""

    labels: list[str] = Field(description="Class names in id order.")
    backbone: str = Field(description="Hub id or local folder the backbone came from.")
    strategy: str
    image_size: tuple[int, int] = Field(description="(height, width) fed to the model.")
    temperature: float = Field(gt=0, description="Divide logits by this before softmax.")
    label_counts: dict[str, int] = Field(description="Training images per label.")
    validation: Metrics
    test: Metrics | None = None
    dataset_fingerprint: str
    split: dict[str, int] = Field(description="Images per split (train/val/test).")
    training_config: dict[str, Any]
    versions: dict[str, str]
    lineage: Lineage | None = None

    @property
    def label_distribution(self) -> dict[str, float]:
        total = sum(self.label_counts.values()) or 1
        return {label: self.label_counts.get(label, 0) / total for label in self.labels}
