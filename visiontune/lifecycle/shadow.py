"""How a shadow model compares with the model serving, on the same live images.

Two sources say it. A capture (``contract.capture``) holds both answers for each
captured image the shadow also answered; only the images of sampled requests
are counted, so low-confidence captures do not bias the figures. Prometheus
metrics (a Prometheus server's query API, or one service's ``/metrics``) count
every image the shadow answered: ``visiontune_shadow_*`` by ``model`` and
``shadow``. Both give a :class:`ShadowStats` per pair of models:
`visiontune shadow report` prints them and `visiontune promote
--min-shadow-agreement` asks one of them for its evidence.
"""

from __future__ import annotations

from collections import defaultdict
from statistics import fmean
from urllib.parse import urlparse

import httpx
from pydantic import BaseModel, Field

from contract.capture import read_records


class ModelStats(BaseModel):
    """One model's answers on the images both answered."""

    mean_confidence: float | None = Field(description="Mean calibrated top-1 score.")
    low_confidence_share: float | None = Field(description="Share scored below the threshold.")
    ms_per_image: float | None = Field(description="Forward-pass milliseconds per image.")


class ShadowStats(BaseModel):
    model: str = Field(description="Tag of the model serving.")
    shadow: str = Field(description="Tag of the shadow.")
    compared: int = Field(description="Images both answered.")
    agreed: int = Field(description="Of those, images with the same top-1 label.")
    served: ModelStats
    shadowing: ModelStats
    source: str

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.compared if self.compared else None


class ShadowSourceError(ValueError):
    """A source that can't be read; the message names it."""


def from_capture(url: str, low_confidence: float) -> list[ShadowStats]:
    """Per pair of models, the images of sampled requests that both answered."""
    pairs: dict[tuple[str, str], list] = defaultdict(list)
    for record in read_records(url):
        if record.shadow is not None and record.reason == "sampled":
            pairs[record.answer.model, record.shadow.model].append(record)
    stats = []
    for (model, shadow), records in sorted(pairs.items()):
        answers = [r.answer for r in records]
        shadows = [r.shadow for r in records]
        stats.append(
            ShadowStats(
                model=model,
                shadow=shadow,
                compared=len(records),
                agreed=sum(r.answer.label == r.shadow.label for r in records),
                served=_answer_stats(answers, low_confidence),
                shadowing=_answer_stats(shadows, low_confidence),
                source=f"capture {url} (images of sampled requests)",
            )
        )
    return stats


def _answer_stats(answers: list, low_confidence: float) -> ModelStats:
    return ModelStats(
        mean_confidence=fmean(a.score for a in answers),
        low_confidence_share=sum(a.score < low_confidence for a in answers) / len(answers),
        ms_per_image=1000 * fmean(a.seconds / max(a.batch, 1) for a in answers),
    )


# (metric, labels it is summed by) that the statistics need
QUERIES = {
    "visiontune_shadow_compared_total": ("model", "shadow"),
    "visiontune_shadow_agreed_total": ("model", "shadow"),
    "visiontune_shadow_confidence_sum": ("model", "shadow", "answered_by"),
    "visiontune_shadow_confidence_count": ("model", "shadow", "answered_by"),
    "visiontune_shadow_low_confidence_predictions_total": ("model", "shadow", "answered_by"),
    "visiontune_shadow_inference_seconds_sum": ("model", "shadow"),
    "visiontune_inference_seconds_sum": ("model",),
    "visiontune_predictions_total": ("model",),
}
Samples = dict[str, dict[tuple, float]]  # metric -> label values (in QUERIES' order) -> value


def from_metrics(url: str) -> list[ShadowStats]:
    """Per pair of models, from a Prometheus server (summed over its targets) or from one
    service's ``/metrics`` (a URL whose path ends in /metrics)."""
    if urlparse(url).path.rstrip("/").endswith("/metrics"):
        samples, source = _scrape(url), f"metrics of {url}"
    else:
        samples, source = _query(url), f"Prometheus at {url}"
    return _stats(samples, source)


def _scrape(url: str) -> Samples:
    return parse_exposition(_get(url).text)


def parse_exposition(text: str) -> Samples:
    """The samples ``QUERIES`` names from Prometheus' text format, summed like the queries."""
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = defaultdict(lambda: defaultdict(float))
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in QUERIES:
                key = tuple(sample.labels.get(label, "") for label in QUERIES[sample.name])
                samples[sample.name][key] += sample.value
    return samples


def _query(url: str) -> Samples:
    samples: Samples = defaultdict(dict)
    for name, labels in QUERIES.items():
        query = f"sum by ({', '.join(labels)}) ({name})"
        answer = _get(f"{url.rstrip('/')}/api/v1/query", params={"query": query}).json()
        if answer.get("status") != "success":
            raise ShadowSourceError(f"{url}: the query {query} failed: {answer.get('error')}")
        for series in answer["data"]["result"]:
            key = tuple(series["metric"].get(label, "") for label in labels)
            samples[name][key] = float(series["value"][1])
    return samples


def _get(url: str, **kwargs) -> httpx.Response:
    try:
        response = httpx.get(url, timeout=30, **kwargs)
    except httpx.HTTPError as err:
        raise ShadowSourceError(f"{url}: {err}") from None
    if response.status_code != 200:
        raise ShadowSourceError(f"{url}: HTTP {response.status_code}")
    return response


def _stats(samples: Samples, source: str) -> list[ShadowStats]:
    stats = []
    for (model, shadow), compared in sorted(samples["visiontune_shadow_compared_total"].items()):
        if not compared:
            continue
        served = _answered_by(samples, (model, shadow, "model"), compared)
        shadowing = _answered_by(samples, (model, shadow, "shadow"), compared)
        predictions = samples["visiontune_predictions_total"].get((model,), 0)
        if predictions:
            seconds = samples["visiontune_inference_seconds_sum"].get((model,), 0)
            served.ms_per_image = 1000 * seconds / predictions
        shadow_seconds = samples["visiontune_shadow_inference_seconds_sum"].get((model, shadow))
        if shadow_seconds is not None:
            shadowing.ms_per_image = 1000 * shadow_seconds / compared
        stats.append(
            ShadowStats(
                model=model,
                shadow=shadow,
                compared=int(compared),
                agreed=int(samples["visiontune_shadow_agreed_total"].get((model, shadow), 0)),
                served=served,
                shadowing=shadowing,
                source=source,
            )
        )
    return stats


def _answered_by(samples: Samples, key: tuple, compared: float) -> ModelStats:
    """One model's confidence on the compared images (``key``: model, shadow, answered_by)."""
    count = samples["visiontune_shadow_confidence_count"].get(key, 0)
    total = samples["visiontune_shadow_confidence_sum"].get(key, 0)
    low = samples["visiontune_shadow_low_confidence_predictions_total"].get(key, 0)
    return ModelStats(
        mean_confidence=total / count if count else None,
        low_confidence_share=low / compared,
        ms_per_image=None,
    )


def table(stats: list[ShadowStats]) -> str:
    """Champion vs shadow, one block per pair."""
    blocks = []
    for pair in stats:
        rows = [
            ("", "serving", "shadow"),
            ("model", pair.model, pair.shadow),
            (
                "mean confidence",
                *(_number(s.mean_confidence) for s in (pair.served, pair.shadowing)),
            ),
            (
                "low-confidence share",
                *(_number(s.low_confidence_share) for s in (pair.served, pair.shadowing)),
            ),
            ("ms per image", *(_number(s.ms_per_image, 2) for s in (pair.served, pair.shadowing))),
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        lines = [
            "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]
        blocks.append(
            "\n".join(
                [
                    f"top-1 agreement {_number(pair.agreement)} on {pair.compared} images "
                    f"({pair.agreed} agreed); {pair.source}",
                    *lines,
                ]
            )
        )
    return "\n\n".join(blocks)


def _number(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
