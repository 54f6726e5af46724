from __future__ import annotations

import pytest

from service.metrics import LabelMix


def test_label_mix_waits_for_a_full_window():
    mix = LabelMix([0.5, 0.5], window=3)
    assert mix.add(0) is None
    assert mix.add(1) is None
    assert mix.add(0) == pytest.approx(0.5 * (abs(2 / 3 - 0.5) + abs(1 / 3 - 0.5)))


def test_label_mix_slides_and_spans_zero_to_one():
    mix = LabelMix([0.25, 0.25, 0.5], window=4)
    for label in (0, 0, 0, 0):
        distance = mix.add(label)
    assert distance == pytest.approx(0.75)
    for label in (0, 1, 2, 2):
        distance = mix.add(label)
    assert distance == pytest.approx(0.0)
    assert mix.counts == [1, 1, 2]


def test_every_visiontune_metric_tells_two_models_apart():
    from prometheus_client import REGISTRY

    from service.metrics import PredictionMetrics, count_batch_failure, count_rejected

    for tag in ("digits:v1", "digits:v2"):
        metrics = PredictionMetrics(
            tag=tag,
            backbone="tiny",
            labels=["a", "b"],
            training_distribution=[0.5, 0.5],
            low_confidence=0.5,
            drift_window=1,
        )
        metrics.record("a", 0.4)
        metrics.preprocess_seconds.observe(0.01)
        metrics.inference_seconds.observe(0.01)
        count_rejected("not_an_image")
        count_batch_failure("model_error")
    samples = [
        sample
        for family in REGISTRY.collect()
        if family.name.startswith("visiontune_")
        for sample in family.samples
    ]
    families = {sample.name for sample in samples}
    assert len(families) >= 8
    for name in families:
        models = {sample.labels.get("model") for sample in samples if sample.name == name}
        assert None not in models and {"digits:v1", "digits:v2"} <= models, name
