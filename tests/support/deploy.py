"""What the deploy tests share: rendering the overlays, and the checkers in .venv-tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path

import yaml

from tests.support import REPO
from tests.support.needs import need

DEPLOY = REPO / "deploy"
OVERLAYS = ("gpu", "cpu", "local", "canary", "canary-mirror")
TOOLS = REPO / ".venv-tools" / "bin"
# The Kubernetes release whose schemas kubernetes-validate checks against.
KUBERNETES_VERSION = "1.33.0"
CRD_VALIDATOR = DEPLOY / "tools" / "crd" / "validate-crds.mjs"
# Series that Prometheus or an exporter other than the service provides.
EXTERNAL_METRICS = {"up", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"}


def tool(name: str) -> Path:
    path = TOOLS / name
    need(path.exists(), f"{path}: run `make tools`")
    return path


def run(command: list, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, **kwargs)


@cache
def render(target: str) -> str:
    """`kubectl kustomize` of an overlay (or any kustomization under deploy/)."""
    need(shutil.which("kubectl") is not None, "kubectl (with kustomize)")
    folder = DEPLOY / "k8s" / "overlays" / target if target in OVERLAYS else DEPLOY / target
    result = run(["kubectl", "kustomize", folder])
    assert result.returncode == 0, result.stderr
    return result.stdout


def render_with_components(folder: Path, overlay: str, components: list[str]) -> list[dict]:
    """An overlay with components of deploy/k8s/components added, as a user's kustomization
    in ``folder`` would (kustomize takes them by relative path only)."""
    need(shutil.which("kubectl") is not None, "kubectl (with kustomize)")
    k8s = os.path.relpath(DEPLOY / "k8s", folder)
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f"{k8s}/overlays/{overlay}"],
        "components": [f"{k8s}/components/{name}" for name in components],
    }
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    result = run(["kubectl", "kustomize", folder])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def objects(target: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(render(target)) if doc]


def one(target: str, kind: str) -> dict:
    (found,) = [o for o in objects(target) if o["kind"] == kind]
    return found


def validate_crds(docs: list[dict]) -> subprocess.CompletedProcess:
    need((CRD_VALIDATOR.parent / "node_modules").exists(), "the CRD validator: run `make tools`")
    return run(["node", CRD_VALIDATOR], input=json.dumps(docs))


def promql_metrics() -> dict[str, list[str]]:
    """Metric name -> where it is used, over the alert rules, the canary analysis and the
    dashboard."""
    result = run(
        [
            tool("python"),
            DEPLOY / "tools" / "promql_metrics.py",
            DEPLOY / "k8s" / "base" / "prometheusrule.yaml",
            DEPLOY / "k8s" / "overlays" / "canary" / "analysistemplate.yaml",
            DEPLOY / "grafana" / "visiontune.json",
        ]
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def checkov_manifests(path: Path, config: Path) -> subprocess.CompletedProcess:
    """checkov's Kubernetes checks on rendered manifests, with the skips of ``config``."""
    return run(
        [
            tool("checkov"),
            "--file", path,
            "--framework", "kubernetes",
            "--config-file", config,
            "--compact", "--quiet", "--skip-download",
        ]
    )  # fmt: skip


def checkov_dockerfile(dockerfile: Path) -> subprocess.CompletedProcess:
    """checkov's Dockerfile checks, with the project's skips (deploy/checkov.yaml)."""
    return run(
        [
            tool("checkov"),
            "--file", dockerfile,
            "--framework", "dockerfile",
            "--config-file", DEPLOY / "checkov.yaml",
            "--compact", "--quiet", "--skip-download",
        ]
    )  # fmt: skip
