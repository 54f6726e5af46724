"""SIGTERM/SIGINT/SIGKILL mid-training: a checkpoint (exit 130, or the last periodic one); --resume
ends where an unbroken run ends, and the store never holds a model of the interrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import bentoml
import pytest
import torch

from tests.support import REPO
from tests.support.builders import IMAGE_SIZE, unique_name
from tests.support.cli import VISIONTUNE, train_command, train_signalled_after_first_epoch
from tests.support.store import stored_tensors
from training.config import TrainConfig
from training.train import train
from visiontune.cli import main

pytestmark = pytest.mark.slow


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

    code, stdout, stderr = train_signalled_after_first_epoch(
        args, signal.SIGTERM, tmp_path / "err", epochs=3
    )
    progress = assert_interrupted(code, stdout, stderr, run_dir, name)
    assert progress["batches_done"] % 2 == 0  # stopped between accumulated steps, none half-done

    changed = [*args[:-4], "--epochs", "4", *args[-4:], "--resume"]
    assert "flags differ" in one_line_error(capsys, changed)
    assert (run_dir / "checkpoint" / "progress.json").exists()

    resumed = train_command([*args, "--resume"])
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
    code, stdout, stderr = train_signalled_after_first_epoch(
        args, signal.SIGINT, tmp_path / "err", epochs=3
    )
    assert_interrupted(code, stdout, stderr, run_dir, name)
    assert (run_dir / "checkpoint" / "config.json").exists()


def test_resume_without_a_checkpoint(make_backbone, tmp_path, capsys):
    args = flags(make_backbone("resnet", IMAGE_SIZE), tmp_path / "fresh", unique_name())
    assert "no checkpoint" in one_line_error(capsys, [*args, "--resume"])


def start(args: list[str], stderr) -> subprocess.Popen:
    return subprocess.Popen(
        [*VISIONTUNE, "train", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env(),
    )


def wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "training ended before the test could interrupt it"
        assert time.monotonic() < deadline, "timed out waiting on the training run"
        time.sleep(0.01)


def test_sigterm_before_training_starts_is_one_line(make_backbone, tmp_path):
    """The run folder is made before the data is decoded: a signal then has nothing to save."""
    run_dir, name = tmp_path / "run", unique_name("early")
    with (tmp_path / "err").open("w") as stderr:
        process = start(flags(make_backbone("resnet", IMAGE_SIZE), run_dir, name), stderr)
        wait_for(run_dir.exists, process)
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=120)
    errors = (tmp_path / "err").read_text()
    assert process.returncode == 130, errors[-3000:]
    assert errors.strip().splitlines() == [
        "visiontune: error: interrupted before a checkpoint was saved; nothing to resume, start again"
    ]
    assert "epoch 1/3" not in stdout and not (run_dir / "checkpoint").exists()


def global_step(run_dir: Path, steps_per_epoch: int) -> int:
    """Optimizer steps the latest checkpoint holds (-1: none yet, or being switched right now)."""
    try:
        progress = json.loads((run_dir / "checkpoint" / "progress.json").read_text())
    except (OSError, ValueError):
        return -1
    return progress["epoch"] * steps_per_epoch + progress["batches_done"]


def test_sigkill_at_a_random_step_loses_nothing(make_backbone, tmp_path):
    """Checkpoints about every step, SIGKILL at a seeded random step (often mid-save): --resume
    ends with the weights of an unbroken run, and the store never holds the killed run's model."""
    backbone = make_backbone("resnet", IMAGE_SIZE)
    run_dir, name = tmp_path / "run", unique_name("kill")
    args = [*flags(backbone, run_dir, name), "--checkpoint-every", "0.0005"]  # every 30 ms
    steps_per_epoch = 34  # 136 training images (160 less the 15% validation), 4 a step
    target = random.Random(9).randrange(5, 3 * steps_per_epoch - 5)

    with (tmp_path / "err").open("w") as stderr:
        process = start(args, stderr)
        wait_for(lambda: global_step(run_dir, steps_per_epoch) >= target, process)
        process.kill()
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert stored(name) == []

    resumed = train_command([*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch 3/3" in resumed.stdout
    [model] = stored(name)
    assert not (run_dir / "checkpoint").exists()

    config = TrainConfig(
        data="digits", classes=["0", "1", "2", "3"], per_class=40, backbone=str(backbone),
        strategy="full", image_size=IMAGE_SIZE, batch_size=4, epochs=3, lr=3e-3,
        test_fraction=0, seed=1, name=unique_name("unbroken"), output_dir=tmp_path / "unbroken",
    )  # fmt: skip
    unbroken = stored_tensors(train(config).tag)
    for key, tensor in stored_tensors(model.tag).items():
        torch.testing.assert_close(tensor, unbroken[key], rtol=1e-5, atol=1e-6, msg=key)


def test_a_failed_final_save_keeps_the_weights_for_resume(make_backbone, tmp_path):
    """The store breaks during training (here: its folder replaced by a file): the error names
    the problem and the checkpoint, and --resume, once the store is back, only saves."""
    run_dir, name = tmp_path / "run", unique_name("nostore")
    home = tmp_path / "bentoml"
    args = flags(make_backbone("resnet", IMAGE_SIZE), run_dir, name)
    environment = {**env(), "BENTOML_HOME": str(home)}
    with (tmp_path / "err").open("w") as stderr:
        process = subprocess.Popen(
            [*VISIONTUNE, "train", *args],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env=environment,
        )
        for line in process.stdout:
            if line.startswith("epoch 1/3"):
                break
        (home / "models").rmdir()  # checked writable (and made) before training started
        (home / "models").write_text("not a folder any more")
        stdout = process.stdout.read()
        process.wait(timeout=120)
    stderr_text = (tmp_path / "err").read_text()
    errors = [line for line in stderr_text.splitlines() if line.startswith("visiontune: error:")]
    assert process.returncode == 2, stderr_text[-3000:]
    assert "Traceback" not in stderr_text
    assert len(errors) == 1 and errors[0].startswith("visiontune: error: cannot save the model")
    assert f"kept in {run_dir / 'checkpoint'}" in errors[0] and "--resume" in errors[0]
    assert "epoch 3/3" in stdout and "saved " not in stdout

    (home / "models").unlink()
    resumed = subprocess.run(
        [*VISIONTUNE, "train", *args, "--resume"],
        cwd=REPO, capture_output=True, text=True, timeout=300, env=environment,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "epoch " not in resumed.stdout  # nothing retrained: the checkpoint held the result
    assert len(list((home / "models" / name).glob("*/model.yaml"))) == 1
    assert not (run_dir / "checkpoint").exists()
