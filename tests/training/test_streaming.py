"""Training from a folder too big for the in-memory cache: the loader's worker processes
decode it, and the run is the same as one from the cache."""

from __future__ import annotations

import pytest

from tests.support.images import digit_images
from training import data as data_module

pytestmark = pytest.mark.slow


def test_streaming_trains_like_the_cache(make_backbone, train_digits, tmp_path, monkeypatch):
    root = tmp_path / "jpegs"
    for digit in range(4):
        (root / str(digit)).mkdir(parents=True)
        for i, image in enumerate(digit_images(digit, 14)):
            image.convert("RGB").resize((64, 48)).save(root / str(digit) / f"{i}.jpg")
    backbone = make_backbone("resnet", 16)

    cached = train_digits(backbone, data=str(root), epochs=2, output_dir=tmp_path / "cached")
    monkeypatch.setattr(data_module, "CACHE_LIMIT_BYTES", 0)
    streamed = train_digits(
        backbone, data=str(root), epochs=2, workers=1, output_dir=tmp_path / "streamed"
    )

    def outcome(result):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in result.history]

    for ours, theirs in zip(outcome(streamed), outcome(cached), strict=True):
        assert ours == pytest.approx(theirs)
    assert streamed.metadata.validation == cached.metadata.validation
