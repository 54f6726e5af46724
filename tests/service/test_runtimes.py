"""The same service behaviour on every runtime (VISIONTUNE_RUNTIME): right labels with torch's
scores, adaptive batching, metrics and drift, input limits and errors, the Open Inference
Protocol; each server says at start-up which runtime serves and why."""

from __future__ import annotations

import io

import bentoml
import numpy as np
import pytest

from contract.images import decode_image
from contract.predictor import Predictor
from contract.savedmodel import ModelMetadata
from tests.support.builders import unique_name
from tests.support.servers import LIMITS, burst_until_batched, post_together, serving
from tests.support.store import copy_model

RUNTIMES = ["torch", "onnxruntime", "openvino", "auto"]


@pytest.fixture(scope="module")
def optimized_model(digits_model) -> str:
    """The digits model under another name, with its ONNX graph kept by `visiontune optimize`."""
    from training.optimize import optimize

    tag = str(copy_model(digits_model, unique_name("digits-optimized")))
    optimize(tag)
    return tag


@pytest.fixture(scope="module", params=RUNTIMES)
def runtime_server(request, optimized_model, tmp_path_factory):
    env = {"VISIONTUNE_MODEL": optimized_model, "VISIONTUNE_RUNTIME": request.param, **LIMITS}
    with serving(tmp_path_factory.mktemp(f"runtime-{request.param}"), env) as running:
        running.runtime = request.param
        yield running


def test_the_server_says_which_runtime_serves_and_why(runtime_server):
    serving_info = runtime_server.client.get("/model").json()["serving"]
    asked = runtime_server.runtime
    assert serving_info["runtime"] == asked or asked == "auto"
    rows = {(r["runtime"], r["precision"]): r for r in serving_info["runtimes"]}
    if asked in ("onnxruntime", "openvino"):
        row = rows[(asked, "float32")]
        assert row["top1_agreement"] >= 0.995 and row["max_score_change"] <= 0.02
        assert serving_info["runtime_checked_on"].endswith("stored held-out images")
    if asked == "auto":
        timed = {
            key: min(r["ms_per_image"].values()) for key, r in rows.items() if "ms_per_image" in r
        }
        assert {runtime for runtime, _ in timed} == {"torch", "onnxruntime", "openvino"}
        fastest = min(timed, key=timed.get)
        assert (serving_info["runtime"], serving_info["precision"]) == fastest
    log = runtime_server.log.read_text()
    assert f"serving with {serving_info['runtime']} " in log
    assert log.index("serving with") < log.index("Service ImageClassifier initialized")


def test_right_labels_with_the_scores_torch_gives(runtime_server, digit_files, optimized_model):
    stored = bentoml.models.get(optimized_model)
    torch_predictor = Predictor.from_folder(
        stored.path, ModelMetadata.model_validate(stored.info.metadata)
    )
    paths = [paths[30] for paths in digit_files.values()][:8]
    answers = runtime_server.classify(paths).json()
    expected = torch_predictor.classify([decode_image(path) for path in paths])
    for answer, row in zip(answers, expected, strict=True):
        assert answer["score"] == pytest.approx(float(row.max()), abs=0.02)
        assert answer["label"] == str(int(row.argmax())) or row.max() - np.sort(row)[-2] < 0.02
    assert sum(a["label"] == label for a, label in zip(answers, digit_files, strict=False)) >= 6


def test_batches_metrics_and_drift(runtime_server, digit_files):
    paths = [path for paths in digit_files.values() for path in paths[40:43]]
    burst = burst_until_batched(
        runtime_server, "classify", lambda: post_together(runtime_server.url, "/classify", paths)
    )
    assert set(burst.results) == {200}
    requests, batches = burst.requests_and_batches("classify")
    assert requests == len(paths) and batches < requests
    assert burst.grew("visiontune_predictions_total") == len(paths)
    assert burst.grew("visiontune_inference_seconds_count") >= 1
    assert "visiontune_label_drift" in burst.after  # the window (12) is full


def test_limits_and_errors(runtime_server, digit_files):
    bad = runtime_server.client.post(
        "/classify", files=[("images", ("x.png", b"not an image", "image/png"))]
    )
    assert bad.status_code == 400 and bad.json()["detail"][0]["type"] == "not_an_image"
    nine = [digit_files["1"][0]] * 9
    assert runtime_server.classify(nine).json()["detail"][0]["type"] == "too_many_images"
    big = io.BytesIO(b"\0" * (2 << 20))
    too_large = runtime_server.client.post("/classify", files=[("images", ("b.png", big))])
    assert too_large.status_code == 413


def test_open_inference_protocol(runtime_server, digit_files, optimized_model):
    import base64

    name = bentoml.Tag.from_taglike(optimized_model).name
    data = [base64.b64encode(digit_files["6"][7].read_bytes()).decode()]
    body = {
        "inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": data}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 1}}],
    }
    answer = runtime_server.client.post(f"/v2/models/{name}/infer", json=body)
    assert answer.status_code == 200, answer.text
    [output] = answer.json()["outputs"]
    assert output["datatype"] == "BYTES" and output["data"][0].endswith(":6:6")
