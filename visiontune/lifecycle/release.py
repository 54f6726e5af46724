"""Releasing a stored model on this machine: build its image, switch to it, check its tag.

Local (``visiontune deploy``, podman on this machine), blue/green behind nginx::

    client -> 127.0.0.1:PORT  nginx (visiontune.lifecycle.proxy)
                  |  (one upstream at a time)
                  +--> 127.0.0.1:P1  pod visiontune-PORT-blue   (serving)
                  +..> 127.0.0.1:P2  pod visiontune-PORT-green  (the new release)

1. the model's bento and CPU image (``deploy/local/build-image.sh``, the
   ``make image`` path: base image built here, nothing pulled);
2. ``podman kube play`` of ``deploy/k8s/overlays/local`` as the slot that is
   not serving, on a free loopback port;
3. wait until its ``/readyz`` answers and its ``/model`` names the new tag;
4. point nginx at it (graceful reload) and check the published URL answers
   with the new tag;
5. once nginx's old workers have finished their requests, remove the old pod.

A failure before step 4 removes the new pod and leaves the old one serving;
the stage registry is never touched here. What is serving is recorded in
``build/release-local/PORT/state.json``.

The Kubernetes release (``--target kubernetes``) is ``visiontune.lifecycle.cluster``;
it shares ``run``, ``model_answers`` and ``wait_for`` with this module.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import yaml

from visiontune.errors import CommandError
from visiontune.lifecycle.proxy import Proxy
from visiontune.ports import free_port

# A release builds from a checkout of this repository: the bentofiles (whose build context
# is the checkout: service/ and contract/ as source), deploy/'s scripts and overlays.
REPO = Path(__file__).resolve().parents[2]
OVERLAYS = REPO / "deploy" / "k8s" / "overlays"
CHECKOUT_FILES = ("bentofile.yaml", "bentofile-cpu.yaml", "deploy/k8s/overlays", "deploy/local")
BENTOML = Path(sys.executable).parent / "bentoml"
LOCAL_IMAGE = "localhost/visiontune-cpu"
SLOTS = ("blue", "green")


class ReleaseError(CommandError):
    """A release that stopped; what was serving before still serves."""


def require_checkout() -> None:
    """Stop with one line where visiontune runs from an installed wheel, not a checkout."""
    missing = next((name for name in CHECKOUT_FILES if not (REPO / name).exists()), None)
    if missing is not None:
        raise ReleaseError(
            f"releasing builds the image from a checkout of the visiontune repository, and "
            f"{REPO} is not one (no {missing}): run it from a clone installed with "
            "`make install` (or `pip install -e .`)"
        )


def run(command: list, *, timeout: float, cwd: Path = REPO, env: dict | None = None) -> str:
    """Run a command; its stdout, or a ReleaseError with the last line it wrote to stderr."""
    command = [str(part) for part in command]
    try:
        result = subprocess.run(
            command, cwd=cwd, env={**os.environ, **(env or {})},
            capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ReleaseError(f"{Path(command[0]).name} took over {timeout:.0f}s") from None
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines() or ["(no output)"]
        raise ReleaseError(f"{Path(command[0]).name} {command[1]} failed: {lines[-1]}")
    return result.stdout


def model_answers(url: str, tag: str, timeout: float = 5) -> bool:
    """Whether the service at ``url`` is ready and serves ``tag``."""
    try:
        ready = httpx.get(f"{url}/readyz", timeout=timeout).status_code == 200
        return ready and httpx.get(f"{url}/model", timeout=timeout).json().get("tag") == tag
    except (httpx.HTTPError, ValueError):
        return False


@dataclass
class Slot:
    """One of the two pods a local release alternates between."""

    port: int
    color: str
    host_port: int = 0
    tag: str = ""
    image: str = ""

    @property
    def name(self) -> str:
        return f"visiontune-{self.port}-{self.color}"

    @property
    def container(self) -> str:
        return f"{self.name}-pod-0-classifier"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.host_port}"


@dataclass
class LocalRelease:
    """The local deployment published on ``127.0.0.1:port``."""

    port: int = 3300
    ready_timeout: float = 300
    rebuild: bool = False
    folder: Path = field(init=False)

    def __post_init__(self):
        self.folder = REPO / "build" / "release-local" / str(self.port)
        self.proxy = Proxy(self.folder, self.port)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def deploy(self, tag: str) -> str:
        """Roll ``tag`` out with no failed request; the URL it is served at."""
        with self._locked():
            image = build_image(tag, self.rebuild)
            serving = self.serving()
            new = Slot(self.port, _other(serving), free_port(), tag, image)
            self._start(new)
            try:
                self.proxy.switch(new.host_port)
            except BaseException:
                self._remove(new)
                raise
            self._write_state(new)
            wait_for(lambda: model_answers(self.url, tag), 30, f"{self.url} to serve {tag}")
            if serving is not None:
                self.proxy.wait_drained()
                self._remove(serving)
        return self.url

    def stop(self) -> None:
        """Remove both pods and the proxy."""
        with self._locked():
            self.proxy.stop()
            for color in SLOTS:
                self._remove(Slot(self.port, color))
            (self.folder / "state.json").unlink(missing_ok=True)

    def serving(self) -> Slot | None:
        """The slot nginx forwards to, as last recorded."""
        try:
            state = json.loads((self.folder / "state.json").read_text())
        except FileNotFoundError:
            return None
        return Slot(self.port, **state)

    def _start(self, slot: Slot) -> None:
        """The slot's pod, ready and serving its tag; removed again if it never gets there."""
        self._remove(slot)  # what a failed release may have left in the slot not serving
        manifest = self.folder / f"{slot.color}.yaml"
        manifest.write_text(render_local(slot))
        try:
            run(["podman", "kube", "play", "--replace", manifest], timeout=300)
            self._wait_ready(slot)
        except BaseException:
            self._remove(slot)
            raise

    def _wait_ready(self, slot: Slot) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while not model_answers(slot.url, slot.tag):
            if _restarts(slot.container) != 0:
                raise ReleaseError(
                    f"{slot.tag} exited during start-up (podman logs {slot.container}); "
                    "the serving pod is unchanged"
                )
            if time.monotonic() > deadline:
                raise ReleaseError(
                    f"{slot.tag} not ready after {self.ready_timeout:.0f}s; "
                    "the serving pod is unchanged"
                )
            time.sleep(1)

    def _remove(self, slot: Slot) -> None:
        subprocess.run(
            ["podman", "pod", "rm", "--force", "--ignore", "--time", "30", f"{slot.name}-pod-0"],
            capture_output=True,
            timeout=120,
        )

    def _write_state(self, slot: Slot) -> None:
        state = {k: getattr(slot, k) for k in ("color", "host_port", "tag", "image")}
        temporary = self.folder / "state.json.new"
        temporary.write_text(json.dumps(state, indent=2))
        os.replace(temporary, self.folder / "state.json")

    @contextmanager
    def _locked(self):
        """One release at a time per published port."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "lock", "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ReleaseError(f"another release on port {self.port} is running") from None
            yield


def _other(serving: Slot | None) -> str:
    return SLOTS[1] if serving is not None and serving.color == SLOTS[0] else SLOTS[0]


def _restarts(container: str) -> int:
    result = subprocess.run(
        ["podman", "inspect", "--format", "{{.RestartCount}}", container],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return int(result.stdout.strip() or 0)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise ReleaseError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.5)


def build_image(tag: str, rebuild: bool = False) -> str:
    """The CPU image serving ``tag``, built the ``make image`` way; its name.

    One image per model version, kept: a rollback runs the very image that
    served before, without a build. ``rebuild`` builds it again (new code).
    """
    image = f"{LOCAL_IMAGE}:{tag.split(':')[1]}"
    if not rebuild and subprocess.run(["podman", "image", "exists", image]).returncode == 0:
        return image
    env = {
        "VISIONTUNE_MODEL": tag,
        "IMAGE": image,
        "BENTOML": str(BENTOML),
        "PYTHON": sys.executable,
    }
    run([REPO / "deploy" / "local" / "build-image.sh"], timeout=3600, env=env)
    return image


def render_local(slot: Slot) -> str:
    """The local overlay as the slot's pod: its name, image and loopback port."""
    rendered = run(["kubectl", "kustomize", OVERLAYS / "local"], timeout=60)
    (deployment,) = [doc for doc in yaml.safe_load_all(rendered) if doc]
    deployment["metadata"]["name"] = slot.name
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    container["image"] = slot.image
    (port,) = container["ports"]
    port["hostPort"] = slot.host_port
    return yaml.safe_dump(deployment, sort_keys=False)
