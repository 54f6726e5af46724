"""Fixtures of the service tier: a tiny ResNet trained on the digits with `visiontune
train`'s own code into the test model store, and the real servers most tests share."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.builders import digits_classifier_config
from tests.support.faults import FAULTY_SERVICE
from tests.support.servers import API_TOKEN, LIMITS, serving

# The faulty server's limits: low enough for its tests to reach each of them cheaply.
FAULTY_LIMITS = {
    **LIMITS,
    "VISIONTUNE_MAX_CONCURRENCY": "3",
    "VISIONTUNE_TIMEOUT_S": "5",
    "VISIONTUNE_MAX_LATENCY_MS": "1000",
    "VISIONTUNE_MAX_REQUEST_PIXELS": LIMITS["VISIONTUNE_MAX_PIXELS"],
}


@pytest.fixture(scope="session")
def digits_model(make_backbone, tmp_path_factory) -> str:
    from training.train import train

    backbone = make_backbone("resnet", image_size=16)
    run = tmp_path_factory.mktemp("digits-run")
    return str(train(digits_classifier_config(backbone, "digits-serve", run, epochs=3)).tag)


@pytest.fixture(scope="session")
def digit_files(digits_folder) -> dict[str, list[Path]]:
    """The digits folder's PNG files by label."""
    return {folder.name: sorted(folder.glob("*.png")) for folder in sorted(digits_folder.iterdir())}


@pytest.fixture(scope="session")
def server(digits_model, tmp_path_factory):
    """One worker, adaptive batching on, small input limits."""
    env = {"VISIONTUNE_MODEL": digits_model, **LIMITS}
    with serving(tmp_path_factory.mktemp("home"), env) as running:
        yield running


@pytest.fixture(scope="session")
def guarded_server(digits_model, tmp_path_factory):
    """The default input limits, and bearer auth on (the token read from a file)."""
    home = tmp_path_factory.mktemp("guarded-home")
    token = home / "token"
    token.write_text(API_TOKEN + "\n")
    env = {"VISIONTUNE_MODEL": digits_model, "VISIONTUNE_API_TOKEN_FILE": str(token)}
    with serving(home, env) as running:
        running.client.headers["authorization"] = f"Bearer {API_TOKEN}"
        yield running


@pytest.fixture(scope="session")
def faulty_server(digits_model, tmp_path_factory):
    """The service with faults injected by marked images (tests/support/faulty_service.py),
    at ``FAULTY_LIMITS``."""
    env = {"VISIONTUNE_MODEL": digits_model, **FAULTY_LIMITS}
    with serving(tmp_path_factory.mktemp("home-faulty"), env, service=FAULTY_SERVICE) as running:
        yield running
