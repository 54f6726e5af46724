"""What a visiontune model in the BentoML model store holds, and its names.

The folder of a stored model is a Hugging Face model folder (``config.json``,
``model.safetensors``, ``preprocessor_config.json``) plus ``visiontune.json``
(the resolved training config), ``samples.npz`` (a few held-out and training images
at the model's size: ``contract.samples``) and, once ``visiontune optimize`` has run,
the ONNX graphs the other runtimes serve (``onnx/model.onnx``, ``onnx/model.int8.onnx``).
Everything else lives in the BentoML metadata, validated by :class:`ModelMetadata`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Stage(StrEnum):
    """Where a stored version is in its lifecycle (recorded by ``contract.stages``)."""

    candidate = "candidate"
    production = "production"
    archived = "archived"


def production_ref(name: str) -> str:
    """``NAME@production``: the reference to the one version of ``name`` serving."""
    return f"{name}@{Stage.production}"


DEFAULT_MODEL_NAME = "visiontune-classifier"
MODEL_ENV = "VISIONTUNE_MODEL"
DEFAULT_MODEL_TAG = production_ref(DEFAULT_MODEL_NAME)
CONFIG_FILENAME = "visiontune.json"
ONNX_GRAPH = "onnx/model.onnx"  # fp32: pixel_values (any batch size) -> logits
ONNX_INT8_GRAPH = "onnx/model.int8.onnx"  # the same, statically quantized (QDQ)


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


class Int8Check(BaseModel):
    """How the int8 graph did against the fp32 graph on the stored held-out images."""

    method: str = Field(description="The quantizer and its settings.")
    calibration_images: int
    held_out_images: int
    accuracy_fp32: float
    accuracy_int8: float
    accuracy_change: float = Field(description="int8 minus fp32 accuracy (negative: a loss).")
    max_loss: float = Field(description="The largest loss accepted when it was made.")
    top1_agreement: float = Field(description="Share of images with the same top label.")


class OnnxGraphs(BaseModel):
    """The ONNX graphs kept beside the weights (``visiontune optimize``)."""

    opset: int
    max_logit_difference: float = Field(
        description="Largest |logit| difference from PyTorch when exported."
    )
    int8: Int8Check | None = None


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
    onnx: OnnxGraphs | None = None

    @property
    def label_distribution(self) -> dict[str, float]:
        total = sum(self.label_counts.values()) or 1
        return {label: self.label_counts.get(label, 0) / total for label in self.labels}
