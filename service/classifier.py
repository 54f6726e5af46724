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

This module reads in the order things happen when BentoML imports it:
``prepare_bentoml`` (what must be in place before BentoML builds the service),
the service class, then its ``middlewares``, outermost first.
"""

from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass
from pathlib import PurePath
from typing import Annotated, Any

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
from service.faults import FailureAnswer, FailureRecords, run_batch
from service.gpu_decode import GpuJpegDecoder, nvjpeg, stack_pixels, torchvision_available
from service.inputs import Base64Images, Decoded, ImageFiles, decode_images
from service.metrics import PredictionMetrics
from service.runtime import build_runtime, onnxruntime_providers
from service.settings import settings
from service.uploads import BodyLimit

logger = logging.getLogger("bentoml.visiontune")


def prepare_bentoml() -> None:
    """Everything that must be in place before BentoML builds the service below, in order.

    1. Settings this machine cannot honour stop the start here, before any worker spawns.
    2. BentoML builds each batchable API's dispatcher, and its traffic middlewares, from
       classes it looks up when it builds the app: ``service.batching`` and
       ``service.limits`` replace them first (both touch BentoML internals; their
       modules say why).
    3. BentoML's exception log gets our filters: a rejected input is one INFO line
       (``service.logs``), and a failed batch or refused request is noted for the
       answer that names it (``service.faults``).
    """
    settings.check_precision(has_gpu=torch.cuda.is_available())
    settings.check_gpu_decode(torch.cuda.is_available(), torchvision_available())
    settings.check_runtime(torch.cuda.is_available(), onnxruntime_providers())
    batching.install()
    limits.install()
    logs.filter_exceptions(logs.RejectedInputRecords(), FailureRecords())


prepare_bentoml()


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


@dataclass(frozen=True)
class Loaded:
    """What ``ImageClassifier.load`` makes: the predictor as it will serve, the GPU JPEG
    decoder if asked for, and why the runtime, precision and forward-pass size are what
    they are (``service.runtime``)."""

    predictor: Predictor
    gpu_jpegs: GpuJpegDecoder | None
    precision_reason: str
    forward_batch_reason: str
    runtime: dict[str, Any]


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
        loaded = self.load(stored.path, self.metadata)
        self.predictor = loaded.predictor
        self.preprocessing = loaded.predictor.preprocessing
        self.gpu_jpegs = loaded.gpu_jpegs
        self.metrics = PredictionMetrics(
            tag=self.tag,
            backbone=public_name(self.metadata.backbone),
            labels=self.labels,
            training_distribution=list(self.metadata.label_distribution.values()),
            low_confidence=settings.low_confidence,
            drift_window=settings.drift_window,
        )
        self.description = describe(stored, self.metadata, loaded)
        self.warm_up()
        # Everything built so far (the model, torch, transformers, BentoML) lives as long as
        # the worker: keep it out of the garbage collector's full collections, which would
        # otherwise walk it every few seconds under load and stall the worker (BENCHMARKS.md).
        gc.collect()
        gc.freeze()

    def load(self, path: str, metadata: ModelMetadata) -> Loaded:
        """The stored model as a calibrated predictor on the runtime ``service.runtime``
        chooses, in eval mode on the serving device, in its precision, in forward passes of
        the size chosen, compiled if asked; with the GPU JPEG decoder if asked."""
        runtime = build_runtime(path, metadata, settings)
        predictor = runtime.predictor
        gpu_jpegs = (
            GpuJpegDecoder(predictor.preprocessing, settings.max_pixels, nvjpeg(predictor.device))
            if settings.gpu_decode
            else None
        )
        return Loaded(
            predictor,
            gpu_jpegs,
            runtime.precision_reason,
            runtime.forward_batch_reason,
            runtime.description(),
        )

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


def middlewares() -> list[tuple[type, dict[str, Any]]]:
    """The service's ASGI middlewares, outermost first, with what each needs from the others.

    BentoML wraps them in its own (outermost first: request metrics, tracing, the access
    log, ``limits.Deadline``, ``limits.ServerFull``) and puts its context middleware and
    the app inside them.
    """
    return [
        # First, so that a request without the token is refused before its body is read.
        (BearerAuth, {"token": configured_token(settings)}),
        # /v2 (the Open Inference Protocol): another model's name is a 404, errors in its shape.
        (v2.V2Gate, {"tag": str(SERVED)}),
        # Too large a body is refused before anything reads it. Outside every middleware that
        # answers, so that once a client has left mid-upload, whatever is answered goes out as
        # one 499 (and BentoML's metrics, outside, count it so).
        (BodyLimit, {"max_bytes": settings.max_body_bytes}),
        # Every 503 answered inside it says when to retry: FailureAnswer's included.
        (limits.RetryAfter, {}),
        # Replaces BentoML's bare 500 of a failed batch and 503 of a refused request with
        # answers naming them; inside RetryAfter, so its 503 gains Retry-After.
        (FailureAnswer, {"max_latency_ms": settings.max_latency_ms}),
        # Only touches GET /metrics: drops dead workers' gauges before BentoML answers it.
        (ForgetDeadWorkers, {}),
    ]


for _middleware, _options in middlewares():
    ImageClassifier.add_asgi_middleware(_middleware, **_options)


def describe(stored: bentoml.Model, metadata: ModelMetadata, loaded: Loaded) -> dict[str, Any]:
    """What ``GET /model`` answers: the model, its stage and metadata, and how it is served."""
    predictor = loaded.predictor
    return {
        "tag": str(stored.tag),
        "stage": recorded_stage(stored.tag),
        "requested": settings.model,
        "created": stored.info.creation_time.isoformat(),
        **public_metadata(metadata),
        "serving": {
            "device": str(predictor.device),
            "precision": predictor.precision,
            "precision_reason": loaded.precision_reason,
            **loaded.runtime,
            "compiled": settings.compile,
            "gpu_decode": settings.gpu_decode,
            "max_batch_size": settings.max_batch_size,
            "forward_batch": predictor.forward_batch or settings.max_batch_size,
            "forward_batch_reason": loaded.forward_batch_reason,
            "max_latency_ms": settings.max_latency_ms,
            "workers": settings.workers,
            "max_concurrency": settings.max_concurrency,
            "decode_threads": settings.decode_slots(),
            "max_images": settings.max_images,
            "max_body_bytes": settings.max_body_bytes,
        },
    }


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
