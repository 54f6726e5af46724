"""Real images for tests: scikit-learn's handwritten digits as PIL images and labelled
folders, and one file of each kind of unusable image."""

from __future__ import annotations

import io
import random
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image


def digit_image(pixels: np.ndarray) -> Image.Image:
    """One scikit-learn digit (8x8, values 0..16) as an 8-bit grayscale image."""
    return Image.fromarray((pixels.reshape(8, 8) * (255 / 16)).astype(np.uint8), mode="L")


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


def shuffle_labels(root: Path, seed: int = 0) -> Path:
    """Move the images of a class-folder tree between its folders at random (same counts)."""
    files = sorted(root.glob("*/*.png"))
    targets = [path.parent for path in files]
    random.Random(seed).shuffle(targets)
    for i, (path, folder) in enumerate(zip(files, targets, strict=True)):
        path.rename(folder / f"shuffled_{i:04d}_{path.name}")
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
