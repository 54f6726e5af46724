"""VISIONTUNE_PRECISION on CPU: bf16 serves the same answers as fp32, auto says what it chose
and why, int8 serves the digits as fp32 does; fp16 refuses to start."""

from __future__ import annotations

import pytest

from contract.precision import cpu_has_native_bf16
from tests.support.servers import LIMITS, START_TIMEOUT_S, Server, serving


def precision_server(precision: str, model: str, tmp_path_factory):
    env = {"VISIONTUNE_MODEL": model, "VISIONTUNE_PRECISION": precision, **LIMITS}
    return serving(tmp_path_factory.mktemp(f"home-{precision}"), env)


@pytest.fixture(scope="module")
def bf16_server(digits_model, tmp_path_factory):
    with precision_server("bf16", digits_model, tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def fp32_server(digits_model, tmp_path_factory):
    with precision_server("fp32", digits_model, tmp_path_factory) as running:
        yield running


def test_bf16_on_cpu_agrees_with_fp32(fp32_server, bf16_server, digit_files):
    server = fp32_server
    paths = [paths[30 + i] for paths in digit_files.values() for i in range(2)][:8]
    fp32 = server.classify(paths)
    bf16 = bf16_server.classify(paths)
    assert fp32.status_code == bf16.status_code == 200, bf16.text
    for a, b in zip(fp32.json(), bf16.json(), strict=True):
        assert a["label"] == b["label"]
        assert a["score"] == pytest.approx(b["score"], abs=0.05)
    serving = bf16_server.client.get("/model").json()["serving"]
    assert (serving["device"], serving["precision"]) == ("cpu", "bfloat16")
    fp32 = server.client.get("/model").json()["serving"]
    assert (fp32["precision"], fp32["precision_reason"]) == ("float32", "VISIONTUNE_PRECISION=fp32")


def test_auto_on_cpu_says_what_it_chose_and_why(server):
    serving = server.client.get("/model").json()["serving"]
    if not cpu_has_native_bf16():
        assert serving["precision"] == "float32"
        assert serving["precision_reason"].startswith("auto: this CPU has no native bf16")
    elif serving["precision"] == "bfloat16":
        assert serving["precision_reason"].startswith("auto: native bf16 on this CPU; top-1 ")
    else:
        assert serving["precision_reason"].startswith("auto: bf16 refused, top-1 agreement")
    assert (
        f"serving in {serving['precision']}: {serving['precision_reason']}"
        in server.log.read_text()
    )


def test_int8_on_cpu_agrees_with_fp32(fp32_server, digits_model, tmp_path_factory, digit_files):
    paths = [paths[40] for paths in list(digit_files.values())[:8]]
    with precision_server("int8", digits_model, tmp_path_factory) as int8_server:
        int8 = int8_server.classify(paths)
        assert int8_server.client.get("/model").json()["serving"]["precision"] == "int8"
    fp32 = fp32_server.classify(paths)
    assert int8.status_code == fp32.status_code == 200, int8.text
    agree = [a["label"] == b["label"] for a, b in zip(fp32.json(), int8.json(), strict=True)]
    assert sum(agree) >= len(agree) - 1


def test_fp16_on_cpu_stops_the_server_with_the_fix(digits_model, tmp_path):
    env = {"VISIONTUNE_MODEL": digits_model, "VISIONTUNE_PRECISION": "fp16"}
    refused = Server(tmp_path, env)
    try:
        refused.process.wait(timeout=START_TIMEOUT_S)
        assert refused.process.returncode != 0
        assert "VISIONTUNE_PRECISION=fp16 needs a GPU; on CPU use bf16 or fp32" in refused.tail()
    finally:
        refused.stop()
