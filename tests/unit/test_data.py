"""Every data form, bad files, bad datasets, the fingerprint and the split."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from tests.support import REPO
from tests.support.images import add_bad_files, digit_images, write_classes
from training.config import TrainConfig
from training.data import DataError, load_data, load_image, load_labelled

BACKBONE = "unused/backbone"


def config(data, **flags) -> TrainConfig:
    return TrainConfig(data=str(data), backbone=BACKBONE, **flags)


def sources(examples) -> list:
    return [str(source) for source, _ in examples]


def per_label(examples, labels) -> dict[str, int]:
    counts = Counter(labels[y] for _, y in examples)
    return {name: counts.get(name, 0) for name in labels}


def assert_rgb(example):
    image = load_image(example[0])
    assert image.mode == "RGB"
    assert image.size == (8, 8)


# --- folder of class sub-folders -------------------------------------------------------------


def test_class_folders_are_split_three_ways(digits_folder):
    data = load_data(config(digits_folder))
    assert data.labels == [str(d) for d in range(10)]
    assert data.sizes == {"train": 420, "val": 90, "test": 90}
    assert not data.given_split
    assert not data.skipped
    everything = sources(data.train) + sources(data.val) + sources(data.test)
    assert len(set(everything)) == 600  # disjoint and complete
    assert_rgb(data.train[0])
    for source, label in data.train[:20]:
        assert Path(source).parent.name == data.labels[label]


def test_split_is_stratified(digits_folder):
    data = load_data(config(digits_folder, val_fraction=0.2, test_fraction=0.1))
    for split, expected in ((data.train, 42), (data.val, 12), (data.test, 6)):
        counts = per_label(split, data.labels).values()
        assert expected - 1 <= min(counts) <= max(counts) <= expected + 1


def test_split_is_seeded(digits_folder):
    first = load_data(config(digits_folder, seed=3))
    again = load_data(config(digits_folder, seed=3))
    other = load_data(config(digits_folder, seed=4))
    assert sources(first.val) == sources(again.val)
    assert sources(first.train) == sources(again.train)
    assert sources(first.test) == sources(again.test)
    assert set(sources(first.val)) != set(sources(other.val))


def test_no_test_split_when_test_fraction_is_zero(digits_folder):
    data = load_data(config(digits_folder, test_fraction=0))
    assert data.test is None
    assert data.sizes == {"train": 510, "val": 90, "test": 0}


def test_classes_and_per_class(digits_folder):
    data = load_data(config(digits_folder, classes=["7", "3"], per_class=5))
    assert data.labels == ["7", "3"]
    assert per_label(data.train, data.labels) == {"7": 5, "3": 5}
    assert per_label(data.val, data.labels) == {"7": 9, "3": 9}  # held-out sets are not cut
    for source, label in data.train + data.val + data.test:
        assert Path(source).parent.name == data.labels[label]


def test_unknown_class_is_one_line(digits_folder):
    with pytest.raises(DataError) as err:
        load_data(config(digits_folder, classes=["3", "cat"]))
    assert "cat" in str(err.value)
    assert "\n" not in str(err.value)


# --- pre-split folders ------------------------------------------------------------------------


def test_given_train_val_test_split_is_kept(tmp_path):
    write_classes(tmp_path / "train", {"1": 12, "2": 10})
    write_classes(tmp_path / "val", {"1": 3, "2": 4}, start=20)
    write_classes(tmp_path / "test", {"1": 5, "2": 5}, start=30)
    data = load_data(config(tmp_path))
    assert data.given_split
    assert data.labels == ["1", "2"]
    assert data.sizes == {"train": 22, "val": 7, "test": 10}
    assert all("/val/" in s for s in sources(data.val))
    assert all("/test/" in s for s in sources(data.test))
    assert per_label(data.val, data.labels) == {"1": 3, "2": 4}


def test_validation_folder_name_is_accepted(tmp_path):
    write_classes(tmp_path / "train", {"1": 6, "2": 6})
    write_classes(tmp_path / "validation", {"1": 2, "2": 2}, start=10)
    data = load_data(config(tmp_path))
    assert data.sizes == {"train": 12, "val": 4, "test": 0}


def test_val_is_carved_from_train_when_only_train_and_test_exist(tmp_path):
    write_classes(tmp_path / "train", {"4": 20, "5": 20})
    write_classes(tmp_path / "test", {"4": 5, "5": 5}, start=30)
    data = load_data(config(tmp_path, val_fraction=0.25))
    assert data.given_split
    assert data.sizes == {"train": 30, "val": 10, "test": 10}
    assert per_label(data.val, data.labels) == {"4": 5, "5": 5}
    assert all("/train/" in s for s in sources(data.val))
    assert all("/test/" in s for s in sources(data.test))
    assert not set(sources(data.train)) & set(sources(data.val))


# --- Hugging Face datasets --------------------------------------------------------------------


def hf_dataset(n_per_class: dict[int, int], start: int = 0):
    import datasets

    images, labels = [], []
    for digit, n in n_per_class.items():
        images += digit_images(digit, n, start)
        labels += [digit] * n
    features = datasets.Features(
        {"picture": datasets.Image(), "digit": datasets.ClassLabel(names=["zero", "one", "two"])}
    )
    return datasets.Dataset.from_dict({"picture": images, "digit": labels}, features=features)


def test_dataset_saved_to_disk_with_custom_columns(tmp_path):
    import datasets

    splits = datasets.DatasetDict(
        {
            "train": hf_dataset({0: 12, 1: 12, 2: 12}),
            "validation": hf_dataset({0: 3, 1: 3, 2: 3}, start=20),
            "test": hf_dataset({0: 4, 1: 4, 2: 4}, start=30),
        }
    )
    splits.save_to_disk(tmp_path / "saved")
    data = load_data(config(tmp_path / "saved", image_column="picture", label_column="digit"))
    assert data.labels == ["zero", "one", "two"]
    assert data.sizes == {"train": 36, "val": 9, "test": 12}
    assert data.given_split
    assert per_label(data.val, data.labels) == {"zero": 3, "one": 3, "two": 3}
    assert_rgb(data.train[0])
    assert_rgb(data.test[-1])


def test_single_saved_dataset_is_split(tmp_path):
    hf_dataset({0: 20, 1: 20, 2: 20}).save_to_disk(tmp_path / "one")
    data = load_data(config(tmp_path / "one", image_column="picture", label_column="digit"))
    assert not data.given_split
    assert data.sizes == {"train": 42, "val": 9, "test": 9}


def test_parquet_dataset_folder_with_custom_columns(tmp_path):
    root = tmp_path / "parquet"
    (root / "data").mkdir(parents=True)
    hf_dataset({0: 10, 1: 10, 2: 10}).to_parquet(root / "data" / "train-00000-of-00001.parquet")
    hf_dataset({0: 3, 1: 3, 2: 3}, start=20).to_parquet(
        root / "data" / "test-00000-of-00001.parquet"
    )
    data = load_data(config(root, image_column="picture", label_column="digit", val_fraction=0.2))
    assert data.labels == ["zero", "one", "two"]
    assert data.given_split
    assert data.sizes == {"train": 24, "val": 6, "test": 9}
    assert_rgb(data.val[0])


def test_imagefolder_dataset_with_metadata_labels(tmp_path):
    root = tmp_path / "imagefolder"
    for split, start, n in (("train", 0, 8), ("test", 20, 3)):
        folder = root / split
        folder.mkdir(parents=True)
        rows = []
        for digit, name in ((0, "zero"), (1, "one")):
            for i, image in enumerate(digit_images(digit, n, start)):
                image.save(folder / f"{digit}_{i}.png")
                rows.append(f'{{"file_name": "{digit}_{i}.png", "kind": "{name}"}}')
        (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    data = load_data(config(root, label_column="kind", val_fraction=0.25))
    assert data.labels == ["one", "zero"]
    assert data.sizes == {"train": 12, "val": 4, "test": 6}
    assert_rgb(data.train[0])


def test_missing_column_names_the_flag(tmp_path):
    hf_dataset({0: 5, 1: 5}).save_to_disk(tmp_path / "one")
    with pytest.raises(DataError) as err:
        load_data(config(tmp_path / "one", image_column="picture"))  # label column is 'digit'
    message = str(err.value)
    assert "'label'" in message and "--label-column" in message and "digit" in message
    assert "\n" not in message


def test_unloadable_hub_name_is_one_line():
    with pytest.raises(DataError) as err:
        load_data(config("no-such-user/no-such-dataset-visiontune"))
    assert "no-such-user/no-such-dataset-visiontune" in str(err.value)
    assert "\n" not in str(err.value)


def test_corrupt_cells_of_a_dataset_are_skipped(tmp_path):
    import datasets

    good = hf_dataset({0: 6, 1: 6, 2: 6}).cast_column("picture", datasets.Image(decode=False))
    rows = good.to_list()
    rows[0]["picture"] = {"bytes": b"not an image", "path": "broken.png"}
    broken = datasets.Dataset.from_list(rows, features=good.features)
    broken.save_to_disk(tmp_path / "broken")
    flags = {"image_column": "picture", "label_column": "digit"}
    data = load_data(config(tmp_path / "broken", **flags))
    assert len(data.skipped) == 1
    assert data.skipped[0][0] == "broken.png"
    assert sum(data.sizes.values()) == 17
    with pytest.raises(DataError, match="broken.png"):
        load_data(config(tmp_path / "broken", strict=True, **flags))


# --- digits -----------------------------------------------------------------------------------


def test_digits_is_embedded():
    data = load_data(config("digits"))
    assert data.labels == [str(d) for d in range(10)]
    assert sum(data.sizes.values()) == 1797
    assert set(per_label(data.val, data.labels).values()) <= {26, 27, 28}
    assert_rgb(data.train[0])
    assert isinstance(data.train[0][0], Image.Image)
    assert load_data(config("digits")).fingerprint == data.fingerprint


# --- bad files --------------------------------------------------------------------------------


@pytest.fixture
def folder_with_bad_files(tmp_path) -> tuple[Path, list[Path]]:
    root = write_classes(tmp_path / "data", {"1": 10, "2": 10})
    bad = add_bad_files(root / "1")
    return root, bad


def test_bad_files_are_reported_by_path_skipped_and_counted(folder_with_bad_files, caplog):
    root, bad = folder_with_bad_files
    with caplog.at_level(logging.WARNING, logger="training.data"):
        data = load_data(config(root))
    assert sorted(path for path, _ in data.skipped) == sorted(str(p) for p in bad)
    assert sum(data.sizes.values()) == 20
    kept = set(sources(data.train + data.val + (data.test or [])))
    assert not kept & {str(p) for p in bad}
    reasons = dict(data.skipped)
    assert "0 bytes" in reasons[str(root / "1" / "zero.png")]
    assert "truncated" in reasons[str(root / "1" / "cut.png")]
    assert "corrupt" in reasons[str(root / "1" / "bad-exif.png")]
    for path in bad:
        assert any(str(path) in message for message in caplog.messages)


def test_strict_fails_on_the_first_bad_file(folder_with_bad_files):
    root, bad = folder_with_bad_files
    with pytest.raises(DataError) as err:
        load_data(config(root, strict=True))
    message = str(err.value)
    assert any(str(path) in message for path in bad)
    assert "--strict" in message
    assert "\n" not in message


def test_unreadable_files_are_skipped_by_path(tmp_path):
    """chmod 000 stops everyone but root: as root, the check runs without root's file access."""
    root = write_classes(tmp_path / "data", {"1": 10, "2": 10})
    locked = root / "2" / "locked.png"
    digit_images(2, 1)[0].save(locked)
    locked.chmod(0)
    script = (
        "import json; from training.config import TrainConfig; from training.data import load_data; "
        f"data = load_data(TrainConfig(data={str(root)!r}, backbone='b')); "
        "print(json.dumps(data.skipped))"
    )
    command = [sys.executable, "-c", script]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout) == [[str(locked), "cannot read (Permission denied)"]]


# --- datasets that cannot be trained on -------------------------------------------------------


def one_line_error(data_config: TrainConfig) -> str:
    with pytest.raises(DataError) as err:
        load_data(data_config)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_empty_class_is_one_line(tmp_path):
    write_classes(tmp_path, {"1": 10, "2": 10})
    (tmp_path / "3").mkdir()
    assert "class(es) 3" in one_line_error(config(tmp_path))


def test_class_with_only_bad_files_is_empty(tmp_path):
    write_classes(tmp_path, {"1": 10, "2": 10})
    (tmp_path / "3").mkdir()
    add_bad_files(tmp_path / "3")
    assert "class(es) 3" in one_line_error(config(tmp_path))


def test_single_class_is_one_line(tmp_path):
    write_classes(tmp_path, {"1": 10})
    assert "only one class" in one_line_error(config(tmp_path))


def test_no_images_is_one_line(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert "no images" in one_line_error(config(tmp_path))


def test_no_class_folders_is_one_line(tmp_path):
    digit_images(1, 1)[0].save(tmp_path / "loose.png")
    assert "no class sub-folders" in one_line_error(config(tmp_path))


def test_missing_folder_is_one_line(tmp_path):
    assert "no such folder" in one_line_error(config(tmp_path / "nowhere"))


def test_file_instead_of_folder_is_one_line(tmp_path):
    (tmp_path / "list.txt").write_text("x")
    assert "not a folder" in one_line_error(config(tmp_path / "list.txt"))


# --- fingerprint ------------------------------------------------------------------------------


@pytest.fixture
def small_folder(tmp_path) -> Path:
    return write_classes(tmp_path / "small", {"1": 6, "2": 6})


def fingerprint(root: Path) -> str:
    return load_data(config(root)).fingerprint


def test_fingerprint_is_stable(small_folder, tmp_path):
    copy = shutil.copytree(small_folder, tmp_path / "elsewhere")
    assert fingerprint(small_folder) == fingerprint(small_folder)
    assert fingerprint(copy) == fingerprint(small_folder)  # relative paths, not where it lives
    assert load_data(config(small_folder, seed=5)).fingerprint == fingerprint(small_folder)


def test_fingerprint_changes_with_a_new_file(small_folder):
    before = fingerprint(small_folder)
    digit_images(1, 1, start=40)[0].save(small_folder / "1" / "extra.png")
    assert fingerprint(small_folder) != before


def test_fingerprint_changes_with_a_removed_file(small_folder):
    before = fingerprint(small_folder)
    (small_folder / "2" / "2_000.png").unlink()
    assert fingerprint(small_folder) != before


def test_fingerprint_changes_with_a_label(small_folder):
    before = fingerprint(small_folder)
    (small_folder / "3").mkdir()
    (small_folder / "2" / "2_000.png").rename(small_folder / "3" / "2_000.png")
    (small_folder / "2" / "2_001.png").rename(small_folder / "3" / "2_001.png")
    (small_folder / "2" / "2_002.png").rename(small_folder / "3" / "2_002.png")
    assert fingerprint(small_folder) != before


# --- evaluation data --------------------------------------------------------------------------


def test_labelled_examples_follow_the_models_label_order(tmp_path):
    write_classes(tmp_path, {"1": 3, "2": 4})
    examples = load_labelled(config(tmp_path), ["2", "1", "0"])
    assert len(examples) == 7
    for source, label in examples:
        assert Path(source).parent.name == ["2", "1", "0"][label]


def test_labelled_examples_with_an_unknown_label(tmp_path):
    write_classes(tmp_path, {"1": 3, "2": 4})
    with pytest.raises(DataError, match="unknown to the model"):
        load_labelled(config(tmp_path), ["1", "3"])


def test_images_of_every_mode_are_trained_on_as_rgb(tmp_path):
    from contract.images import Preprocessing
    from training.data import ImageSet

    write_classes(tmp_path, {"1": 6})
    folder = tmp_path / "2"
    folder.mkdir()
    base = digit_images(2, 1)[0]
    base.convert("LA").save(folder / "la.png")
    base.convert("P").save(folder / "p.png")
    base.convert("RGBA").save(folder / "rgba.png")
    base.convert("CMYK").save(folder / "cmyk.jpg")
    base.convert("CMYK").save(folder / "cmyk.tiff")
    base.convert("I;16").save(folder / "i16.png")
    base.save(folder / "l.png")
    data = load_data(config(tmp_path, val_fraction=0.3, test_fraction=0))
    assert not data.skipped
    examples = data.train + data.val
    assert sum(1 for _, y in examples if data.labels[y] == "2") == 7
    images = ImageSet(examples, Preprocessing(8, 8, (0.5,) * 3, (0.5,) * 3))
    for index in range(len(images)):
        pixels, _ = images[index]
        assert pixels.shape == (8, 8, 3) and pixels.dtype == torch.uint8


def test_dataset_fingerprint_is_stable_and_follows_the_rows(tmp_path):
    flags = {"image_column": "picture", "label_column": "digit"}
    hf_dataset({0: 10, 1: 10, 2: 10}).save_to_disk(tmp_path / "a")
    hf_dataset({0: 10, 1: 10, 2: 10}, start=10).save_to_disk(tmp_path / "b")
    first = load_data(config(tmp_path / "a", **flags)).fingerprint
    assert load_data(config(tmp_path / "a", **flags)).fingerprint == first
    assert load_data(config(tmp_path / "b", **flags)).fingerprint != first


def test_parquet_fingerprint_follows_the_files(tmp_path):
    root = tmp_path / "parquet"
    (root / "data").mkdir(parents=True)
    train_file = root / "data" / "train-00000-of-00001.parquet"
    hf_dataset({0: 10, 1: 10, 2: 10}).to_parquet(train_file)
    flags = {"image_column": "picture", "label_column": "digit"}
    first = load_data(config(root, **flags)).fingerprint
    assert load_data(config(root, **flags)).fingerprint == first
    hf_dataset({0: 10, 1: 10, 2: 10}, start=10).to_parquet(train_file)
    assert load_data(config(root, **flags)).fingerprint != first


def test_home_relative_data_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    write_classes(tmp_path / "images", {"1": 5, "2": 5})
    data = load_data(config("~/images", test_fraction=0, val_fraction=0.2))
    assert data.labels == ["1", "2"]
    assert data.sizes == {"train": 8, "val": 2, "test": 0}
