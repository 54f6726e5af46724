"""``bentoml serve service:ImageClassifier``: a stored visiontune model over HTTP.

The pipeline is one method per step: ``load`` the stored model, ``decode`` image
files into model-size arrays (called by the input specs of ``service.inputs`` in
a worker thread, so bad images are refused before anything is queued),
``predict`` a batch (``contract.predictor.Predictor``: normalise, forward,
calibrated softmax) and ``encode`` the probabilities as labels. ``classify``
(multipart files) and ``classify_json`` (base64) are batchable APIs: BentoML's
adaptive batching dispatcher (with the wait estimate of ``service.batching``)
gathers the images of concurrent requests into one ``predict``. ``GET /model``
describes the model being served.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated

import bentoml
import numpy as np
import torch
from bentoml.validators import ContentType
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from contract.images import ImageError, decode_image
from contract.predictor import Predictor
from contract.savedmodel import MODEL_ENV, ModelMetadata
from contract.stages import StageError, recorded_stage, resolve
from service import batching, logs
from service.inputs import (
    Base64Images,
    BodyLimit,
    Decoded,
    ImageFiles,
    InputError,
    decode_base64,
    reject,
)
from service.metrics import PredictionMetrics
from service.settings import settings

logger = logging.getLogger("bentoml.visiontune")
batching.install()  # before BentoML builds this service's batching dispatchers
logs.log_rejections_briefly()
settings.check_precision(has_gpu=torch.cuda.is_available())


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="Calibrated probability.")


class Prediction(BaseModel):
    label: str = Field(description="The most likely label.")
    score: float = Field(description="Its calibrated probability.")
    top_k: list[LabelScore] = Field(description="The best labels, most likely first.")
    model: str = Field(description="Tag of the model that answered.")


# Declared, because BentoML otherwise derives an answer's media type from the JSON schema
# of the answer type, rebuilt for every response (0.4 ms each).
Predictions = Annotated[list[Prediction], ContentType("application/json")]


async def describe_model(request: Request) -> JSONResponse:
    return JSONResponse(bentoml.get_current_service().description)


model_info = Starlette(routes=[Route("/model", describe_model, methods=["GET"])])


def resolve_model(ref: str) -> bentoml.Tag:
    """The exact tag ``VISIONTUNE_MODEL`` names (``NAME@production`` by default), resolved once
    at import, so ``bentoml build`` packs it; a reference naming nothing stops the start."""
    try:
        return resolve(ref)
    except StageError as err:
        raise SystemExit(f"visiontune: error: {MODEL_ENV}={ref}: {err}") from None


@bentoml.asgi_app(model_info)
@bentoml.service(workers=settings.workers)
class ImageClassifier:
    stored_model = bentoml.models.BentoModel(resolve_model(settings.model))

    def __init__(self) -> None:
        stored = self.stored_model
        self.tag = str(stored.tag)
        self.metadata = ModelMetadata.model_validate(stored.info.metadata)
        self.labels = self.metadata.labels
        self.predictor = self.load(stored.path)
        self.preprocessing = self.predictor.preprocessing
        self.metrics = PredictionMetrics(
            tag=self.tag,
            backbone=self.metadata.backbone,
            labels=self.labels,
            training_distribution=list(self.metadata.label_distribution.values()),
            low_confidence=settings.low_confidence,
            drift_window=settings.drift_window,
        )
        self.description = {
            "tag": self.tag,
            "stage": recorded_stage(stored.tag),
            "requested": settings.model,
            "created": stored.info.creation_time.isoformat(),
            **self.metadata.model_dump(mode="json"),
            "serving": {
                "device": str(self.predictor.device),
                "precision": self.predictor.precision,
                "max_batch_size": settings.max_batch_size,
                "max_latency_ms": settings.max_latency_ms,
                "workers": settings.workers,
            },
        }
        self.warm_up()

    def load(self, path: str) -> Predictor:
        """The stored model as a calibrated predictor, in eval mode on the serving device."""
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if device.type == "cpu":
            torch.set_num_threads(settings.cpu_threads())
        predictor = Predictor.from_folder(
            path, self.metadata, device=device, autocast_dtype=_autocast_dtype(device)
        )
        if settings.compile:
            predictor.model = torch.compile(predictor.model)
        return predictor

    def warm_up(self) -> None:
        """One full batch before the server accepts requests, so /readyz means fast answers."""
        started = time.perf_counter()
        size = (settings.max_batch_size, self.preprocessing.height, self.preprocessing.width, 3)
        self.predictor(np.zeros(size, dtype=np.uint8))
        logger.info(
            "serving %s on %s: warm-up with a batch of %d took %.2fs",
            self.tag,
            self.predictor.device,
            settings.max_batch_size,
            time.perf_counter() - started,
        )

    def decode(self, images: list[bytes] | list[str]) -> list[np.ndarray]:
        """Image files (bytes, or base64 text) to (height, width, 3) uint8 arrays.

        Blocking: runs in a worker thread. Every bad image is named in one 400.
        """
        started = time.perf_counter()
        arrays, errors = [], []
        for index, image in enumerate(images):
            try:
                data = decode_base64(image, index) if isinstance(image, str) else image
                decoded = decode_image(
                    data, max_pixels=settings.max_pixels, draft_size=self.preprocessing.draft_size
                )
                arrays.append(self.preprocessing.resize(decoded))
            except InputError as err:
                errors.append(err)
            except ImageError as err:
                errors.append(InputError(err.reason, str(err), ("images", index)))
            except Exception as err:  # a decoder failing on hostile bytes is still bad input
                message = f"the image decoder failed ({type(err).__name__})"
                errors.append(InputError("undecodable", message, ("images", index)))
        if errors:
            raise reject(errors)
        self.metrics.preprocess_seconds.observe(time.perf_counter() - started)
        return arrays

    def predict(self, images: list[Decoded]) -> list[Prediction]:
        """One forward pass over a batch, which may mix images of several requests."""
        started = time.perf_counter()
        probabilities = self.predictor(np.stack([image.pixels for image in images]))
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        predictions = [
            self.encode(row, image.top_k) for row, image in zip(probabilities, images, strict=True)
        ]
        for prediction in predictions:
            self.metrics.record(prediction.label, prediction.score)
        return predictions

    def encode(self, probabilities: np.ndarray, top_k: int) -> Prediction:
        best = np.argsort(probabilities)[::-1][:top_k]
        ranked = [LabelScore(label=self.labels[i], score=float(probabilities[i])) for i in best]
        return Prediction(
            label=ranked[0].label, score=ranked[0].score, top_k=ranked, model=self.tag
        )

    @bentoml.api(input_spec=ImageFiles, **settings.batching)
    def classify(self, images: list[Decoded]) -> Predictions:
        """Classify image files sent as the multipart form field `images` (one or many)."""
        return self.predict(images)

    @bentoml.api(input_spec=Base64Images, **settings.batching)
    def classify_json(self, images: list[Decoded]) -> Predictions:
        """Classify base64-encoded image files: {"images": [...], "top_k": k}."""
        return self.predict(images)


ImageClassifier.add_asgi_middleware(BodyLimit, max_bytes=settings.max_body_bytes)


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    gpu_has_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    name = settings.autocast_dtype(device.type, gpu_has_bf16)
    return getattr(torch, name) if name else None
