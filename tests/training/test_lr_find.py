"""`visiontune lr-find`: the learning-rate range test on a tiny backbone and real digits."""

from __future__ import annotations

import json
import math

import pytest

from tests.support.builders import IMAGE_SIZE, digits_config
from tests.support.cli import visiontune
from training.data import load_data
from training.lr_find import RangeTestConfig, range_test, suggest
from training.model import input_size_for
from training.train import train


@pytest.fixture(scope="module")
def backbone(make_backbone):
    return make_backbone("resnet", IMAGE_SIZE)


@pytest.fixture(scope="module")
def full_sweep(backbone, tmp_path_factory):
    config = digits_config(backbone, tmp_path_factory.mktemp("lr-find"), strategy="full")
    result = range_test(config, RangeTestConfig())
    return config, result, suggest(result)


def test_rates_grow_geometrically_until_the_loss_diverges(full_sweep):
    config, _, _ = full_sweep
    # up to 1000, far past the default 10, so that the loss blows up well inside the sweep
    result = range_test(config, RangeTestConfig(end_lr=1000.0))
    assert result.lrs[0] == pytest.approx(1e-7)
    factor = (1000 / 1e-7) ** (1 / 99)
    ratios = [b / a for a, b in zip(result.lrs, result.lrs[1:], strict=False)]
    assert ratios == pytest.approx([factor] * len(ratios))
    # AdamW at rates of 1 and more throws a fully trained ResNet's loss far off its minimum
    assert result.diverged and len(result.lrs) < 100
    assert result.smoothed[-1] > 4 * min(result.smoothed) or not math.isfinite(result.losses[-1])


def test_the_suggestion_lies_where_the_loss_falls(full_sweep):
    _, result, suggestion = full_sweep
    at = result.lrs.index(suggestion.steepest)
    lowest = result.smoothed.index(min(result.smoothed))
    assert at < lowest  # on the way down, before the minimum
    assert result.smoothed[at + 1] < result.smoothed[at]
    assert result.smoothed[lowest] < 0.9 * result.smoothed[0]
    assert suggestion.minimum_tenth == pytest.approx(result.lrs[lowest] / 10)


def test_the_suggested_rate_trains_better_than_a_tiny_one(full_sweep, tmp_path):
    config, _, suggestion = full_sweep

    def accuracy(lr: float) -> float:
        values = {**config.recorded(), "lr": lr, "output_dir": tmp_path / f"{lr:.0e}"}
        return train(type(config)(**values)).metadata.validation.accuracy

    suggested, tiny = accuracy(suggestion.steepest), accuracy(1e-6)
    assert suggested > tiny + 0.2, (suggested, tiny)


def test_small_images_are_swept_at_the_size_training_picks(make_backbone, tmp_path):
    backbone = make_backbone("efficientnet", 224)  # a convolutional backbone, 224 px input
    config = digits_config(backbone, tmp_path, image_size=None, per_class=4)
    result = range_test(config, RangeTestConfig(steps=20))
    sources = [source for source, _ in load_data(config).train]
    assert result.image_size == (input_size_for(str(backbone), sources),) * 2 == (32, 32)


def test_lr_find_command_prints_the_rate_and_keeps_no_model(backbone, tmp_path):
    store = tmp_path / "store"
    result = visiontune(
        "lr-find",
        "--data", "digits",
        "--backbone", backbone,
        "--classes", "0,1,2,3",
        "--per-class", 20,
        "--image-size", IMAGE_SIZE,
        "--batch-size", 16,
        "--strategy", "partial",
        "--steps", 40,
        "--output-dir", tmp_path / "run",
        env={"BENTOML_HOME": str(store)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert line.startswith("suggested lr ")
    assert line.endswith(f"plot {tmp_path / 'run' / 'lr_find.png'}")
    assert "\r" not in result.stderr  # no progress bar when stderr is not a terminal
    assert (tmp_path / "run" / "lr_find.png").read_bytes().startswith(b"\x89PNG")
    curve = json.loads((tmp_path / "run" / "lr_find.json").read_text())
    assert float(line.split()[2]) == pytest.approx(curve["suggestion"]["steepest"], rel=0.05)
    assert len(curve["lrs"]) == len(curve["losses"]) <= 40
    assert {p.name for p in (tmp_path / "run").iterdir()} == {"lr_find.png", "lr_find.json"}
    assert not (store / "models").exists() or not any((store / "models").iterdir())
