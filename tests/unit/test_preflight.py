"""Output locations checked before training: writable, with room for checkpoints and the model."""

from __future__ import annotations

import shutil

import pytest

from training.preflight import OutputError, check_space, check_writable, model_store_path


def test_writable_folders_pass_and_are_created(tmp_path):
    check_writable(tmp_path / "runs" / "new")
    assert (tmp_path / "runs" / "new").is_dir()
    assert model_store_path().is_dir()
    assert list((tmp_path / "runs" / "new").iterdir()) == []  # the probe file is gone


def test_unwritable_output_dir_is_named(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError) as err:
        check_writable(blocker / "run")
    message = str(err.value)
    assert message.startswith(f"--output-dir {blocker / 'run'}: cannot write there")
    assert "Not a directory" in message and "\n" not in message


def test_unwritable_store_is_named(tmp_path, monkeypatch):
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    monkeypatch.setenv("BENTOML_HOME", str(blocker))
    with pytest.raises(OutputError, match=f"model store {blocker / 'models'}: cannot write there"):
        check_writable(tmp_path / "run")


def test_too_little_space_is_named_with_sizes(tmp_path):
    """Needs on one file system add up: 60% of the free space twice does not fit."""
    sub = tmp_path / "sub"
    sub.mkdir()
    share = int(shutil.disk_usage(tmp_path).free * 0.6)
    check_space({tmp_path: share})
    with pytest.raises(OutputError) as err:
        check_space({tmp_path: share, sub: share})
    message = str(err.value)
    assert message.startswith(f"{tmp_path}: ") and "MB free" in message
    assert "--output-dir" in message and "\n" not in message
