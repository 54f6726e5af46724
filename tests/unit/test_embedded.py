"""The embedded datasets: Fashion-MNIST from Debian's idx files with its published split
and class names, read without making an image per example; a missing install is one
line saying how to get it, and the digits need nothing."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.cli import assert_one_line_error, visiontune
from tests.support.needs import need_fashion_mnist
from training.config import TrainConfig
from training.data import DataError, load_data, load_image
from training.embedded import FASHION_MNIST_LABELS, read_fashion_mnist
from training.model import input_size_for


def test_published_split_counts_and_class_names():
    need_fashion_mnist()
    splits, labels, fingerprint, skipped, given = read_fashion_mnist()
    assert given and not skipped and len(fingerprint) == 64
    assert labels == FASHION_MNIST_LABELS
    assert labels[:2] == ["T-shirt/top", "Trouser"] and labels[-1] == "Ankle boot"
    assert {split: len(examples) for split, examples in splits.items()} == {
        "train": 60_000,
        "test": 10_000,
    }
    for split, per_class in (("train", 6000), ("test", 1000)):
        counts = np.bincount([label for _, label in splits[split]], minlength=10)
        assert (counts == per_class).all(), split
    assert splits["train"][0][1] == labels.index("Ankle boot")  # the set's first example


def test_examples_are_views_of_one_array_until_used():
    need_fashion_mnist()
    data = load_data(TrainConfig(data="fashion-mnist", backbone="b", per_class=3))
    assert data.sizes == {"train": 30, "val": 9000, "test": 10_000}
    source, _ = data.train[0]
    assert isinstance(source, np.ndarray) and source.shape == (28, 28)
    assert source.base is not None  # a view: no copy, no image object per example
    image = load_image(source)
    assert image.mode == "RGB" and image.size == (28, 28)
    assert np.array_equal(np.asarray(image)[..., 0], source)


def test_eval_per_class_caps_validation_and_test():
    need_fashion_mnist()
    config = TrainConfig(data="fashion-mnist", backbone="b", per_class=5, eval_per_class=7)
    data = load_data(config)
    assert data.sizes == {"train": 50, "val": 70, "test": 70}
    assert sorted(data.label_counts.values()) == [5] * 10


def test_missing_install_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONTUNE_FASHION_MNIST", str(tmp_path))
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist") as err:
        load_data(TrainConfig(data="fashion-mnist", backbone="b"))
    assert "\n" not in str(err.value)
    assert load_data(TrainConfig(data="digits", backbone="b")).labels[0] == "0"


def test_cli_error_is_one_line(tmp_path, make_backbone):
    result = visiontune(
        "train",
        "--data",
        "fashion-mnist",
        "--backbone",
        make_backbone("vit", 16),
        env={"VISIONTUNE_FASHION_MNIST": str(tmp_path)},
    )
    assert_one_line_error(result, "--data fashion-mnist", "dataset-fashion-mnist")


def test_small_images_train_at_three_times_their_size(make_backbone):
    need_fashion_mnist()
    photos = [source for source, _ in read_fashion_mnist()[0]["test"][:50]]
    lite = make_backbone("efficientnet", 224)
    assert input_size_for(str(lite), photos) == 96  # 28 px -> 84, rounded up to 32
    assert input_size_for(str(make_backbone("vit", 224)), photos) is None  # fixed input
    large = [np.zeros((200, 150), dtype=np.uint8)]
    assert input_size_for(str(lite), large) is None  # 600 px is no smaller than 224


def test_without_the_package_tests_skip_naming_it_and_fail_in_ci(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONTUNE_FASHION_MNIST", str(tmp_path))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install dataset-fashion-mnist"):
        need_fashion_mnist()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI needs Fashion-MNIST"):
        need_fashion_mnist()
