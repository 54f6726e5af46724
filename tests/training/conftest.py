"""Helpers for the tests that train: tiny backbones at 16x16, digit subsets, stored weights.

Tiny models train fastest on one thread, and on a shared 2-core machine two busy
threads per process make every step wait: these tests (and the `visiontune`
processes they start, through the environment) use one unless OMP_NUM_THREADS says
otherwise.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import bentoml
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForImageClassification

from training.config import TrainConfig
from training.train import TrainResult, train

IMAGE_SIZE = 16
CLASSES = ["0", "1", "2", "3"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread here and in the processes these tests start, then back as it was."""
    threads = os.environ.get("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", threads)
        torch.set_num_threads(int(threads))
        yield
    torch.set_num_threads(before)


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


@pytest.fixture
def train_digits(tmp_path):
    def run(backbone: Path, **flags) -> TrainResult:
        return train(digits_config(backbone, tmp_path / "run", **flags))

    return run


def stored_path(tag) -> Path:
    return Path(bentoml.models.get(tag).path)


def stored_state(tag) -> dict[str, torch.Tensor]:
    """The stored model's state dict as transformers loads it."""
    return AutoModelForImageClassification.from_pretrained(stored_path(tag)).state_dict()


def backbone_state(backbone: Path) -> dict[str, torch.Tensor]:
    return AutoModelForImageClassification.from_pretrained(backbone).state_dict()


def stored_tensors(tag) -> dict[str, torch.Tensor]:
    """The raw tensors of the stored safetensors file."""
    return load_file(stored_path(tag) / "model.safetensors")


def changed_keys(before: dict, after: dict) -> set[str]:
    """Keys present in both with the same shape whose values differ."""
    return {
        key
        for key, tensor in before.items()
        if key in after and after[key].shape == tensor.shape and not torch.equal(after[key], tensor)
    }
