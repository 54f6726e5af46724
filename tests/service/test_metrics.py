"""/metrics: BentoML's bentoml_service_* and our visiontune_*, counting what was served."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.support.servers import LIMITS, total


def test_predictions_are_counted_by_label(server, digit_files, digits_model):
    before = server.metrics()
    paths = [digit_files["4"][i] for i in range(5)] + [digit_files["8"][i] for i in range(3)]
    predictions = server.classify(paths).json()
    after = server.metrics()

    for label, count in Counter(p["label"] for p in predictions).items():
        counted = total(after, "visiontune_predictions_total", label=label)
        assert counted - total(before, "visiontune_predictions_total", label=label) == count
    assert total(after, "visiontune_predictions_total") - total(
        before, "visiontune_predictions_total"
    ) == len(paths)

    def delta(name: str) -> float:
        return total(after, name) - total(before, name)

    assert delta("visiontune_prediction_confidence_count") == len(paths)
    assert delta("visiontune_prediction_confidence_sum") == pytest.approx(
        sum(p["score"] for p in predictions), rel=1e-6
    )
    assert delta("visiontune_preprocess_seconds_count") == 1  # one request
    assert delta("visiontune_inference_seconds_count") >= 1
    low = sum(p["score"] < 0.5 for p in predictions)
    assert delta("visiontune_low_confidence_predictions_total") == low
    assert total(after, "visiontune_model_info", model=digits_model) == 1
    assert total(after, "bentoml_service_request_total", endpoint="/classify") > 0
    assert total(after, "bentoml_service_request_duration_seconds_count", endpoint="/classify") > 0
    assert "bentoml_service_request_in_progress" in after


def test_label_drift_compares_recent_predictions_with_training(server, digit_files):
    window = int(LIMITS["VISIONTUNE_DRIFT_WINDOW"])
    paths = digit_files["0"][:8] + digit_files["6"][:8]
    predictions = [
        p for i in range(0, len(paths), 8) for p in server.classify(paths[i : i + 8]).json()
    ]
    recent = Counter(p["label"] for p in predictions[-window:])
    counts = server.client.get("/model").json()["label_counts"]
    training = {label: n / sum(counts.values()) for label, n in counts.items()}
    expected = 0.5 * sum(abs(recent[label] / window - share) for label, share in training.items())

    drift = total(server.metrics(), "visiontune_label_drift")
    assert drift == pytest.approx(expected, abs=1e-9)
    assert drift > 0.7  # two labels of ten: far from the training mix

    balanced = [digit_files[str(d)][30] for d in range(10)] + [digit_files["3"][31]] * 2
    predictions = server.classify(balanced[:8]).json() + server.classify(balanced[8:]).json()
    assert total(server.metrics(), "visiontune_label_drift") < drift
