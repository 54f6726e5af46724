"""`visiontune score`: a stored model scoring a folder and a dataset into Parquet, resumed,
and on a real local Ray (2 CPUs), whose rows must equal the local engine's."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pandas as pd
import pytest

from tests.support.builders import store_random_classifier, unique_name
from tests.support.cli import assert_one_line_error, visiontune
from tests.support.images import add_bad_files, digit_images, write_classes
from tests.support.needs import need
from visiontune.cli import main
from visiontune.client import IMAGE_SUFFIXES

COLUMNS = ["id", "label", "score", "top_k_labels", "top_k_scores", "model", "error"]


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return store_random_classifier(tmp_path_factory.mktemp("score-model"), unique_name("score"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """24 digit PNGs, 6 larger JPEGs (decoded by draft) and one of each kind of bad file."""
    root = write_classes(tmp_path_factory.mktemp("archive"), dict.fromkeys(["1", "4", "7"], 8))
    (root / "photos").mkdir()
    for i, image in enumerate(digit_images(5, 6)):
        image.resize((96, 96)).save(root / "photos" / f"five_{i}.jpg", quality=90)
    bad = [p for p in add_bad_files(root / "photos") if p.suffix.lower() in IMAGE_SUFFIXES]
    return root, len(bad)  # files of other suffixes are not listed


def score(*args) -> int:
    return main(["score", *map(str, args)])


def score_captured(capsys, *args) -> SimpleNamespace:
    """`visiontune score ARGS` in this process, as ``assert_one_line_error`` reads a run."""
    capsys.readouterr()
    code = score(*args)
    out = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)


def read(folder) -> pd.DataFrame:
    return pd.read_parquet(folder).sort_values("id").reset_index(drop=True)


def test_a_folder_gets_a_row_per_file_and_the_bad_ones_their_error(
    model, archive, tmp_path, capsys
):
    root, bad = archive
    code = score(model, "--data", root, "--output", tmp_path / "out", "--top-k", "3")

    rows = read(tmp_path / "out")
    assert code == 1  # some files could not be read
    assert list(rows.columns) == COLUMNS
    assert len(rows) == 30 + bad and rows["id"].is_unique
    failed = rows[rows["error"].notna()]
    assert len(failed) == bad and failed["label"].isna().all()
    assert set(failed["id"].str.rsplit("/", n=1).str[-1]) == {
        path.name
        for path in (root / "photos").iterdir()
        if path.suffix in IMAGE_SUFFIXES and not path.name.startswith("five_")
    }
    scored = rows[rows["error"].isna()]
    assert (scored["model"] == model).all()  # the resolved tag, not "latest"
    for labels, scores, label, top in zip(
        scored["top_k_labels"],
        scored["top_k_scores"],
        scored["label"],
        scored["score"],
        strict=True,
    ):
        assert len(labels) == 3 and labels[0] == label and scores[0] == top
        assert list(scores) == sorted(scores, reverse=True) and sum(scores) <= 1 + 1e-6
    summary = capsys.readouterr().out
    assert f"scored 30 of {30 + bad} images with {model}" in summary
    assert f"{bad} could not be read" in summary


def test_resume_scores_only_what_the_output_lacks(model, tmp_path, capsys):
    folder = write_classes(tmp_path / "images", {"2": 5})
    out = tmp_path / "out"
    assert score(model, "--data", folder, "--output", out) == 0
    write_classes(folder, {"2": 4, "3": 3}, start=5)  # 7 new files
    (out / "part-killed-00000.parquet").write_bytes(b"PAR1 cut short")  # a killed writer's file

    refused = visiontune("score", model, "--data", folder, "--output", out)
    assert_one_line_error(refused, "already holds files", "--resume")
    other_k = visiontune(
        "score", model, "--data", folder, "--output", out, "--resume", "--top-k", 2
    )
    assert_one_line_error(other_k, "top_k 5, not 2")

    capsys.readouterr()
    assert score(model, "--data", folder, "--output", out, "--resume") == 0
    assert "(7 this run, 5 already there)" in capsys.readouterr().out
    rows = read(out)
    assert len(rows) == 12 and rows["id"].is_unique and rows["error"].isna().all()
    assert not (out / "part-killed-00000.parquet").exists()


def test_a_dataset_scores_like_the_same_images_in_a_folder(model, tmp_path):
    import datasets

    images = digit_images(6, 5) + digit_images(9, 3)
    splits = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"picture": images[:5]}),
            "test": datasets.Dataset.from_dict({"picture": images[5:]}),
        }
    ).cast_column("picture", datasets.Image())
    splits.save_to_disk(tmp_path / "saved")
    folder = tmp_path / "folder"
    folder.mkdir()
    for i, image in enumerate(images):
        image.save(folder / f"{i}.png")

    args = ("--output", tmp_path / "from-dataset", "--image-column", "picture")
    assert score(model, "--data", tmp_path / "saved", *args) == 0
    assert score(model, "--data", folder, "--output", tmp_path / "from-folder") == 0

    from_dataset = pd.read_parquet(tmp_path / "from-dataset").set_index("id")
    from_folder = pd.read_parquet(tmp_path / "from-folder")
    from_folder["id"] = from_folder["id"].str.rsplit("/", n=1).str[-1]
    names = {f"train/{i}": f"{i}.png" for i in range(5)}
    names |= {f"test/{i}": f"{i + 5}.png" for i in range(3)}
    assert sorted(from_dataset.index) == sorted(names)
    pairs = from_dataset.rename(index=names).join(from_folder.set_index("id"), rsuffix="_folder")
    assert (pairs["label"] == pairs["label_folder"]).all()
    assert (pairs["score"] - pairs["score_folder"]).abs().max() < 1e-6


def test_ray_engine_writes_the_rows_of_the_local_engine(model, archive, tmp_path):
    need(importlib.util.find_spec("ray") is not None, "Ray: pip install 'visiontune[score]'")
    root, _ = archive
    ray_args = ("--engine", "ray", "--num-cpus", "2", "--batch-size", "8")
    assert score(model, "--data", root, "--output", tmp_path / "ray", *ray_args) == 1
    assert score(model, "--data", root, "--output", tmp_path / "local") == 1

    on_ray, local = read(tmp_path / "ray"), read(tmp_path / "local")
    assert list(on_ray.columns) == COLUMNS
    for column in ("id", "label", "model", "error"):
        assert on_ray[column].fillna("").tolist() == local[column].fillna("").tolist(), column
    assert (on_ray["score"].fillna(0) - local["score"].fillna(0)).abs().max() < 1e-6
    assert (
        on_ray["top_k_labels"].map(list, na_action="ignore").fillna("").tolist()
        == local["top_k_labels"].map(list, na_action="ignore").fillna("").tolist()
    )


def test_usage_errors_are_one_line(model, tmp_path, capsys):
    missing = visiontune("score", model, "--data", tmp_path / "nowhere", "--output", tmp_path / "o")
    assert_one_line_error(missing, "no such folder")  # the real command: no traceback
    (tmp_path / "empty").mkdir()
    empty = score_captured(capsys, model, "--data", tmp_path / "empty", "--output", tmp_path / "o")
    assert_one_line_error(empty, "no images found")
    local_only = score_captured(
        capsys, model, "--data", tmp_path, "--output", tmp_path / "o", "--concurrency", 2
    )
    assert_one_line_error(local_only, "--engine ray")
    unknown = score_captured(capsys, "nope:1", "--data", tmp_path, "--output", tmp_path / "o")
    assert_one_line_error(unknown, "nope:1")


def test_an_fsspec_url_is_read_and_named_by_its_url(model, tmp_path):
    import fsspec

    memory = fsspec.filesystem("memory")
    for i, image in enumerate(digit_images(2, 3)):
        with memory.open(f"/archive-{tmp_path.name}/two/{i}.png", "wb") as file:
            image.save(file, "PNG")
    memory.pipe(f"/archive-{tmp_path.name}/notes.txt", b"not listed: no image suffix")
    url = f"memory:///archive-{tmp_path.name}"
    assert score(model, "--data", url, "--output", tmp_path / "out") == 0
    rows = read(tmp_path / "out")
    assert rows["id"].tolist() == [
        f"memory:///archive-{tmp_path.name}/two/{i}.png" for i in range(3)
    ]
    assert rows["error"].isna().all()
