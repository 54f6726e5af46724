"""Two worker processes, batching off: metrics from both add up at /metrics."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.servers import LIMITS, serving, total, wait_for_workers

REQUESTS = 40
IMAGES_PER_REQUEST = 2


@pytest.fixture(scope="module")
def two_workers(digits_model, tmp_path_factory):
    env = {
        "VISIONTUNE_MODEL": digits_model,
        "VISIONTUNE_WORKERS": "2",
        "VISIONTUNE_MAX_BATCH_SIZE": "1",
        "VISIONTUNE_ACCESS_LOG": "1",  # which worker served each request
        **LIMITS,
    }
    with serving(tmp_path_factory.mktemp("home-two-workers"), env) as running:
        wait_for_workers(running, 2)
        yield running


def test_counts_add_up_over_workers(two_workers, digit_files):
    server = two_workers
    paths = [path for paths in digit_files.values() for path in paths[:8]]
    pairs = [paths[i : i + IMAGES_PER_REQUEST] for i in range(0, REQUESTS * IMAGES_PER_REQUEST, 2)]

    def post(pair):  # a new connection each time, so both workers accept some
        with httpx.Client(base_url=server.url, timeout=60) as client:
            files = [("images", (p.name, p.read_bytes(), "image/png")) for p in pair]
            return client.post("/classify", files=files).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(post, pairs)) == {200}

    served = re.findall(
        r"\[entry_service:ImageClassifier:(\d+)\].*path=/classify,", server.log.read_text()
    )
    assert len(served) == REQUESTS
    assert set(served) == {"1", "2"}, "one worker took every request; the test proves nothing"
    metrics = server.metrics()
    assert total(metrics, "visiontune_predictions_total") == REQUESTS * IMAGES_PER_REQUEST
    assert total(metrics, "visiontune_prediction_confidence_count") == REQUESTS * IMAGES_PER_REQUEST
    assert total(metrics, "visiontune_preprocess_seconds_count") == REQUESTS
    assert total(metrics, "bentoml_service_request_total", endpoint="/classify") == REQUESTS
    assert total(metrics, "visiontune_model_info") == 1


def test_batching_off_runs_each_request_alone(two_workers, digit_files):
    server = two_workers
    assert server.client.get("/model").json()["serving"]["max_batch_size"] == 1
    response = server.classify(digit_files["9"][:3])
    assert response.status_code == 200 and len(response.json()) == 3
    metrics = server.metrics()
    assert total(metrics, "bentoml_service_adaptive_batch_size_count") == 0
    assert total(metrics, "visiontune_inference_seconds_count") == total(
        metrics, "visiontune_preprocess_seconds_count"
    )
