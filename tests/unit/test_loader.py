"""Loading folders too big for the in-memory cache: worker processes sized to the cores,
JPEGs decoded at reduced size, and the same pixels as the cache in the same order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contract.images import Preprocessing
from tests.support.images import digit_images
from training import config as config_module
from training import data as data_module
from training.config import default_workers
from training.data import ImageSet, make_loader

PREPROCESSING = Preprocessing(16, 16, (0.5,) * 3, (0.5,) * 3, resize_to=18)


def jpeg_folder(root: Path, per_class: int = 6) -> list[tuple[Path, int]]:
    """Real digits, upscaled to 96x72 photos-sized JPEGs (big enough for a reduced decode)."""
    examples = []
    for label, digit in enumerate((3, 7)):
        folder = root / str(digit)
        folder.mkdir(parents=True)
        for i, image in enumerate(digit_images(digit, per_class)):
            path = folder / f"{i}.jpg"
            image.convert("RGB").resize((96, 72), Image.Resampling.BICUBIC).save(path, quality=90)
            examples.append((path, label))
    return examples


def batches(loader) -> tuple[torch.Tensor, torch.Tensor]:
    pixels, labels = zip(*loader, strict=True)
    return torch.cat(pixels), torch.cat(labels)


def test_streaming_workers_give_the_cached_pixels_in_order(tmp_path):
    examples = jpeg_folder(tmp_path)
    order = list(np.random.default_rng(0).permutation(len(examples)))
    cached = ImageSet(examples, PREPROCESSING)
    streamed = ImageSet(examples, PREPROCESSING, cache=False)
    assert cached.cache is not None and streamed.cache is None

    loader = make_loader(streamed, 4, order=order, workers=2)
    assert loader.num_workers == 2
    assert make_loader(cached, 4, order=order, workers=2).num_workers == 0  # nothing to decode
    pixels, labels = batches(loader)
    expected_pixels, expected_labels = batches(make_loader(cached, 4, order=order))
    assert torch.equal(pixels, expected_pixels)
    assert torch.equal(labels, expected_labels)


def test_jpeg_is_decoded_at_reduced_size_close_to_a_full_decode(tmp_path):
    examples = jpeg_folder(tmp_path, per_class=2)
    drafted = ImageSet(examples, PREPROCESSING, cache=False)
    full = ImageSet(examples, PREPROCESSING, cache=False, draft=False)
    assert drafted.draft_size == (36, 36)  # twice the 18 px shortest edge
    assert full.draft_size is None
    for i in range(len(examples)):
        difference = drafted[i][0].float() - full[i][0].float()
        assert difference.abs().mean() < 8  # of 255
    assert not all(torch.equal(drafted[i][0], full[i][0]) for i in range(len(examples)))


def test_a_set_past_the_cache_limit_streams_with_default_workers(tmp_path, monkeypatch):
    examples = jpeg_folder(tmp_path, per_class=2)
    monkeypatch.setattr(data_module, "CACHE_LIMIT_BYTES", 16 * 16 * 3 * (len(examples) - 1))
    images = ImageSet(examples, PREPROCESSING)
    assert images.cache is None
    assert make_loader(images, 4).num_workers == default_workers()


@pytest.mark.parametrize(("cores", "workers"), [(1, 1), (2, 1), (4, 3), (64, 8)])
def test_default_workers_follow_the_usable_cores(monkeypatch, cores, workers):
    monkeypatch.setattr(config_module.os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert default_workers() == workers
