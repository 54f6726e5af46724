"""A shadow model: a second stored model answers the served model's images, unseen.

``VISIONTUNE_SHADOW`` names it; each worker loads it like a served model
(``ImageClassifier.load_model``). A batch's answers are handed back first;
then ``Shadow.offer`` puts the images the shadow is to answer (a share
``VISIONTUNE_SHADOW_RATE`` of them) on a small queue, and one thread runs them
through the shadow, compares its top-1 labels with the served model's and
records the figures (``visiontune_shadow_*``), and completes the captures of
those images with the shadow's answer before they are written. Its answers are
never returned to a client.

The shadow and the served model never run a forward pass at the same time:
``forward_lock`` is the worker's one lock around every forward pass (on a CPU,
two passes at once would each take every core and slow both; on a GPU they
queue on the device anyway), so a batch waits for at most one shadow pass.
When the shadow falls behind, the images it can't take are skipped and
counted, never queued without bound.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from contract.capture import Answer

logger = logging.getLogger("bentoml.visiontune")

QUEUE_BATCHES = 4  # batches waiting for the shadow before more are skipped


@dataclass
class ShadowWork:
    """Images of one batch for the shadow: their pixels, the served model's top-1 labels and
    scores, and, by position, the captures to complete with the shadow's answer."""

    pixels: np.ndarray
    labels: list[str]
    scores: list[float]
    top_k: list[int]
    captures: dict[int, Callable[[Answer | None], None]] = field(default_factory=dict)


class Shadow:
    """The shadow model of one worker: a sample of each batch, a queue, a thread."""

    def __init__(
        self,
        tag: str,
        predictor: Callable[[np.ndarray], np.ndarray],
        labels: list[str],
        rate: float,
        forward_lock: threading.Lock,
        metrics,
        low_confidence: float,
        rng: random.Random | None = None,
    ):
        self.tag = tag
        self.predictor = predictor
        self.labels = labels
        self.rate = rate
        self.forward_lock = forward_lock
        self.metrics = metrics
        self.low_confidence = low_confidence
        self.random = rng or random.Random()
        self.queue: queue.Queue[ShadowWork | None] = queue.Queue(QUEUE_BATCHES)
        self.thread = threading.Thread(target=self._run, name="visiontune-shadow", daemon=True)
        self.thread.start()

    def sample(self, n: int) -> list[int]:
        """Which of a batch's ``n`` images the shadow answers."""
        if self.rate >= 1:
            return list(range(n))
        return [i for i in range(n) if self.random.random() < self.rate]

    def offer(self, work: ShadowWork) -> None:
        """Queue a batch's sample without waiting; skipped (and counted) when the queue is full;
        its captures then go on without the shadow's answer."""
        try:
            self.queue.put_nowait(work)
        except queue.Full:
            self.metrics.skipped("queue_full", len(work.labels))
            for complete in work.captures.values():
                complete(None)

    def close(self, timeout: float = 10.0) -> None:
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)

    def _run(self) -> None:
        while (work := self.queue.get()) is not None:
            try:
                self._answer(work)
            except Exception:  # the shadow must never take the worker down
                logger.exception("shadow %s failed on a batch of %d", self.tag, len(work.labels))
                self.metrics.skipped("model_error", len(work.labels))
                for complete in work.captures.values():
                    complete(None)

    def _answer(self, work: ShadowWork) -> None:
        with self.forward_lock:
            started = time.perf_counter()
            probabilities = self.predictor(work.pixels)
            seconds = time.perf_counter() - started
        self.metrics.observe_seconds(seconds)
        for index, (row, label, score) in enumerate(
            zip(probabilities, work.labels, work.scores, strict=True)
        ):
            answer = self.answer(row, work.top_k[index], seconds, len(work.labels))
            self.metrics.compare(label, score, answer.label, answer.score, self.low_confidence)
            if index in work.captures:
                work.captures[index](answer)

    def answer(self, probabilities: np.ndarray, top_k: int, seconds: float, batch: int) -> Answer:
        best = np.argsort(probabilities)[::-1][:top_k]
        ranked = [{"label": self.labels[i], "score": float(probabilities[i])} for i in best]
        return Answer.model_validate(
            {
                "model": self.tag,
                "label": ranked[0]["label"],
                "score": ranked[0]["score"],
                "top_k": ranked,
                "seconds": seconds,
                "batch": batch,
            }
        )
