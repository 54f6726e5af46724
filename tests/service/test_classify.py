"""Classification over HTTP: right labels on real digit images, both input formats, batching."""

from __future__ import annotations

import base64

import bentoml
import pytest

from tests.support.servers import burst_until_batched, post_together


def sample(digit_files, per_label: int, offset: int = 0):
    """(path, label) pairs, ``per_label`` of each digit."""
    return [
        (path, label)
        for label, paths in digit_files.items()
        for path in paths[offset : offset + per_label]
    ]


def test_one_image_per_request_gets_its_label(server, digit_files, digits_model):
    pairs = sample(digit_files, 2)
    right = 0
    for path, label in pairs:
        response = server.classify([path])
        assert response.status_code == 200, response.text
        [prediction] = response.json()
        assert prediction["model"] == digits_model
        assert 0 < prediction["score"] <= 1
        right += prediction["label"] == label
    assert right / len(pairs) >= 0.85


def test_many_images_per_request_keep_their_order(server, digit_files):
    pairs = sample(digit_files, 4, offset=10)
    labels = []
    for start in range(0, len(pairs), 8):
        chunk = pairs[start : start + 8]
        response = server.classify([path for path, _ in chunk])
        assert response.status_code == 200, response.text
        assert len(response.json()) == len(chunk)
        labels += [prediction["label"] for prediction in response.json()]
    right = sum(got == want for got, (_, want) in zip(labels, pairs, strict=True))
    assert right / len(pairs) >= 0.85


def test_json_base64_gives_the_same_answers_as_files(server, digit_files):
    paths = [paths[20] for paths in digit_files.values()][:8]
    encoded = [base64.b64encode(path.read_bytes()).decode() for path in paths]
    encoded[0] = "data:image/png;base64," + encoded[0]
    as_json = server.client.post("/classify_json", json={"images": encoded, "top_k": 2})
    as_files = server.classify(paths, top_k="2")
    assert as_json.status_code == 200, as_json.text
    assert [p["label"] for p in as_json.json()] == [p["label"] for p in as_files.json()]
    for a, b in zip(as_json.json(), as_files.json(), strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=1e-6)
        assert len(a["top_k"]) == 2


def test_top_k_is_ranked_and_calibrated(server, digit_files):
    path = digit_files["7"][0]
    [default] = server.classify([path]).json()
    assert len(default["top_k"]) == 3  # VISIONTUNE_TOP_K
    [everything] = server.classify([path], top_k="50").json()
    scores = [entry["score"] for entry in everything["top_k"]]
    assert len(scores) == 10  # clamped to the number of labels
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-4)
    assert everything["top_k"][0] == {"label": everything["label"], "score": everything["score"]}


def test_concurrent_requests_share_batches(server, digit_files):
    """BentoML's adaptive batch size histogram records batches of more than one request."""
    paths = [path for paths in digit_files.values() for path in paths[:6]]
    burst = burst_until_batched(
        server, "classify", lambda: post_together(server.url, "/classify", paths)
    )
    assert set(burst.results) == {200}
    requests, batches = burst.requests_and_batches("classify")
    assert requests == len(paths)
    assert batches < requests, "no batch held more than one request"


def test_model_endpoint_describes_the_model(server, digits_model):
    response = server.client.get("/model")
    assert response.status_code == 200
    info = response.json()
    assert info["tag"] == digits_model
    assert info["labels"] == [str(digit) for digit in range(10)]
    assert info["backbone"] and info["stage"] is None  # nothing of its name was ever promoted
    assert 0.8 < info["validation"]["accuracy"] <= 1
    assert set(info["label_counts"]) == set(info["labels"])
    assert info["serving"]["device"] == "cpu"
    assert info["serving"]["max_batch_size"] == 32
    # the forward batch was timed at warm-up (auto, on a CPU) and the figures are given
    assert 1 <= info["serving"]["forward_batch"] <= 32
    assert info["serving"]["forward_batch_reason"].startswith("auto: fastest per image")


def test_ready_only_after_warm_up(server):
    assert server.client.get("/readyz").status_code == 200
    assert server.client.get("/livez").status_code == 200
    log = server.log.read_text()
    assert "warm-up with a batch of 32" in log
    assert log.index("warm-up with a batch of 32") < log.index(
        "Service ImageClassifier initialized"
    )


def test_bentoml_sync_http_client(server, digit_files):
    paths = [digit_files["3"][0], digit_files["5"][0]]
    expected = [p["label"] for p in server.classify(paths).json()]
    with bentoml.SyncHTTPClient(server.url) as client:
        predictions = client.classify(images=paths, top_k=1)
        encoded = base64.b64encode(paths[0].read_bytes()).decode()
        from_json = client.classify_json(images=[encoded])
    assert [p["label"] for p in predictions] == expected
    assert from_json[0]["label"] == expected[0]
    assert len(predictions[0]["top_k"]) == 1
