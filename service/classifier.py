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
import threading
import time
from collections import defaultdict
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

from contract.capture import CaptureError
from contract.predictor import Predictor
from contract.savedmodel import MODEL_ENV, ModelMetadata
from contract.stages import StageError, recorded_stage, resolve
from service import batching, limits, logs, routing, v2
from service.auth import BearerAuth, configured_token
from service.capture import CaptureWriter, Sampler
from service.deadworkers import ForgetDeadWorkers
from service.faults import FailureAnswer, FailureRecords, run_batch
from service.gpu_decode import GpuJpegDecoder, nvjpeg, stack_pixels, torchvision_available
from service.inputs import Base64Images, Decoded, ImageFiles, decode_images
from service.live import LiveTraffic
from service.metrics import PredictionMetrics, ShadowMetrics, capture_counters, collectors
from service.runtime import build_runtime, onnxruntime_providers
from service.settings import SHADOW_ENV, settings
from service.shadow import Shadow
from service.uploads import BodyLimit

logger = logging.getLogger("bentoml.visiontune")


def prepare_bentoml() -> None:
    """Everything that must be in place before BentoML builds the service below, in order.

    1. Settings this machine cannot honour stop the start here, before any worker spawns;
       so does a capture location that can't be written.
    2. BentoML builds each batchable API's dispatcher, and its traffic middlewares, from
       classes it looks up when it builds the app: ``service.batching`` and
       ``service.limits`` replace them first (both touch BentoML internals; their
       modules say why).
    3. BentoML's exception log gets our filters: a rejected input is one INFO line
       (``service.logs``), and a failed batch or refused request is noted for the
       answer that names it (``service.faults``); its access log names each request's
       inference id (``service.routing``).
    """
    settings.check_precision(has_gpu=torch.cuda.is_available())
    settings.check_gpu_decode(torch.cuda.is_available(), torchvision_available())
    settings.check_runtime(torch.cuda.is_available(), onnxruntime_providers())
    check_capture()
    batching.install()
    limits.install()
    logs.filter_exceptions(logs.RejectedInputRecords(), FailureRecords())
    logs.log_inference_ids()


def check_capture() -> None:
    """A capture location that can't be written stops the start, with the variable named."""
    if settings.capture is None:
        return
    try:
        CaptureWriter(settings.capture, max_bytes=1).check()
    except CaptureError as err:
        raise SystemExit(f"visiontune: error: {err}") from None


prepare_bentoml()


class LabelScore(BaseModel):
    label: str
    score: float = Field(description="Calibrated probability.")


class Prediction(BaseModel):
    label: str = Field(description="The most likely label.")
    score: float = Field(description="Its calibrated probability.")
    top_k: list[LabelScore] = Field(description="The best labels, most likely first.")
    model: str = Field(description="Tag of the model that answered.")
    inference_id: str = Field(
        description="This answer's id (the request's X-Inference-Id, then -INDEX): what "
        "joins a label given later to the image and the answer (docs/capture.md)."
    )


# Declared, because BentoML otherwise derives an answer's media type from the JSON schema
# of the answer type, rebuilt for every response (0.4 ms each).
Predictions = Annotated[list[Prediction], ContentType("application/json")]


async def describe_model(request: Request) -> JSONResponse:
    """The default model, with every model under ``models``; ``/models/NAME/model``: NAME's."""
    service = bentoml.get_current_service()
    asked = routing.current()
    if asked is not None and asked.model is not None:
        return JSONResponse(service.models[asked.model].description)
    return JSONResponse(service.description)


model_info = Starlette(routes=[Route("/model", describe_model, methods=["GET"]), *v2.routes])


def resolve_model(ref: str, variable: str = MODEL_ENV) -> bentoml.Tag:
    """The exact tag a reference names (``NAME@production`` by default), resolved once at
    import, so ``bentoml build`` packs it; a reference naming nothing stops the start."""
    try:
        return resolve(ref)
    except StageError as err:
        raise SystemExit(f"visiontune: error: {variable}={ref}: {err}") from None


def served_models() -> dict[str, bentoml.models.BentoModel]:
    """Every model served, by name (``VISIONTUNE_MODELS``, or ``VISIONTUNE_MODEL`` alone)."""
    variable = "VISIONTUNE_MODELS" if settings.models else MODEL_ENV
    return {
        name: bentoml.models.BentoModel(resolve_model(ref, variable))
        for name, ref in settings.served_models.items()
    }


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


@dataclass
class ServedModel:
    """One stored model ready to answer: what ``ImageClassifier.load_model`` makes."""

    name: str
    tag: str
    metadata: ModelMetadata
    loaded: Loaded
    description: dict[str, Any]
    metrics: PredictionMetrics | None = None  # the served models'; a shadow has its own

    @property
    def predictor(self) -> Predictor:
        return self.loaded.predictor

    @property
    def labels(self) -> list[str]:
        return self.metadata.labels


@bentoml.asgi_app(model_info)
@bentoml.service(workers=settings.workers, **settings.bentoml_config)
class ImageClassifier:
    stored_models = served_models()
    stored_shadow = (
        bentoml.models.BentoModel(resolve_model(settings.shadow, SHADOW_ENV))
        if settings.shadow
        else None
    )

    def __init__(self) -> None:
        # every forward pass of this worker, served or shadow, one at a time (service.shadow)
        self.forward_lock = threading.Lock()
        self.models = {
            name: self.load_model(name, reference.resolve())
            for name, reference in self.stored_models.items()
        }
        self.default = next(iter(self.models.values()))
        for served in self.models.values():
            served.metrics = prediction_metrics(served)
        collectors().model = self.default.tag  # rejections before a model is known
        shadow = self.load_model("shadow", self.stored_shadow) if self.stored_shadow else None
        self.description = {
            **self.default.description,
            "models": {name: served.description for name, served in self.models.items()},
            "shadow": shadow.description if shadow else None,
        }
        self.live = LiveTraffic(*self.capture(), self.start_shadow(shadow))
        # Everything built so far (the model, torch, transformers, BentoML) lives as long as
        # the worker: keep it out of the garbage collector's full collections, which would
        # otherwise walk it every few seconds under load and stall the worker (BENCHMARKS.md).
        gc.collect()
        gc.freeze()

    def load_model(self, name: str, stored: bentoml.Model) -> ServedModel:
        """A stored model loaded (``load``), warmed up and described: the one way every model
        of this worker (each of ``VISIONTUNE_MODELS``, the shadow) becomes ready to answer."""
        metadata = ModelMetadata.model_validate(stored.info.metadata)
        loaded = self.load(stored.path, metadata)
        served = ServedModel(
            name=name,
            tag=str(stored.tag),
            metadata=metadata,
            loaded=loaded,
            description=describe(name, stored, metadata, loaded),
        )
        self.warm_up(served)
        return served

    def capture(self) -> tuple[CaptureWriter | None, Sampler | None]:
        """The worker's capture writer and sampler (None, None: capture off)."""
        if settings.capture is None:
            return None, None
        tags = [served.tag for served in self.models.values()]

        def full(is_full: bool) -> None:
            for tag in tags:
                collectors().capture_full.labels(model=tag).set(int(is_full))

        writer = CaptureWriter(
            settings.capture,
            max_bytes=int(settings.capture_max_gb * 1e9),
            queue_size=settings.capture_queue,
            counters=capture_counters(full),
        ).start()
        low = settings.low_confidence if settings.capture_low_confidence else None
        return writer, Sampler(settings.capture_rate, low)

    def start_shadow(self, shadow: ServedModel | None) -> Shadow | None:
        if shadow is None:
            return None
        rate = settings.shadow_share(torch.cuda.is_available())
        logger.info(
            "shadowing %s with %s on %.0f%% of its images", self.default.tag, shadow.tag, 100 * rate
        )
        return Shadow(
            tag=shadow.tag,
            predictor=shadow.predictor,
            labels=shadow.labels,
            rate=rate,
            forward_lock=self.forward_lock,
            metrics=ShadowMetrics(self.default.tag, shadow.tag),
            low_confidence=settings.low_confidence,
        )

    def model_name(self, name: str | None) -> str:
        """The served model a request names (None: the default); UnknownModel if none."""
        if name is None:
            return self.default.name
        return routing.check_model(name, list(self.models))

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

    def warm_up(self, served: ServedModel) -> None:
        """A full batch before the server accepts requests, so /readyz means fast answers.

        A compiled model also runs a batch of one: Inductor builds a graph for any batch
        size and one specialised for size 1, and both are built here, not on a request.
        """
        started = time.perf_counter()
        sizes = [settings.max_batch_size]
        if settings.compile and settings.max_batch_size > 1:
            sizes.append(1)
        preprocessing = served.predictor.preprocessing
        for batch in sizes:
            shape = (batch, preprocessing.height, preprocessing.width, 3)
            served.predictor(np.zeros(shape, dtype=np.uint8))
        logger.info(
            "serving %s (%s) on %s: warm-up with a batch of %d%s took %.2fs",
            served.tag,
            served.name,
            served.predictor.device,
            settings.max_batch_size,
            " and one of 1 (compiling)" if len(sizes) > 1 else "",
            time.perf_counter() - started,
        )

    def decode(self, images: list[bytes] | list[str], model: str) -> list[np.ndarray]:
        """Image files (bytes, or base64 text) to the (height, width, 3) uint8 arrays ``model``
        takes.

        Blocking: runs in a worker thread. Every bad image is named in one 400.
        """
        served = self.models[model]
        started = time.perf_counter()
        gpu_jpegs = served.loaded.gpu_jpegs
        on_gpu = gpu_jpegs(images) if gpu_jpegs else {}
        arrays = decode_images(images, served.predictor.preprocessing, decoded=on_gpu)
        served.metrics.preprocess_seconds.observe(time.perf_counter() - started)
        return arrays

    def predict(self, images: list[Decoded]) -> list[Prediction]:
        """A batch, which may mix images of several requests and models: one forward pass per
        model, never two models in one. Capture and the shadow take over after it."""
        by_model: dict[str, list[int]] = defaultdict(list)
        for index, image in enumerate(images):
            by_model[image.model].append(index)
        predictions: list[Prediction | None] = [None] * len(images)
        for name, indices in by_model.items():
            served, batch = self.models[name], [images[i] for i in indices]
            pixels = stack_pixels([image.pixels for image in batch])
            started = time.perf_counter()
            with self.forward_lock:
                probabilities = run_batch(served.predictor, pixels)
            seconds = time.perf_counter() - started
            served.metrics.inference_seconds.observe(seconds)
            answers = [
                self.encode(served, row, image)
                for row, image in zip(probabilities, batch, strict=True)
            ]
            for index, answer in zip(indices, answers, strict=True):
                predictions[index] = answer
                served.metrics.record(answer.label, answer.score)
            shadowed = served is self.default
            self.live.after_batch(served.tag, batch, answers, pixels, seconds, shadowed)
        return predictions

    def encode(self, served: ServedModel, probabilities: np.ndarray, image: Decoded) -> Prediction:
        """The best ``top_k`` labels; built without validation, as every field is ours."""
        best = np.argsort(probabilities)[::-1][: image.top_k]
        ranked = [
            LabelScore.model_construct(label=served.labels[i], score=float(probabilities[i]))
            for i in best
        ]
        return Prediction.model_construct(
            label=ranked[0].label,
            score=ranked[0].score,
            top_k=ranked,
            model=served.tag,
            inference_id=f"{image.request.inference_id}-{image.index}",
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
        # /v2 (the Open Inference Protocol) serves the default model: another model's name is a
        # 404, errors in its shape.
        (v2.V2Gate, {"tag": str(next(iter(ImageClassifier.inner.stored_models.values())).tag)}),
        # Too large a body is refused before anything reads it. Outside every middleware that
        # answers, so that once a client has left mid-upload, whatever is answered goes out as
        # one 499 (and BentoML's metrics, outside, count it so).
        (BodyLimit, {"max_bytes": settings.max_body_bytes}),
        # Every 503 answered inside it says when to retry: FailureAnswer's included.
        (limits.RetryAfter, {}),
        # Replaces BentoML's bare 500 of a failed batch and 503 of a refused request with
        # answers naming them; inside RetryAfter, so its 503 gains Retry-After.
        (FailureAnswer, {"max_latency_ms": settings.max_latency_ms}),
        # The inference id (its header kept by FailureAnswer's answers, outside) and the
        # model a /models/NAME/... path names; an unknown NAME is a 404 before the body is read.
        (
            routing.Requests,
            {
                "models": list(settings.served_models),
                "captured_headers": settings.capture_headers,
            },
        ),
        # Only touches GET /metrics: drops dead workers' gauges before BentoML answers it.
        (ForgetDeadWorkers, {}),
    ]


for _middleware, _options in middlewares():
    ImageClassifier.add_asgi_middleware(_middleware, **_options)

# `bentoml build` packs every model the service names: BentoML finds the class attributes
# that are models (the shadow), and the served models, held in a dict, are added here.
ImageClassifier.models.extend(ImageClassifier.inner.stored_models.values())


def prediction_metrics(served: ServedModel) -> PredictionMetrics:
    """A served model's metrics, labelled by its tag."""
    return PredictionMetrics(
        tag=served.tag,
        backbone=public_name(served.metadata.backbone),
        labels=served.labels,
        training_distribution=list(served.metadata.label_distribution.values()),
        low_confidence=settings.low_confidence,
        drift_window=settings.drift_window,
    )


def describe(
    name: str, stored: bentoml.Model, metadata: ModelMetadata, loaded: Loaded
) -> dict[str, Any]:
    """What ``GET /model`` answers: the model, its stage and metadata, and how it is served."""
    predictor = loaded.predictor
    return {
        "name": name,
        "tag": str(stored.tag),
        "stage": recorded_stage(stored.tag),
        "requested": settings.served_models.get(name, settings.shadow),
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
