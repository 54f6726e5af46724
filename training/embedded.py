"""Datasets that install with the project, named by ``--data NAME``.

``digits``: scikit-learn's 1,797 handwritten digits (8x8, 10 classes), always there.
``fashion-mnist``: Zalando's Fashion-MNIST (MIT; 70,000 28x28 grayscale product
photos, 10 classes), read from the idx files of Debian's ``dataset-fashion-mnist``
(or the folder ``VISIONTUNE_FASHION_MNIST`` names), with its published train/test split.

Each reader returns what ``training.data`` returns for any source:
``(splits, labels, fingerprint, skipped, given_split)``. Fashion-MNIST's examples are
views into the decompressed arrays (no image object is made until one is used).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
from PIL import Image

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_LABELS = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


class EmbeddedDataMissing(ValueError):
    """An embedded dataset whose files are not installed; the message says how to install them."""


def read_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [
        Image.fromarray((pixels.reshape(8, 8) * (255 / 16)).astype(np.uint8), mode="L")
        for pixels in digits.data
    ]
    examples = list(zip(images, (int(t) for t in digits.target), strict=True))
    digest = hashlib.sha256(digits.data.tobytes() + digits.target.tobytes()).hexdigest()
    labels = [str(int(name)) for name in digits.target_names]
    return {"train": examples}, labels, digest, [], False


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get("VISIONTUNE_FASHION_MNIST", FASHION_MNIST_DIR))


def read_fashion_mnist():
    folder = fashion_mnist_dir()
    paths = [folder / name for pair in FASHION_MNIST_FILES.values() for name in pair]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise EmbeddedDataMissing(
            f"--data fashion-mnist: {missing[0]} not found; install it with "
            "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or set "
            "VISIONTUNE_FASHION_MNIST to a folder holding the four idx .gz files"
        )
    digest = hashlib.sha256()
    splits = {}
    for split, (images_file, labels_file) in FASHION_MNIST_FILES.items():
        images = _idx(folder / images_file, digest)
        labels = _idx(folder / labels_file, digest)
        if images.ndim != 3 or len(images) != len(labels):
            raise EmbeddedDataMissing(f"--data fashion-mnist: {folder / images_file} is damaged")
        splits[split] = list(zip(images, labels.tolist(), strict=True))
    return splits, list(FASHION_MNIST_LABELS), digest.hexdigest(), [], True


def _idx(path: Path, digest) -> np.ndarray:
    """An idx file (LeCun's MNIST format): magic, dimension sizes, then uint8 data."""
    data = gzip.decompress(path.read_bytes())
    digest.update(data)
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise EmbeddedDataMissing(f"--data fashion-mnist: {path} is not an idx file of bytes")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


READERS = {"digits": read_digits, "fashion-mnist": read_fashion_mnist}
