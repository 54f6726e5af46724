"""`bentoml build` of both bentofiles, offline, and lint of the Dockerfiles it generates."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO
from tests.support.builders import store_random_classifier, unique_name
from tests.support.deploy import DEPLOY, checkov_dockerfile, run, tool
from tests.support.store import copy_model
from visiontune.lifecycle import registry

# Any attempt to reach the network fails fast: the build must not need it.
OFFLINE = {
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "PIP_NO_INDEX": "1",
    "UV_OFFLINE": "1",
    "HF_HUB_OFFLINE": "1",
}
BENTOFILES = {"visiontune": "bentofile.yaml", "visiontune-cpu": "bentofile-cpu.yaml"}


@pytest.fixture(scope="module")
def stored_tag(tmp_path_factory) -> str:
    """A tiny random digits classifier in the test store (building needs no trained one)."""
    return store_random_classifier(tmp_path_factory.mktemp("resnet"), "deploy-build-test")


@pytest.fixture(scope="module", params=sorted(BENTOFILES))
def bento(request, stored_tag) -> Path:
    """The folder of a freshly built bento."""
    name = request.param
    if name == "visiontune-cpu":
        staged = run([DEPLOY / "local" / "stage-torch-wheel.sh"])
        assert staged.returncode == 0, staged.stderr
    return build(name, stored_tag)


def build(name: str, model: str) -> Path:
    """``bentoml build`` of bento ``name`` with ``VISIONTUNE_MODEL=model``: the bento's folder."""
    bentoml = Path(sys.executable).parent / "bentoml"
    env = {**os.environ, **OFFLINE, "VISIONTUNE_MODEL": model}
    built = run([bentoml, "build", "-f", BENTOFILES[name], "--output", "tag"], cwd=REPO, env=env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    assert tag.startswith(f"{name}:")
    return Path(os.environ["BENTOML_HOME"], "bentos", *tag.split(":"))


def packed_models(bento: Path) -> list[str]:
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    (service,) = info["services"]
    assert info["service"] == "service:ImageClassifier"
    return [model["tag"] for model in service["models"]]


def test_bento_packs_the_model_by_tag(bento, stored_tag):
    assert packed_models(bento) == [stored_tag]


def test_a_stage_reference_packs_the_production_version(stored_tag):
    name = unique_name("deploy-staged")
    production = copy_model(stored_tag, name)
    registry.promote(str(production), "ship it")
    copy_model(stored_tag, name)  # a newer candidate: NAME:latest, not NAME@production
    bento = build("visiontune", f"{name}@production")
    assert packed_models(bento) == [str(production)]


def test_bento_holds_the_service_and_contract_only(bento):
    sources = {p.relative_to(bento / "src").parts[0] for p in (bento / "src").rglob("*.py")}
    assert sources == {"service", "contract"}


def test_torch_comes_from_the_right_build(bento):
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    wheels = [p.name for p in (bento / "env" / "python" / "wheels").glob("*.whl")]
    if bento.parent.name == "visiontune":
        assert "torch==2.13.0" in requirements.splitlines()
        assert wheels == []
    else:
        assert "torch" not in requirements
        assert wheels == ["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"]


def test_generated_dockerfile_passes_hadolint(bento):
    dockerfile = bento / "env" / "docker" / "Dockerfile"
    result = run([tool("hadolint"), "--config", DEPLOY / "hadolint.yaml", dockerfile])
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_dockerfile_passes_checkov(bento):
    dockerfile = bento / "env" / "docker" / "Dockerfile"
    result = checkov_dockerfile(dockerfile)
    assert result.returncode == 0, result.stdout[-4000:]


def test_generated_dockerfile_runs_as_the_bentoml_user(bento):
    lines = (bento / "env" / "docker" / "Dockerfile").read_text().splitlines()
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users[-1] == "bentoml"


def test_the_bento_packs_the_onnx_graph_the_runtimes_serve(stored_tag, tmp_path):
    """`visiontune optimize` before the build: the exported bento (what `containerize` and a
    push carry) holds the graph, so a container start converts nothing."""
    import tarfile

    import bentoml

    from training.optimize import optimize

    tag = str(copy_model(stored_tag, unique_name("deploy-onnx")))
    optimize(tag)
    name, version = tag.split(":")
    bento = build("visiontune", tag)
    archive = bentoml.export_bento(f"visiontune:{bento.name}", str(tmp_path / "bento.tar"), "tar")
    with tarfile.open(archive) as packed:
        members = {member.lstrip("./") for member in packed.getnames()}
    assert f"models/{name}/{version}/onnx/model.onnx" in members, sorted(members)[:40]
