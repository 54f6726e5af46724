"""SIGTERM/SIGINT mid-training: exit 130 with a checkpoint; --resume ends where an unbroken run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import bentoml
import pytest
import torch

from tests.support import REPO
from tests.support.builders import IMAGE_SIZE, unique_name
from tests.support.store import stored_tensors
from training.config import TrainConfig
from training.train import train
from visiontune.cli import main

pytestmark = pytest.mark.slow

VISIONTUNE = [sys.executable, "-m", "visiontune"]


def flags(backbone: Path, run_dir: Path, name: str) -> list[str]:
    """Full fine-tuning with many small batches, so an epoch takes long enough to interrupt."""
    return [
        "--data", "digits",
        "--classes", "0,1,2,3",
        "--per-class", "40",
        "--backbone", str(backbone),
        "--strategy", "full",
        "--image-size", str(IMAGE_SIZE),
        "--batch-size", "4",
        "--epochs", "3",
        "--lr", "3e-3",
        "--test-fraction", "0",
        "--seed", "1",
        "--name", name,
        "--output-dir", str(run_dir),
    ]  # fmt: skip


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def interrupt_after_first_epoch(args: list[str], signum: int, stderr_path: Path):
    """Start `visiontune train`, send ``signum`` once the first epoch line is printed."""
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(
            [*VISIONTUNE, "train", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=env(),
        )
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("epoch 1/3"):
                process.send_signal(signum)
                break
        lines += process.stdout.readlines()
        process.wait(timeout=120)
    return process.returncode, "".join(lines), stderr_path.read_text()


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*VISIONTUNE, "train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env(),
    )


def one_line_error(capsys, args: list[str]) -> str:
    """`visiontune train ARGS` in this process: exit 2 and one `visiontune: error:` line."""
    capsys.readouterr()
    assert main(["train", *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("visiontune: error: --resume"), lines
    return lines[0]


def stored(name: str) -> list:
    try:
        return bentoml.models.list(name)
    except bentoml.exceptions.NotFound:
        return []


def assert_interrupted(code: int, stdout: str, stderr: str, run_dir: Path, name: str) -> dict:
    assert code == 130, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("visiontune: error:")]
    assert len(errors) == 1, stderr[-3000:]
    assert "interrupted" in errors[0] and "--resume" in errors[0]
    assert str(run_dir / "checkpoint") in errors[0]
    assert "Traceback" not in stderr
    assert "epoch 3/3" not in stdout
    progress = json.loads((run_dir / "checkpoint" / "progress.json").read_text())
    assert progress["epoch"] >= 1 and progress["batches_done"] >= 1  # stopped mid-epoch
    assert stored(name) == []  # nothing half-trained in the store
    return progress


def test_sigterm_then_resume_equals_an_uninterrupted_run(make_backbone, tmp_path, capsys):
    backbone = make_backbone("resnet", IMAGE_SIZE)
    run_dir, name = tmp_path / "run", unique_name("resume")
    args = ["--grad-accum", "2", *flags(backbone, run_dir, name)]

    code, stdout, stderr = interrupt_after_first_epoch(args, signal.SIGTERM, tmp_path / "err")
    progress = assert_interrupted(code, stdout, stderr, run_dir, name)
    assert progress["batches_done"] % 2 == 0  # stopped between accumulated steps, none half-done

    changed = [*args[:-4], "--epochs", "4", *args[-4:], "--resume"]
    assert "flags differ" in one_line_error(capsys, changed)
    assert (run_dir / "checkpoint" / "progress.json").exists()

    resumed = run([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch 1/3" not in resumed.stdout and "epoch 3/3" in resumed.stdout
    assert not (run_dir / "checkpoint").exists()
    [model] = stored(name)

    config = TrainConfig(
        data="digits", classes=["0", "1", "2", "3"], per_class=40, backbone=str(backbone),
        strategy="full", image_size=IMAGE_SIZE, batch_size=4, epochs=3, lr=3e-3,
        test_fraction=0, seed=1, grad_accum=2, name=unique_name("unbroken"),
        output_dir=tmp_path / "unbroken",
    )  # fmt: skip
    unbroken = train(config)

    resumed_tensors, unbroken_tensors = stored_tensors(model.tag), stored_tensors(unbroken.tag)
    assert resumed_tensors.keys() == unbroken_tensors.keys()
    for key, tensor in unbroken_tensors.items():
        torch.testing.assert_close(resumed_tensors[key], tensor, rtol=1e-5, atol=1e-6, msg=key)
    history = json.loads((run_dir / "report.json").read_text())["history"]
    assert [row["val_accuracy"] for row in history] == pytest.approx(
        [row["val_accuracy"] for row in unbroken.history]
    )


def test_sigint_saves_a_checkpoint_too(make_backbone, tmp_path):
    run_dir, name = tmp_path / "run", unique_name("sigint")
    args = flags(make_backbone("resnet", IMAGE_SIZE), run_dir, name)
    code, stdout, stderr = interrupt_after_first_epoch(args, signal.SIGINT, tmp_path / "err")
    assert_interrupted(code, stdout, stderr, run_dir, name)
    assert (run_dir / "checkpoint" / "config.json").exists()


def test_resume_without_a_checkpoint(make_backbone, tmp_path, capsys):
    args = flags(make_backbone("resnet", IMAGE_SIZE), tmp_path / "fresh", unique_name())
    assert "no checkpoint" in one_line_error(capsys, [*args, "--resume"])
