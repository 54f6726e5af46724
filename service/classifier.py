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

import gc
import logging
import time
from pathlib import PurePath
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

from contract.predictor import Predictor
from contract.savedmodel import MODEL_ENV, ModelMetadata
from contract.stages import StageError, recorded_stage, resolve
from service import batching, limits, logs, v2
from service.auth import BearerAuth, configured_token
from service.deadworkers import ForgetDeadWorkers
from service.faults import BatchFailureAnswer, run_batch
from service.gpu_decode import GpuJpegDecoder, nvjpeg, stack_pixels, torchvision_available
from service.inputs import Base64Images, BodyLimit, Decoded, ImageFiles, decode_images
from service.metrics import PredictionMetrics
from service.runtime import build_runtime, onnxruntime_providers
from service.settings import settings

logger = logging.getLogger("bentoml.visiontune")
batching.install()  # before BentoML builds this service's batching dispatchers
limits.install()  # before BentoML builds its middlewares
logs.log_rejections_briefly()
settings.check_precision(has_gpu=torch.cuda.is_available())
settings.check_gpu_decode(torch.cuda.is_available(), torchvision_available())
settings.check_runtime(torch.cuda.is_available(), onnxruntime_providers())


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


model_info = Starlette(routes=[Route("/model", describe_model, methods=["GET"]), *v2.routes])


def resolve_model(ref: str) -> bentoml.Tag:
    """The exact tag ``VISIONTUNE_MODEL`` names (``NAME@production`` by default), resolved once
    at import, so ``bentoml build`` packs it; a reference naming nothing stops the start."""
    try:
        return resolve(ref)
    except StageError as err:
        raise SystemExit(f"visiontune: error: {MODEL_ENV}={ref}: {err}") from None


SERVED = resolve_model(settings.model)


@bentoml.asgi_app(model_info)
@bentoml.service(workers=settings.workers, **settings.bentoml_config)
class ImageClassifier:
    stored_model = bentoml.models.BentoModel(SERVED)

    def __init__(self) -> None:
        stored = self.stored_model
        self.tag = str(stored.tag)
        self.metadata = ModelMetadata.model_validate(stored.info.metadata)
        self.labels = self.metadata.labels
        self.predictor = self.load(stored.path)
        self.preprocessing = self.predictor.preprocessing
        self.metrics = PredictionMetrics(
            tag=self.tag,
            backbone=public_name(self.metadata.backbone),
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
            **public_metadata(self.metadata),
            "serving": {
                "device": str(self.predictor.device),
                "precision": self.predictor.precision,
                "precision_reason": self.precision_reason,
                **self.runtime.description(),
                "compiled": settings.compile,
                "gpu_decode": settings.gpu_decode,
                "max_batch_size": settings.max_batch_size,
                "forward_batch": self.predictor.forward_batch or settings.max_batch_size,
                "forward_batch_reason": self.forward_batch_reason,
                "max_latency_ms": settings.max_latency_ms,
                "workers": settings.workers,
                "max_concurrency": settings.max_concurrency,
                "decode_threads": settings.decode_slots(),
                "max_images": settings.max_images,
                "max_body_bytes": settings.max_body_bytes,
            },
        }
        self.warm_up()
        # Everything built so far (the model, torch, transformers, BentoML) lives as long as
        # the worker: keep it out of the garbage collector's full collections, which would
        # otherwise walk it every few seconds under load and stall the worker (BENCHMARKS.md).
        gc.collect()
        gc.freeze()

    def load(self, path: str) -> Predictor:
        """The stored model as a calibrated predictor on the runtime ``service.runtime`` chooses
        (why: ``self.runtime``), in eval mode on the serving device, in its precision (why:
        ``self.precision_reason``); with the GPU JPEG decoder (``self.gpu_jpegs``) if asked."""
        self.runtime = build_runtime(path, self.metadata, settings)
        self.precision_reason = self.runtime.precision_reason
        self.forward_batch_reason = self.runtime.forward_batch_reason
        predictor = self.runtime.predictor
        self.gpu_jpegs = (
            GpuJpegDecoder(predictor.preprocessing, settings.max_pixels, nvjpeg(predictor.device))
            if settings.gpu_decode
            else None
        )
        return predictor

    def warm_up(self) -> None:
        """A full batch before the server accepts requests, so /readyz means fast answers.

        A compiled model also runs a batch of one: Inductor builds a graph for any batch
        size and one specialised for size 1, and both are built here, not on a request.
        """
        started = time.perf_counter()
        sizes = [settings.max_batch_size]
        if settings.compile and settings.max_batch_size > 1:
            sizes.append(1)
        for batch in sizes:
            shape = (batch, self.preprocessing.height, self.preprocessing.width, 3)
            self.predictor(np.zeros(shape, dtype=np.uint8))
        logger.info(
            "serving %s on %s: warm-up with a batch of %d%s took %.2fs",
            self.tag,
            self.predictor.device,
            settings.max_batch_size,
            " and one of 1 (compiling)" if len(sizes) > 1 else "",
            time.perf_counter() - started,
        )

    def decode(self, images: list[bytes] | list[str]) -> list[np.ndarray]:
        """Image files (bytes, or base64 text) to (height, width, 3) uint8 arrays.

        Blocking: runs in a worker thread. Every bad image is named in one 400.
        """
        started = time.perf_counter()
        on_gpu = self.gpu_jpegs(images) if self.gpu_jpegs else {}
        arrays = decode_images(images, self.preprocessing, decoded=on_gpu)
        self.metrics.preprocess_seconds.observe(time.perf_counter() - started)
        return arrays

    def predict(self, images: list[Decoded]) -> list[Prediction]:
        """One forward pass over a batch, which may mix images of several requests."""
        started = time.perf_counter()
        probabilities = run_batch(self.predictor, stack_pixels([image.pixels for image in images]))
        self.metrics.inference_seconds.observe(time.perf_counter() - started)
        predictions = [
            self.encode(row, image.top_k) for row, image in zip(probabilities, images, strict=True)
        ]
        for prediction in predictions:
            self.metrics.record(prediction.label, prediction.score)
        return predictions

    def encode(self, probabilities: np.ndarray, top_k: int) -> Prediction:
        """The best ``top_k`` labels; built without validation, as every field is ours."""
        best = np.argsort(probabilities)[::-1][:top_k]
        ranked = [
            LabelScore.model_construct(label=self.labels[i], score=float(probabilities[i]))
            for i in best
        ]
        return Prediction.model_construct(
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

    @bentoml.api(
        route=v2.INFER_ROUTE,
        input_spec=v2.InferInput,
        output_spec=v2.InferOutput,
        **settings.batching,
    )
    def infer(self, items: list[v2.Item]) -> list[v2.Row]:
        """Open Inference Protocol (KServe v2): image files (BYTES) or pixel_values (FP32)."""
        return v2.predict(self, items)


# The first added is the outermost: a request without the token is refused before its body is read.
ImageClassifier.add_asgi_middleware(BearerAuth, token=configured_token(settings))
ImageClassifier.add_asgi_middleware(v2.V2Gate, tag=str(SERVED))
ImageClassifier.add_asgi_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
ImageClassifier.add_asgi_middleware(limits.RetryAfter)
ImageClassifier.add_asgi_middleware(BatchFailureAnswer)
ImageClassifier.add_asgi_middleware(ForgetDeadWorkers)


def public_metadata(metadata: ModelMetadata) -> dict:
    """The metadata for ``/model``, without the paths of the machine that trained it (data
    and output folders, skipped files, a backbone loaded from a folder): the run
    report keeps them."""
    described = metadata.model_dump(mode="json")
    described["backbone"] = public_name(metadata.backbone)
    config = {
        key: value
        for key, value in metadata.training_config.items()
        if key not in ("output_dir", "skipped_files")
    }
    for key in ("data", "backbone"):
        if isinstance(config.get(key), str):
            config[key] = public_name(config[key])
    described["training_config"] = config
    return described


def public_name(source: str) -> str:
    """A hub id or dataset name as is; a local path as ``local folder NAME`` (its last part)."""
    if source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source:
        return f"local folder {PurePath(source).name}"
    return source
