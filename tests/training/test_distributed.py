"""Data parallel training on 2 CPU processes through `accelerate launch`, on one node and
as two nodes on localhost.

`accelerate launch --cpu --num_processes 2` starts a single process here (its simple
launcher); the torch.distributed launcher (`--multi_gpu`) with ACCELERATE_USE_CPU=1
starts two, which Accelerate joins as MULTI_CPU over gloo. Two processes with 8
images each per step must train exactly like one process with 16.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import bentoml
import psutil
import pytest
import torch

from tests.support import REPO
from tests.support.builders import IMAGE_SIZE, unique_name
from tests.support.servers import free_port
from tests.support.store import stored_tensors
from training.config import TrainConfig
from training.train import train

pytestmark = pytest.mark.slow

ACCELERATE = str(Path(sys.executable).parent / "accelerate")
ENV = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
SETTINGS = {
    "data": "digits",
    "classes": ["0", "1", "2"],
    "per_class": 16,
    "strategy": "full",
    "image_size": IMAGE_SIZE,
    "epochs": 2,
    "test_fraction": 0,
    # each process draws its own augmentations: equal weights need the same pixels
    "augment": "none",
}


def launch_command(backbone: Path, name: str, run_dir: Path, *extra: str) -> list[str]:
    return [
        ACCELERATE, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "visiontune", "train",
        "--data", "digits", "--classes", "0,1,2", "--per-class", "16",
        "--backbone", str(backbone), "--strategy", "full", "--image-size", str(IMAGE_SIZE),
        "--test-fraction", "0", "--name", name, "--output-dir", str(run_dir), *extra,
    ]  # fmt: skip


def launch_two_processes(
    backbone: Path, name: str, run_dir: Path, *extra: str
) -> subprocess.CompletedProcess:
    extra = extra or ("--epochs", "2", "--batch-size", "8", "--augment", "none")
    command = launch_command(backbone, name, run_dir, *extra)
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=ENV)


def test_two_processes_train_like_one_with_the_whole_batch(make_backbone, tmp_path):
    backbone = make_backbone("vit", IMAGE_SIZE)  # no BatchNorm: per-process statistics would differ
    name = unique_name("ddp")
    result = launch_two_processes(backbone, name, tmp_path / "ddp")
    assert result.returncode == 0, result.stderr[-3000:]

    [model] = bentoml.models.list(name)  # exactly one model, saved by the main process
    assert result.stdout.count("saved ") == 1
    assert [
        line.split()[1] for line in result.stdout.splitlines() if line.startswith("epoch ")
    ] == [
        "1/2",
        "2/2",
    ]
    # 48 images, 8 per process, 2 processes: 3 steps an epoch; plain lines, as stderr is no terminal
    assert "epoch 1: 3/3 (" in result.stderr and "\x1b[" not in result.stderr
    assert (tmp_path / "ddp" / "report.json").exists()

    whole = train(
        TrainConfig(
            **SETTINGS,
            backbone=str(backbone),
            batch_size=16,
            name=unique_name("one"),
            output_dir=tmp_path / "one",
        )  # fmt: skip
    )
    ddp_weights, whole_weights = stored_tensors(model.tag), stored_tensors(whole.tag)
    for key, tensor in whole_weights.items():
        torch.testing.assert_close(ddp_weights[key], tensor, rtol=1e-4, atol=1e-5, msg=key)
    stored = bentoml.models.get(model.tag).info.metadata
    assert stored["validation"]["n"] == whole.metadata.validation.n  # gathered, not duplicated
    assert stored["validation"]["accuracy"] == whole.metadata.validation.accuracy

    half = train(
        TrainConfig(
            **SETTINGS,
            backbone=str(backbone),
            batch_size=8,
            name=unique_name("half"),
            output_dir=tmp_path / "half",
        )  # fmt: skip
    )
    differs = stored_tensors(half.tag)
    assert any(
        not torch.allclose(differs[key], tensor, atol=1e-4) for key, tensor in whole_weights.items()
    )  # one process with 8 per step is a different run: the comparison above can fail


def stored(name: str) -> list:
    try:
        return bentoml.models.list(name)
    except bentoml.exceptions.NotFound:
        return []


@pytest.mark.parametrize("whom", ["process 1", "launcher"])
def test_sigterm_stops_both_processes_at_the_same_step(make_backbone, tmp_path, whom):
    """SIGTERM to process 1 alone, or to the launcher (as Kubernetes stops a pod), which passes
    it on: through Accelerate's trigger both processes stop at the same step (none waits
    forever in the next all-reduce), both write the checkpoint, and --resume finishes the run."""
    backbone = make_backbone("vit", IMAGE_SIZE)
    name, run_dir = unique_name("ddp-stop"), tmp_path / "run"
    extra = ("--epochs", "3", "--batch-size", "2")  # 12 steps an epoch
    with (tmp_path / "err").open("w") as stderr:
        launcher = subprocess.Popen(
            launch_command(backbone, name, run_dir, *extra),
            cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True, env=ENV,
        )  # fmt: skip
        for line in launcher.stdout:
            if line.startswith("epoch 1/3"):
                break
        if whom == "launcher":
            launcher.send_signal(signal.SIGTERM)
        else:
            [second] = [
                child
                for child in psutil.Process(launcher.pid).children(recursive=True)
                if child.environ().get("RANK") == "1"
            ]
            second.send_signal(signal.SIGTERM)
        stdout = launcher.stdout.read()
        launcher.wait(timeout=300)
    errors = (tmp_path / "err").read_text()
    checkpoint = run_dir / "checkpoint"
    stopped = (
        f"visiontune: error: interrupted; checkpoint saved in {checkpoint}, continue with --resume"
    )
    assert errors.count(stopped) == 2, errors[-3000:]  # each process, after its checkpoint part
    assert "epoch 3/3" not in stdout and stored(name) == []
    progress = json.loads((checkpoint / "progress.json").read_text())
    assert sorted(p.name for p in checkpoint.glob("losses_*.json")) == [
        "losses_0.json",
        "losses_1.json",
    ]

    resumed = launch_two_processes(backbone, name, run_dir, *extra, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"epoch {progress['epoch']}/3" not in resumed.stdout and "epoch 3/3" in resumed.stdout
    assert len(stored(name)) == 1 and resumed.stdout.count("saved ") == 1


def machine_command(machine: int, port: int, backbone: Path, name: str, run_dir: Path) -> list:
    """One node of two, as a multi-node job starts it: `accelerate launch --num_machines 2
    --machine_rank N` (one process each), the same `visiontune train` on every node."""
    return [
        ACCELERATE, "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
        "--machine_rank", str(machine), "--main_process_ip", "127.0.0.1",
        "--main_process_port", str(port), "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "visiontune", "train",
        "--data", "digits", "--classes", "0,1,2", "--per-class", "16",
        "--backbone", str(backbone), "--strategy", "full", "--image-size", str(IMAGE_SIZE),
        "--test-fraction", "0", "--name", name, "--output-dir", str(run_dir),
        "--epochs", "3", "--batch-size", "2", "--augment", "none",
        "--checkpoint-every", "0.0001", "--resume-if-present",
    ]  # fmt: skip


def start_machines(backbone: Path, name: str, run_dir: Path, logs: Path) -> list:
    port = free_port()
    logs.mkdir(exist_ok=True)
    return [
        subprocess.Popen(
            machine_command(machine, port, backbone, name, run_dir),
            cwd=REPO,
            env=ENV,
            text=True,
            stdout=subprocess.PIPE,
            stderr=(logs / f"machine-{machine}.err").open("w"),
        )
        for machine in (0, 1)
    ]


def kill_tree(launcher: subprocess.Popen) -> None:
    """SIGKILL to a launcher and its workers (torch's launcher starts them in sessions of
    their own), as when the node under a pod is lost."""
    processes = [psutil.Process(launcher.pid), *psutil.Process(launcher.pid).children(True)]
    for process in processes:
        process.kill()
    psutil.wait_procs(processes, timeout=30)
    launcher.wait(timeout=30)


def test_two_machines_store_once_and_a_lost_machine_resumes_from_the_checkpoint(
    make_backbone, tmp_path
):
    """Two `accelerate launch` nodes on localhost. Node 1 is killed outright after the
    first epoch (a lost pod), then node 0, which would otherwise wait out the collective's
    timeout for its peer (the job restarting every pod, as the operator does); both
    started again with the same command continue from the last periodic checkpoint."""
    backbone = make_backbone("vit", IMAGE_SIZE)
    name, run_dir = unique_name("nodes"), tmp_path / "run"
    first = start_machines(backbone, name, run_dir, tmp_path / "first")
    for line in first[0].stdout:
        if line.startswith("epoch 1/3"):
            break
    progress = run_dir / "checkpoint" / "progress.json"
    deadline = time.monotonic() + 120
    while json.loads(progress.read_text())["epoch"] < 1:  # a checkpoint in the second epoch
        assert time.monotonic() < deadline, "no checkpoint written in the second epoch"
        time.sleep(0.05)
    for machine in (1, 0):
        kill_tree(first[machine])
    assert stored(name) == []

    again = start_machines(backbone, name, run_dir, tmp_path / "again")
    outputs = [machine.communicate(timeout=300)[0] for machine in again]
    errors = (tmp_path / "again" / "machine-0.err").read_text()
    assert [machine.returncode for machine in again] == [0, 0], errors[-3000:]
    assert "epoch 1/3" not in outputs[0] and "epoch 3/3" in outputs[0]
    assert sum(output.count("saved ") for output in outputs) == 1  # rank 0 alone stores
    assert len(stored(name)) == 1
    assert not (run_dir / "checkpoint").exists()  # removed once the model is stored
