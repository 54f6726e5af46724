"""The ``visiontune_*`` Prometheus metrics, next to BentoML's own ``bentoml_service_*``.

``bentoml serve`` runs each worker with ``PROMETHEUS_MULTIPROC_DIR`` set and its
``/metrics`` merges the files every worker writes there, so counts add up over
workers. ``prometheus_client`` picks that mode when a metric is created, so the
collectors are created on first use inside a worker, never at import time.

Every collector has a ``model`` label, the tag of the model that answered, so
two versions serving side by side (a canary, a blue/green switch) are told
apart on the dashboard and in the alerts.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.capture import CaptureCounters

CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
ANSWERED_BY = ("model", "shadow")  # the label telling a shadow's figures from the served model's
SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Collectors:
    """Every metric this service exports, created once per process."""

    def __init__(self):
        from prometheus_client import Counter, Gauge, Histogram

        self.predictions = Counter(
            "visiontune_predictions", "Images classified, by predicted label.", ["model", "label"]
        )
        self.confidence = Histogram(
            "visiontune_prediction_confidence",
            "Calibrated score of the predicted label.",
            ["model"],
            buckets=CONFIDENCE_BUCKETS,
        )
        self.low_confidence = Counter(
            "visiontune_low_confidence_predictions",
            "Predictions whose calibrated score is below VISIONTUNE_LOW_CONFIDENCE.",
            ["model"],
        )
        self.preprocess_seconds = Histogram(
            "visiontune_preprocess_seconds",
            "Decoding and resizing the images of one request.",
            ["model"],
            buckets=SECONDS_BUCKETS,
        )
        self.inference_seconds = Histogram(
            "visiontune_inference_seconds",
            "One batched forward pass: normalisation, model and calibrated softmax.",
            ["model"],
            buckets=SECONDS_BUCKETS,
        )
        self.rejected_inputs = Counter(
            "visiontune_rejected_inputs",
            "Requests refused as bad input, by reason.",
            ["model", "reason"],
        )
        self.batch_failures = Counter(
            "visiontune_batch_failures",
            "Batches the model failed on (each of their requests answered 500), by reason.",
            ["model", "reason"],
        )
        self.model_info = Gauge(
            "visiontune_model_info",
            "The model this server answers with (always 1).",
            ["model", "backbone"],
            multiprocess_mode="max",
        )
        self.label_drift = Gauge(
            "visiontune_label_drift",
            "Total variation distance between the labels of a worker's last "
            "VISIONTUNE_DRIFT_WINDOW predictions and the training labels (0 same, 1 disjoint; "
            "0 until the window is full); the largest over workers.",
            ["model"],
            multiprocess_mode="livemax",
        )
        self.captured = Counter(
            "visiontune_captured_images",
            "Images written to the capture (VISIONTUNE_CAPTURE), with their answers.",
            ["model"],
        )
        self.captured_bytes = Counter(
            "visiontune_captured_bytes", "Bytes written to the capture.", ["model"]
        )
        self.capture_dropped = Counter(
            "visiontune_capture_dropped",
            "Captures not written, by reason: queue_full (the store is slower than the "
            "traffic), write_error, budget_full (VISIONTUNE_CAPTURE_MAX_GB), disk_full.",
            ["model", "reason"],
        )
        self.capture_full = Gauge(
            "visiontune_capture_full",
            "1 while the capture is at its budget (or its disk nearly full) and keeps nothing.",
            ["model"],
            multiprocess_mode="livemax",
        )
        self.shadow_compared = Counter(
            "visiontune_shadow_compared",
            "Images the shadow model also answered (VISIONTUNE_SHADOW_RATE of them).",
            ["model", "shadow"],
        )
        self.shadow_agreed = Counter(
            "visiontune_shadow_agreed",
            "Images where the shadow's top-1 label is the served model's.",
            ["model", "shadow"],
        )
        self.shadow_confidence = Histogram(
            "visiontune_shadow_confidence",
            "Calibrated top-1 score on the images the shadow answered, of each model "
            '(answered_by="model" or "shadow").',
            ["model", "shadow", "answered_by"],
            buckets=CONFIDENCE_BUCKETS,
        )
        self.shadow_low_confidence = Counter(
            "visiontune_shadow_low_confidence_predictions",
            "Of the images the shadow answered, those scored below VISIONTUNE_LOW_CONFIDENCE, "
            "by each model.",
            ["model", "shadow", "answered_by"],
        )
        self.shadow_seconds = Histogram(
            "visiontune_shadow_inference_seconds",
            "The shadow's batched forward pass (run after the answers were sent).",
            ["model", "shadow"],
            buckets=SECONDS_BUCKETS,
        )
        self.shadow_skipped = Counter(
            "visiontune_shadow_skipped",
            "Images sampled for the shadow that it did not answer, by reason (queue_full: "
            "it could not keep up; model_error).",
            ["model", "shadow", "reason"],
        )
        # The tag of the model this process serves, set when the service loads it.
        self.model = ""


@functools.cache
def collectors() -> Collectors:
    return Collectors()


def count_rejected(reason: str) -> None:
    c = collectors()
    c.rejected_inputs.labels(model=c.model, reason=reason).inc()


def count_batch_failure(reason: str) -> None:
    c = collectors()
    c.batch_failures.labels(model=c.model, reason=reason).inc()


class LabelMix:
    """The label distribution of a sliding window of predictions against a reference."""

    def __init__(self, reference: Sequence[float], window: int):
        self.reference = list(reference)
        self.window: deque[int] = deque(maxlen=window)
        self.counts = [0] * len(self.reference)

    def add(self, label: int) -> float | None:
        """Record one predicted label id; the distance once the window is full, else None."""
        if len(self.window) == self.window.maxlen:
            self.counts[self.window[0]] -= 1
        self.window.append(label)
        self.counts[label] += 1
        if len(self.window) < self.window.maxlen:
            return None
        return self.distance()

    def distance(self) -> float:
        """Total variation: half the L1 distance between the two distributions."""
        total = len(self.window) or 1
        return 0.5 * sum(
            abs(n / total - p) for n, p in zip(self.counts, self.reference, strict=True)
        )


class PredictionMetrics:
    """What the service records about the predictions of the model it serves."""

    def __init__(
        self,
        *,
        tag: str,
        backbone: str,
        labels: Sequence[str],
        training_distribution: Sequence[float],
        low_confidence: float,
        drift_window: int,
    ):
        c = collectors()
        c.model = tag
        c.model_info.labels(model=tag, backbone=backbone).set(1)
        self.predictions = {label: c.predictions.labels(model=tag, label=label) for label in labels}
        self.confidence = c.confidence.labels(model=tag)
        self.low_confidence_count = c.low_confidence.labels(model=tag)
        self.preprocess_seconds = c.preprocess_seconds.labels(model=tag)
        self.inference_seconds = c.inference_seconds.labels(model=tag)
        self.label_drift = c.label_drift.labels(model=tag)
        self.label_ids = {label: index for index, label in enumerate(labels)}
        self.low_confidence = low_confidence
        self.mix = LabelMix(training_distribution, drift_window)

    def record(self, label: str, score: float) -> None:
        self.predictions[label].inc()
        self.confidence.observe(score)
        if score < self.low_confidence:
            self.low_confidence_count.inc()
        drift = self.mix.add(self.label_ids[label])
        if drift is not None:
            self.label_drift.set(drift)


class ShadowMetrics:
    """What a worker records about its shadow model, against the model it shadows."""

    def __init__(self, model: str, shadow: str):
        c = collectors()
        pair = {"model": model, "shadow": shadow}
        self.compared = c.shadow_compared.labels(**pair)
        self.agreed = c.shadow_agreed.labels(**pair)
        self.confidence = {
            who: c.shadow_confidence.labels(**pair, answered_by=who) for who in ANSWERED_BY
        }
        self.low_confidence = {
            who: c.shadow_low_confidence.labels(**pair, answered_by=who) for who in ANSWERED_BY
        }
        self.seconds = c.shadow_seconds.labels(**pair)
        self._skipped = c.shadow_skipped
        self.pair = pair

    def compare(
        self, label: str, score: float, shadow_label: str, shadow_score: float, low: float
    ) -> None:
        """One image both answered: the served model's answer, then the shadow's."""
        self.compared.inc()
        if label == shadow_label:
            self.agreed.inc()
        for who, value in (("model", score), ("shadow", shadow_score)):
            self.confidence[who].observe(value)
            if value < low:
                self.low_confidence[who].inc()

    def observe_seconds(self, seconds: float) -> None:
        self.seconds.observe(seconds)

    def skipped(self, reason: str, n: int) -> None:
        self._skipped.labels(**self.pair, reason=reason).inc(n)


def capture_counters(set_full) -> CaptureCounters:
    """The capture writer's counters, as Prometheus metrics (``set_full``: the gauge's setter
    for the worker's models)."""
    from service.capture import CaptureCounters

    c = collectors()

    def written(model: str, size: int) -> None:
        c.captured.labels(model=model).inc()
        c.captured_bytes.labels(model=model).inc(size)

    def dropped(model: str, reason: str) -> None:
        c.capture_dropped.labels(model=model, reason=reason).inc()

    return CaptureCounters(written=written, dropped=dropped, full=set_full)
