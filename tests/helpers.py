"""Writing small labelled image folders from real scikit-learn digits, and bad files."""

from __future__ import annotations

import io
import subprocess
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

from contract.savedmodel import Metrics, ModelMetadata
from tests.conftest import digit_image


@cache
def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, digits.target


def digit_images(digit: int, n: int, start: int = 0) -> list[Image.Image]:
    """``n`` real images of ``digit`` (the ``start``-th onwards)."""
    data, target = _digits()
    rows = np.flatnonzero(target == digit)[start : start + n]
    return [digit_image(data[row]) for row in rows]


def write_classes(root: Path, counts: dict[str, int], start: int = 0) -> Path:
    """``root/<label>/<label>_<i>.png`` for each label; a label names a digit (0-9)."""
    for label, n in counts.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(digit_images(int(label) % 10, n, start)):
            image.save(folder / f"{label}_{start + i:03d}.png")
    return root


def truncated_png() -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


BAD_FILES = {
    "zero.png": b"",
    "notes.txt": b"these are notes, not an image\n",
    "fake.jpg": b"\xff\xd8\xff\xe0 not really a jpeg",
    "cut.png": truncated_png(),
}


def add_bad_files(folder: Path) -> list[Path]:
    """One of each kind of unusable file in ``folder``."""
    paths = []
    for name, data in BAD_FILES.items():
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


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
    from training.config import TrainConfig

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


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit 2 and exactly one stderr line, `visiontune: error: ...` (so no traceback either)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("visiontune: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert result.stdout == ""
    return lines[0]
