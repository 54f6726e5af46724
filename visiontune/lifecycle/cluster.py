"""Releasing a stored model to Kubernetes with one of the cluster overlays.

    bentoml build (the overlay's bentofile, bento version = model version)
    -> bentoml containerize -> podman push REGISTRY/IMAGE:VERSION
    -> kustomize edit set image (in the overlay) -> kubectl apply -k
    -> kubectl rollout status -> GET /model through the Service (port-forward)

The Deployment rolls with ``maxUnavailable: 0``, so old pods serve until new
ones are ready. A rollout that fails, or a Service that answers with another
tag, is undone (``kubectl rollout undo``) and the release fails. ``plan()``
is every command as it would run, for ``visiontune deploy --dry-run``.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from visiontune.errors import CommandError
from visiontune.lifecycle.release import (
    BENTOML,
    OVERLAYS,
    REPO,
    ReleaseError,
    model_answers,
    run,
    wait_for,
)
from visiontune.ports import free_port

# The bentofile each cluster overlay's image is built from.
BUILDS = {"gpu": "bentofile.yaml", "cpu": "bentofile-cpu.yaml"}
ROLLOUT_TIMEOUT = "10m"


@dataclass
class ClusterRelease:
    """``tag`` rolled out with ``deploy/k8s/overlays/OVERLAY`` from ``registry``."""

    tag: str
    registry: str
    overlay: str = "gpu"

    def __post_init__(self):
        self.folder = OVERLAYS / self.overlay
        kustomization = yaml.safe_load((self.folder / "kustomization.yaml").read_text())
        self.namespace = kustomization["namespace"]
        self.version = self.tag.split(":")[1]
        bentofile = yaml.safe_load((REPO / BUILDS[self.overlay]).read_text())
        self.bento = f"{bentofile['name']}:{self.version}"
        self.image = f"{self.registry.rstrip('/')}/{bentofile['name']}:{self.version}"

    def commands(self) -> list[tuple[list[str], Path, dict]]:
        """The build, push and apply steps: (command, folder it runs in, extra env)."""
        model_env = {"VISIONTUNE_MODEL": self.tag}
        return [
            *self._cpu_build_inputs(),
            (
                [str(BENTOML), "build", "-f", BUILDS[self.overlay], "--version", self.version],
                REPO,
                model_env,
            ),
            (
                [
                    str(BENTOML), "containerize", self.bento, "--backend", "podman",
                    "--opt", f"env=VISIONTUNE_MODEL={self.tag}", "--image-tag", self.image,
                ],
                REPO,
                {},
            ),
            (["podman", "push", self.image], REPO, {}),
            (["kustomize", "edit", "set", "image", f"visiontune={self.image}"], self.folder, {}),
            (["kubectl", "apply", "-k", str(self.folder)], REPO, {}),
        ]  # fmt: skip

    def _cpu_build_inputs(self) -> list[tuple[list[str], Path, dict]]:
        """bentofile-cpu.yaml builds from a local base image and a staged torch CPU wheel."""
        if self.overlay != "cpu":
            return []
        scripts = REPO / "deploy" / "local"
        return [
            ([str(scripts / "build-base-image.sh")], REPO, {}),
            ([str(scripts / "stage-torch-wheel.sh")], REPO, {}),
        ]

    def rollout(self, verb: str) -> list[str]:
        command = ["kubectl", "-n", self.namespace, "rollout", verb, "deployment/visiontune"]
        return command + (["--timeout", ROLLOUT_TIMEOUT] if verb == "status" else [])

    def port_forward(self, port: int) -> list[str]:
        return [
            "kubectl",
            "-n",
            self.namespace,
            "port-forward",
            "service/visiontune",
            f"{port}:http",
        ]

    def plan(self) -> list[str]:
        """Every command, as a shell line, in the order a release runs them."""
        lines = [_shell(command, folder, env) for command, folder, env in self.commands()]
        lines.append(_shell(self.rollout("status")))
        lines.append(_shell(self.port_forward(free_port())) + " &")
        lines.append(f"# GET /model through the Service must answer {self.tag}")
        lines.append(f"# on a failed rollout or another tag: {_shell(self.rollout('undo'))}")
        return lines

    def deploy(self) -> None:
        """Build, push, apply and check; undo the rollout if it does not come up with the tag."""
        for tool in ("kustomize", "kubectl", "podman"):
            if shutil.which(tool) is None:
                raise CommandError(f"{tool} is not installed (needed by --target kubernetes)")
        for command, folder, env in self.commands():
            run(command, cwd=folder, env=env, timeout=3600)
        try:
            run(self.rollout("status"), timeout=900)
            self._check_service()
        except BaseException:
            subprocess.run(self.rollout("undo"), capture_output=True, timeout=120)
            raise

    def _check_service(self) -> None:
        port = free_port()
        forward = subprocess.Popen(
            self.port_forward(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: model_answers(url, self.tag), 60, f"the Service to answer {self.tag}")
        except ReleaseError:
            raise ReleaseError(
                f"the Service does not answer with {self.tag}; rollout undone"
            ) from None
        finally:
            forward.terminate()
            forward.wait(timeout=30)


def _shell(command: list[str], folder: Path = REPO, env: dict | None = None) -> str:
    line = shlex.join(command)
    if env:
        line = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()) + " " + line
    if folder != REPO:
        line = f"(cd {shlex.quote(str(folder))} && {line})"
    return line
