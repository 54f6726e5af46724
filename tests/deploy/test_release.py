"""`visiontune deploy`, offline: the commands a Kubernetes release runs (``--dry-run``), the
manifests they apply, the pod a local release plays, and the errors for bad flags."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.support import REPO
from tests.support.builders import store_random_classifier
from tests.support.cli import assert_one_line_error
from tests.support.deploy import DEPLOY, KUBERNETES_VERSION, run, tool
from visiontune.lifecycle.release import Slot, render_local

REGISTRY = "ghcr.io/example"


def visiontune(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "visiontune", *map(str, args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ,
    )


@pytest.fixture(scope="module")
def stored_tag(tmp_path_factory) -> str:
    return store_random_classifier(tmp_path_factory.mktemp("resnet"), "deploy-release-test")


def plan(tag: str, overlay: str) -> list[list[str]]:
    result = visiontune(
        "deploy", "--target", "kubernetes", "--model", tag, "--registry", REGISTRY,
        "--overlay", overlay, "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [shlex.split(line) for line in result.stdout.splitlines() if not line.startswith("#")]


@pytest.mark.parametrize(("overlay", "bento"), [("gpu", "visiontune"), ("cpu", "visiontune-cpu")])
def test_dry_run_prints_build_push_apply_and_rollout(stored_tag, overlay, bento):
    version = stored_tag.split(":")[1]
    image = f"{REGISTRY}/{bento}:{version}"
    folder = str(DEPLOY / "k8s" / "overlays" / overlay)
    commands = plan(stored_tag, overlay)
    names = [program(command) for command in commands]
    expected = ["bentoml", "bentoml", "podman", "(cd", "kubectl", "kubectl", "kubectl"]
    if overlay == "cpu":
        expected = ["build-base-image.sh", "stage-torch-wheel.sh", *expected]
    assert names == expected
    build, containerize, push, edit, apply, status, forward = commands[-7:]
    assert build[0] == f"VISIONTUNE_MODEL={stored_tag}"
    bentofile = "bentofile.yaml" if overlay == "gpu" else "bentofile-cpu.yaml"
    assert build[2:] == ["build", "-f", bentofile, "--version", version]
    assert containerize[1:3] == ["containerize", f"{bento}:{version}"]
    assert f"env=VISIONTUNE_MODEL={stored_tag}" in containerize
    assert containerize[-2:] == ["--image-tag", image]
    assert push == ["podman", "push", image]
    assert edit == [
        "(cd",
        folder,
        "&&",
        "kustomize",
        "edit",
        "set",
        "image",
        f"visiontune={image})",
    ]
    assert apply == ["kubectl", "apply", "-k", folder]
    assert status == ["kubectl", "-n", "visiontune", "rollout", "status", "deployment/visiontune",
                      "--timeout", "10m"]  # fmt: skip
    assert forward[:5] == ["kubectl", "-n", "visiontune", "port-forward", "service/visiontune"]


def program(command: list[str]) -> str:
    """The program a printed command runs (after any VAR=value)."""
    program = next(part for part in command if "=" not in part)
    return program.rsplit("/", 1)[-1]


@pytest.mark.parametrize("overlay", ["gpu", "cpu"])
def test_the_image_the_plan_sets_is_what_the_overlay_renders(stored_tag, overlay, tmp_path):
    """The edit `kustomize edit set image` makes, on a copy of deploy/k8s: the rendered
    Deployment runs the pushed image and still validates."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    (*_, edit, _, _, _) = plan(stored_tag, overlay)
    name, image = edit[-1].rstrip(")").split("=", 1)
    copy = tmp_path / "k8s"
    shutil.copytree(DEPLOY / "k8s", copy)
    kustomization = copy / "overlays" / overlay / "kustomization.yaml"
    config = yaml.safe_load(kustomization.read_text())
    new_name, new_tag = image.rsplit(":", 1)
    config["images"] = [{"name": name, "newName": new_name, "newTag": new_tag}]
    kustomization.write_text(yaml.safe_dump(config))
    rendered = run(["kubectl", "kustomize", kustomization.parent])
    assert rendered.returncode == 0, rendered.stderr
    docs = [doc for doc in yaml.safe_load_all(rendered.stdout) if doc]
    (deployment,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == image
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered.stdout)
    result = run([tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", path])
    assert result.returncode == 0, result.stdout + result.stderr


def test_local_slot_is_the_local_overlay_renamed_on_its_own_port(tmp_path):
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl (with kustomize) is not installed")
    slot = Slot(3300, "green", 41234, "digits:abc", "localhost/visiontune-cpu:abc")
    deployment = yaml.safe_load(render_local(slot))
    assert deployment["metadata"]["name"] == "visiontune-3300-green"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "localhost/visiontune-cpu:abc"
    assert container["imagePullPolicy"] == "Never"
    (port,) = container["ports"]
    assert (port["hostIP"], port["hostPort"]) == ("127.0.0.1", 41234)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    path = tmp_path / "slot.yaml"
    path.write_text(render_local(slot))
    result = run([tool("kubernetes-validate"), "-k", KUBERNETES_VERSION, "--strict", path])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--target", "kubernetes"], "--target kubernetes needs --registry"),
        (["--dry-run"], "--dry-run and --registry are for --target kubernetes"),
        (["--port", "70000"], "--port must be a TCP port"),
        (["--model", "no-such-model:v1", "--target", "kubernetes", "--registry", "r", "--dry-run"],
         "no model no-such-model:v1"),
        (["--model", "no-such-model@production", "--target", "kubernetes", "--registry", "r",
          "--dry-run"], "no model named no-such-model"),
    ],
)  # fmt: skip
def test_bad_flags_and_unknown_models_are_one_line_errors(args, fragment):
    assert_one_line_error(visiontune("deploy", *args), fragment)
