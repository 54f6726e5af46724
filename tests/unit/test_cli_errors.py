"""`visiontune` errors: exit 2 and exactly one stderr line `visiontune: error: ...`, no traceback."""

from __future__ import annotations

import pytest

from tests.support.cli import assert_one_line_error, visiontune
from tests.support.images import add_bad_files, write_classes


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ((), ["COMMAND"]),
        (("fly",), ["fly"]),
        (("train", "--backbone", "b"), ["--data", "required"]),
        (("train", "--data", "digits"), ["--backbone", "required"]),
        (("train", "--data", "digits", "--backbone", "b", "--epochs", "0"), ["--epochs"]),
        (("train", "--data", "digits", "--backbone", "b", "--epochs", "many"), ["--epochs"]),
        (("train", "--data", "digits", "--backbone", "b", "--lr", "-1"), ["--lr"]),
        (
            ("train", "--data", "digits", "--backbone", "b", "--strategy", "all"),
            ["--strategy", "all"],
        ),
        (("train", "--data", "digits", "--backbone", "b", "--colour"), ["--colour"]),
        (
            ("train", "--data", "digits", "--backbone", "b", "--strategy", "lora")
            + ("--layer-decay", "0.8"),
            ["--layer-decay", "--strategy full"],
        ),
        (
            (
                "train",
                "--data",
                "digits",
                "--backbone",
                "b",
                "--strategy",
                "partial",
                "--lora-rank",
                "4",
            ),
            ["--lora-rank", "--strategy lora"],
        ),
        (("lr-find", "--data", "digits", "--backbone", "b", "--steps", "5"), ["--steps", "20"]),
        (
            ("lr-find", "--data", "digits", "--backbone", "b", "--end-lr", "1e-8"),
            ["--end-lr must be above --start-lr"],
        ),
        (("lr-find", "--data", "digits", "--backbone", "b", "--epochs", "3"), ["--epochs"]),
        (("lr-find", "--data", "digits"), ["--backbone", "required"]),
        (("evaluate", "--data", "digits"), ["tag"]),
        (("evaluate", "m:1"), ["--data"]),
        (("models", "a", "b"), ["b"]),
        (("optimize", "nothing-here:v1"), ["no model nothing-here:v1"]),
        (("optimize", "m:1", "--max-accuracy-loss", "2"), ["--max-accuracy-loss", "0.01"]),
    ],
)
def test_usage_errors_are_one_line(args, fragments):
    assert_one_line_error(visiontune(*args), *fragments)


def test_bad_backbone_fails_before_the_data_is_read(tmp_path):
    result = visiontune("train", "--data", str(tmp_path / "nothing"), "--backbone", "b")
    assert_one_line_error(result, "--backbone b")


def test_unknown_backbone_folder(tmp_path):
    result = visiontune("train", "--data", "digits", "--backbone", str(tmp_path / "nowhere"))
    assert_one_line_error(result, "no such folder", str(tmp_path / "nowhere"))


def test_missing_data_folder(tmp_path, make_backbone):
    backbone = str(make_backbone("vit", 16))
    result = visiontune("train", "--data", str(tmp_path / "nothing"), "--backbone", backbone)
    assert_one_line_error(result, "no such folder")


def test_unknown_model_tag_for_evaluate(tmp_path):
    result = visiontune(
        "evaluate", "no-such-model:v1", "--data", "digits", env={"BENTOML_HOME": str(tmp_path)}
    )
    assert_one_line_error(result, "no-such-model")


def test_models_on_an_empty_store(tmp_path):
    result = visiontune("models", env={"BENTOML_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert "no visiontune models" in result.stdout


def test_help_lists_the_config_flags():
    result = visiontune("train", "--help")
    assert result.returncode == 0
    for flag in ("--strategy", "--layer-decay", "--per-class", "--strict", "--resume"):
        assert flag in result.stdout
    assert "(default: full)" in result.stdout


def test_strict_names_the_bad_file(tmp_path, make_backbone):
    write_classes(tmp_path, {"1": 3, "2": 3})
    bad = add_bad_files(tmp_path / "2")
    backbone = str(make_backbone("vit", 16))
    result = visiontune("train", "--data", str(tmp_path), "--backbone", backbone, "--strict")
    line = assert_one_line_error(result, "(--strict)")
    assert any(str(path) in line for path in bad)


def test_deploy_outside_a_checkout_is_one_line(monkeypatch, tmp_path, capsys):
    from visiontune.cli import main
    from visiontune.lifecycle import release

    monkeypatch.setattr(release, "REPO", tmp_path)
    assert main(["deploy", "--port", "3300"]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("visiontune: error: releasing builds the image from a checkout")
    assert f"{tmp_path} is not one (no bentofile.yaml)" in line
