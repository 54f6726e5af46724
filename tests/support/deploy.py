"""What the deploy tests share: rendering the overlays, and the checkers in .venv-tools."""

from __future__ import annotations

import json
import shutil
import subprocess
from functools import cache
from pathlib import Path

import yaml

from tests.support import REPO
from tests.support.needs import need

DEPLOY = REPO / "deploy"
OVERLAYS = ("gpu", "cpu", "local", "canary")
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
