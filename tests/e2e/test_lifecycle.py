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

import io
import os
import subprocess
import sys
import threading
import time

import bentoml
import httpx
import pytest

from contract.stages import resolve
from tests.support import REPO
from tests.support.builders import CLASSES, IMAGE_SIZE, digit_folder, lifecycle_v1_config
from tests.support.images import digit_images, shuffle_labels
from tests.support.servers import free_port
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


def pngs() -> list[bytes]:
    """Two unseen images of each class."""
    out = []
    for label in CLASSES:
        for image in digit_images(int(label), 2, start=150):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            out.append(buffer.getvalue())
    return out


def classify(url: str, images: list[bytes]) -> httpx.Response:
    files = [("images", (f"digit-{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return httpx.post(f"{url}/classify", files=files, timeout=60)


def served_tag(url: str) -> str:
    """The one tag that /model and every answer name."""
    response = classify(url, pngs())
    assert response.status_code == 200, response.text
    (tag,) = {prediction["model"] for prediction in response.json()}
    assert httpx.get(f"{url}/model", timeout=30).json()["tag"] == tag
    return tag


class Traffic(threading.Thread):
    """A client sending one image at a time, on a new connection each, until stopped."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.answers: list[tuple[int, str]] = []  # (status, tag) in order
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.image = pngs()[:1]

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                response = classify(self.url, self.image)
                tag = response.json()[0]["model"] if response.status_code == 200 else ""
                self.answers.append((response.status_code, tag))
            except (httpx.HTTPError, ValueError) as err:
                self.failures.append(f"{type(err).__name__}: {err}")
            time.sleep(0.05)

    def __enter__(self) -> Traffic:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.join(timeout=120)

    def tags(self) -> list[str]:
        """The tags that answered, each once, in the order they took over."""
        seen: list[str] = []
        for _, tag in self.answers:
            if not seen or seen[-1] != tag:
                seen.append(tag)
        return seen


def assert_switched(traffic: Traffic, old: str, new: str) -> None:
    assert not traffic.failures, traffic.failures[:5]
    statuses = {status for status, _ in traffic.answers}
    assert statuses == {200}, [a for a in traffic.answers if a[0] != 200][:5]
    assert traffic.tags() == [old, new]
    print(f"{len(traffic.answers)} requests during the switch, all 200")


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
