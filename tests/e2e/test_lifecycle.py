"""End to end, the loop a user lives in: train, promote, deploy, retrain, redeploy, roll back.

Everything runs for real through the `visiontune` command: the model store and
its stage registry, the gate, the bento and podman image builds, the pods of
`podman kube play` behind the local release's nginx. A client keeps sending
requests to the published URL during each switch, and every answer must be a
200 (first from the old model, then from the new one, never back).
Tiny ResNet at 16 px on four digit classes; the image build cache of
deploy/local is reused, and each model's image is removed at the end.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import bentoml
import pytest

from contract.stages import resolve
from tests.support import REPO
from tests.support.builders import IMAGE_SIZE, digit_folder, lifecycle_v1_config
from tests.support.images import shuffle_labels
from tests.support.servers import free_port
from tests.support.traffic import Traffic, assert_switched, served_tag
from training.config import TrainConfig

pytestmark = [pytest.mark.e2e, pytest.mark.podman, pytest.mark.timeout(3000)]


def visiontune(*args, timeout: int = 1800) -> subprocess.CompletedProcess:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "visiontune", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"},
    )
    print(f"visiontune {args[0]}: {time.monotonic() - started:.0f}s, exit {result.returncode}")
    return result


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def v1_config(tmp_path_factory, make_backbone) -> TrainConfig:
    return lifecycle_v1_config(
        tmp_path_factory.mktemp("e2e-lifecycle"), make_backbone("resnet", IMAGE_SIZE), "e2e-life"
    )


@pytest.fixture(scope="module")
def port(v1_config):
    """The published port; the deployment, and the images built for it, go at the end."""
    port = free_port()
    yield port
    ok(visiontune("deploy", "--stop", "--port", port))
    pods = subprocess.run(["podman", "pod", "ls", "--format", "{{.Name}}"], capture_output=True)
    assert f"visiontune-{port}-" not in pods.stdout.decode()
    for model in bentoml.models.list(v1_config.name):
        image = f"localhost/visiontune-cpu:{model.tag.version}"
        subprocess.run(["podman", "rmi", "--ignore", image], capture_output=True)


def test_train_promote_deploy_retrain_redeploy_refuse_roll_back(v1_config, port, tmp_path):
    from training.train import train

    started = time.monotonic()
    name = v1_config.name
    v1 = str(train(v1_config).tag)
    ok(visiontune("promote", v1))
    deployed = ok(visiontune("deploy", "--model", f"{name}@production", "--port", port))
    url = deployed.split("serving at ")[1].strip()
    assert url == f"http://127.0.0.1:{port}"
    assert served_tag(url) == v1

    more = digit_folder(tmp_path / "more", 40, start=20)
    retrained = ok(
        visiontune(
            "retrain",
            "--data",
            more,
            "--champion",
            f"{name}@production",
            "--epochs",
            4,
            "--output-dir",
            tmp_path / "retrain",
        )  # fmt: skip
    )
    v2 = retrained.split("challenger ", 1)[1].split()[0]
    assert str(resolve(f"{name}@production")) == v2
    with Traffic(url) as traffic:
        ok(visiontune("deploy", "--model", f"{name}@production", "--port", port))
    assert_switched(traffic, v1, v2)
    assert served_tag(url) == v2

    shuffled = shuffle_labels(digit_folder(tmp_path / "shuffled", 40, start=20))
    refused = visiontune(
        "retrain", "--data", shuffled, "--replace", "--champion", f"{name}@production",
        "--eval-data", digit_folder(tmp_path / "eval", 15, start=100), "--epochs", 4,
        "--output-dir", tmp_path / "shuffled-run",
    )  # fmt: skip
    assert refused.returncode == 3, refused.stdout + refused.stderr[-3000:]
    assert str(resolve(f"{name}@production")) == v2
    assert served_tag(url) == v2

    # A rollout that fails half way (the old model's pod can't be ready in 1 s): one
    # line, exit 2, production and the serving pod unchanged.
    failed = visiontune("rollback", name, "--redeploy", "--port", port, "--ready-timeout", 1)
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.strip().startswith("visiontune: error: ")
    assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    assert "the serving pod is unchanged" in failed.stderr
    assert str(resolve(f"{name}@production")) == v2
    assert served_tag(url) == v2

    with Traffic(url) as traffic:
        ok(visiontune("rollback", name, "--redeploy", "--port", port))
    assert_switched(traffic, v2, v1)
    assert str(resolve(f"{name}@production")) == v1
    assert served_tag(url) == v1
    print(f"lifecycle end to end: {time.monotonic() - started:.0f}s")
