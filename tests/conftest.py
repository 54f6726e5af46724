"""Shared fixtures: an isolated model store, tiny backbones built from configs, real digit images.

BENTOML_HOME must be set before bentoml is first imported, hence at module import.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="visiontune-test-bentoml-")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from tests.support.images import digit_image  # noqa: E402
from tests.support.needs import need_podman  # noqa: E402


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    return Path(os.environ["BENTOML_HOME"])


@pytest.fixture(scope="session")
def make_backbone(tmp_path_factory):
    """Factory: a random backbone of a family saved as a Hugging Face folder (cached per args)."""
    from training.backbones import save_random_backbone

    cache: dict[tuple, Path] = {}

    def make(family: str = "vit", image_size: int = 32, preset: str = "tiny") -> Path:
        key = (family, image_size, preset)
        if key not in cache:
            path = tmp_path_factory.mktemp(f"backbone-{family}-{preset}")
            cache[key] = save_random_backbone(path, family, image_size, preset)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    """Real handwritten digits written as PNG files in one sub-folder per class (60 per class)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = tmp_path_factory.mktemp("digits-folder")
    counts: dict[int, int] = {}
    for pixels, target in zip(digits.data, digits.target, strict=True):
        if counts.get(target, 0) >= 60:
            continue
        counts[target] = counts.get(target, 0) + 1
        folder = root / str(target)
        folder.mkdir(exist_ok=True)
        digit_image(pixels).save(folder / f"{target}_{counts[target]:03d}.png")
    return root


@pytest.fixture(autouse=True)
def podman_when_marked(request):
    """Tests marked ``podman`` skip with the reason where it is missing (fail under CI)."""
    if request.node.get_closest_marker("podman"):
        need_podman()
