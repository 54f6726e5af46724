"""What happens to a batch after its answers: capture and the shadow model.

``LiveTraffic`` is the worker's one place for both. ``after_batch`` is called
with a forward pass's images and answers: it picks the images to capture
(``service.capture.Sampler``) and the images the shadow answers
(``service.shadow.Shadow.sample``, for the default model only), and hands
both off to their threads. A captured image the shadow also answers is
written once the shadow's answer is in its record.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
from PIL import Image

from contract.capture import Answer, CaptureRecord, LabelScore, image_path
from service.capture import Capture, CaptureWriter, Sampler
from service.shadow import Shadow, ShadowWork


def media_type(data: bytes) -> tuple[str, str]:
    """The media type and file extension of an image file (its header read by Pillow)."""
    kind = Image.open(io.BytesIO(data)).format or "image"
    extension = {"JPEG": "jpg"}.get(kind, kind.lower())
    return Image.MIME.get(kind, "application/octet-stream"), extension


class LiveTraffic:
    """The worker's capture writer (or None) and shadow (or None)."""

    def __init__(
        self, writer: CaptureWriter | None, sampler: Sampler | None, shadow: Shadow | None
    ):
        self.writer = writer
        self.sampler = sampler
        self.shadow = shadow

    def sample_request(self) -> bool:
        return self.sampler is not None and self.sampler.sample_request()

    def after_batch(
        self, tag: str, images: list, answers: list, pixels, seconds: float, shadowed: bool
    ):
        """``images`` (``Decoded``) and their ``answers`` (``Prediction``) of one forward pass of
        model ``tag``; ``shadowed``: the shadow answers this model's images."""
        captures = self._captures(tag, images, answers, seconds) if self.writer else {}
        if shadowed and self.shadow is not None:
            chosen = self.shadow.sample(len(images))
            if chosen:
                self._to_shadow(chosen, images, answers, pixels, captures)
        for capture in captures.values():
            self.writer.offer(capture)

    def _captures(self, tag: str, images: list, answers: list, seconds: float) -> dict:
        """The captures of this pass, by position."""
        captures = {}
        now = datetime.now(UTC)
        for index, (image, answer) in enumerate(zip(images, answers, strict=True)):
            reason = self.sampler.reason(answer.score, image.request.sampled)
            if reason is None:
                continue
            data = image.data
            if isinstance(data, str):
                data = base64.b64decode("".join(data.split(",", 1)[-1].split()))
            kind, extension = media_type(data)
            record = CaptureRecord(
                inference_id=answer.inference_id,
                time=now,
                answer=_answer(tag, answer, seconds, len(images)),
                reason=reason,
                image=image_path(now, answer.inference_id, extension),
                media_type=kind,
                image_bytes=len(data),
                headers=image.request.headers,
            )
            captures[index] = Capture(record, data, priority=self.sampler.is_low(answer.score))
        return captures

    def _to_shadow(self, chosen: list[int], images, answers, pixels, captures: dict) -> None:
        """The chosen images to the shadow; their captures wait for its answers."""
        waiting = {}
        for position, index in enumerate(chosen):
            capture = captures.pop(index, None)
            if capture is not None:
                waiting[position] = self._complete(capture)
        self.shadow.offer(
            ShadowWork(
                pixels=np.asarray(pixels)[chosen],
                labels=[answers[i].label for i in chosen],
                scores=[answers[i].score for i in chosen],
                top_k=[images[i].top_k for i in chosen],
                captures=waiting,
            )
        )

    def _complete(self, capture: Capture) -> Callable[[Answer | None], None]:
        def complete(answer: Answer | None) -> None:
            capture.record.shadow = answer
            self.writer.offer(capture)

        return complete

    def close(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
        if self.writer is not None:
            self.writer.close()


def _answer(tag: str, answer, seconds: float, batch: int) -> Answer:
    return Answer(
        model=tag,
        label=answer.label,
        score=answer.score,
        top_k=[LabelScore(label=s.label, score=s.score) for s in answer.top_k],
        seconds=seconds,
        batch=batch,
    )
