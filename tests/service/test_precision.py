"""VISIONTUNE_PRECISION on CPU: bf16 serves the same answers as fp32; fp16 refuses to start."""

from __future__ import annotations

import pytest

from tests.support.servers import LIMITS, START_TIMEOUT_S, Server, serving


@pytest.fixture(scope="module")
def bf16_server(digits_model, tmp_path_factory):
    env = {"VISIONTUNE_MODEL": digits_model, "VISIONTUNE_PRECISION": "bf16", **LIMITS}
    with serving(tmp_path_factory.mktemp("home-bf16"), env) as running:
        yield running


def test_bf16_on_cpu_agrees_with_fp32(server, bf16_server, digit_files):
    paths = [paths[30 + i] for paths in digit_files.values() for i in range(2)][:8]
    fp32 = server.classify(paths)
    bf16 = bf16_server.classify(paths)
    assert fp32.status_code == bf16.status_code == 200, bf16.text
    for a, b in zip(fp32.json(), bf16.json(), strict=True):
        assert a["label"] == b["label"]
        assert a["score"] == pytest.approx(b["score"], abs=0.05)
    serving = bf16_server.client.get("/model").json()["serving"]
    assert (serving["device"], serving["precision"]) == ("cpu", "bfloat16")
    assert server.client.get("/model").json()["serving"]["precision"] == "float32"


def test_fp16_on_cpu_stops_the_server_with_the_fix(digits_model, tmp_path):
    env = {"VISIONTUNE_MODEL": digits_model, "VISIONTUNE_PRECISION": "fp16"}
    refused = Server(tmp_path, env)
    try:
        refused.process.wait(timeout=START_TIMEOUT_S)
        assert refused.process.returncode != 0
        assert "VISIONTUNE_PRECISION=fp16 needs a GPU; on CPU use bf16 or fp32" in refused.tail()
    finally:
        refused.stop()
