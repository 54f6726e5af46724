"""The Open Inference Protocol over the service: ``/v2`` beside ``/classify``.

``POST /v2/models/{name}/infer`` is a batchable BentoML API like ``/classify``: its
input spec (``InferInput``) reads the request with ``service.oip``, decodes a BYTES
input of image files in the worker's decode threads (``service.inputs``: the same
checks, limits and rejection metrics), and hands BentoML's batching dispatcher one
``Item`` per image, so infer requests are batched with each other on the same model
and forward-batch size. A ``pixel_values`` input (FP32, already normalised, for
callers that preprocess) skips decoding and normalisation. The answer
(``InferOutput``) is written per request from its rows: ``probabilities`` (FP32, one
calibrated row per image) as JSON or binary, or with the classification extension
the ``k`` best as ``"score:index:label"``.

Health and metadata are plain routes of the service's mounted ASGI app (``routes``):
``/v2/health/live``, ``/v2/health/ready``, ``/v2``, ``/v2/models/{name}``,
``/v2/models/{name}/ready`` (and the same under ``/versions/{version}``). ``V2Gate``
(ASGI middleware) answers a request naming another model 404, and gives every
``/v2`` error the protocol's shape, ``{"error": message}`` (the service's
``detail`` list is kept beside it).
"""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar, NamedTuple

import anyio
import bentoml
import numpy as np
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.errors import send_error
from service.faults import run_batch
from service.gpu_decode import stack_pixels
from service.inputs import InputError, reject
from service.limits import in_decode_thread
from service.oip import (
    HEADER_LENGTH,
    InferRequest,
    OipError,
    OutputTensor,
    TensorSpec,
    classification,
    encode_infer_response,
    model_metadata,
    parse_infer_request,
)
from service.settings import settings

INFER_ROUTE = "/v2/models/{model_name}/infer"
PROBABILITIES = "probabilities"
EXTENSIONS = ["classification", "binary_tensor_data"]


def input_specs(height: int, width: int) -> list[TensorSpec]:
    return [
        TensorSpec("images", "BYTES", (-1,)),
        TensorSpec("pixel_values", "FP32", (-1, 3, height, width)),
    ]


def output_specs(labels: int) -> list[TensorSpec]:
    return [TensorSpec(PROBABILITIES, "FP32", (-1, labels))]


class Item(NamedTuple):
    """One image of an infer request: model-size uint8 pixels or normalised pixel values."""

    pixels: np.ndarray | None
    pixel_values: np.ndarray | None
    request: InferRequest


class Row(NamedTuple):
    probabilities: np.ndarray
    request: InferRequest


class InferTensor(BaseModel):
    name: str = Field(description="images (BYTES: image files) or pixel_values (FP32).")
    datatype: str = Field(description="BYTES or FP32.")
    shape: list[int]
    data: list[Any] | None = Field(
        None, description="Row-major; BYTES as base64 text. Absent with binary_data_size."
    )
    parameters: dict[str, Any] | None = None


class InferRequestBody(BaseModel):
    """A KServe v2 / Open Inference Protocol infer request (binary data extension too)."""

    id: str | None = None
    inputs: list[InferTensor]
    outputs: list[dict[str, Any]] | None = Field(
        None, description='{"name": "probabilities", "parameters": {"classification": k}}'
    )
    parameters: dict[str, Any] | None = None


class InferInput(bentoml.IODescriptor):
    """POST /v2/models/{name}/infer: an Open Inference Protocol infer request."""

    items: list[Any]

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return InferRequestBody.model_json_schema(*args, **kwargs)

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> InferInput:
        service = bentoml.get_current_service()
        served = service.default
        body = await request.body()
        header_length = request.headers.get(HEADER_LENGTH)
        height, width = served.predictor.preprocessing.height, served.predictor.preprocessing.width
        try:
            parsed = await anyio.to_thread.run_sync(
                parse_infer_request,
                body,
                header_length,
                input_specs(height, width),
                output_specs(len(served.labels)),
            )
            return cls.model_construct(items=await _items(service, parsed))
        except OipError as err:
            raise reject([InputError(err.reason, str(err))]) from None


async def _items(service, parsed: InferRequest) -> list[Item]:
    if len(parsed.inputs) != 1:
        raise OipError(
            "give exactly one input: images (BYTES, image files) or pixel_values (FP32)",
            "missing_field" if not parsed.inputs else "invalid_tensor",
        )
    [(name, tensor)] = parsed.inputs.items()
    if len(tensor) > settings.max_images:
        raise OipError(
            f"{len(tensor)} images in one request; at most {settings.max_images} "
            "(VISIONTUNE_MAX_IMAGES)",
            "too_many_images",
        )
    if not len(tensor):
        raise OipError(f"input {name!r} holds no images", "missing_field")
    if name == "pixel_values":
        return [Item(None, row, parsed) for row in tensor]
    arrays = await in_decode_thread(service.decode, tensor, service.default.name)
    return [Item(pixels, None, parsed) for pixels in arrays]


class InferOutput(bentoml.IODescriptor):
    """An Open Inference Protocol infer answer (JSON, or JSON then binary outputs)."""

    media_type: ClassVar[str] = "application/json"
    model_name: str
    outputs: list[dict[str, Any]]

    @classmethod
    async def to_http_response(cls, obj: list[Row], serde: Any) -> Response:
        served = bentoml.get_current_service().default
        request = obj[0].request
        scores = np.stack([row.probabilities for row in obj])
        outputs = []
        for wanted in request.outputs:
            if wanted.classification:
                rows = classification(scores, wanted.classification, served.labels)
                shape = [len(rows), len(rows[0])]
                outputs.append(OutputTensor(wanted.name, "BYTES", shape, sum(rows, [])))
            else:
                outputs.append(OutputTensor(wanted.name, "FP32", list(scores.shape), scores))
        binary = {wanted.name for wanted in request.outputs if wanted.binary}
        tag = bentoml.Tag.from_taglike(served.tag)
        body, headers = encode_infer_response(
            tag.name, str(tag.version), request.id, outputs, binary
        )
        return Response(body, headers=headers, media_type=headers["content-type"])


def predict(service, items: list[Item]) -> list[Row]:
    """One forward pass of the default model over a batch of infer items (files and pixel
    values may mix), holding the worker's forward-pass lock like ``/classify``."""
    served = service.default
    started = time.perf_counter()
    scores: list[np.ndarray | None] = [None] * len(items)
    files = [i for i, item in enumerate(items) if item.pixels is not None]
    given = [i for i, item in enumerate(items) if item.pixels is None]
    if files:
        batch = stack_pixels([items[i].pixels for i in files])
        with service.forward_lock:
            rows = run_batch(served.predictor, batch)
        for index, row in zip(files, rows, strict=True):
            scores[index] = row
    if given:
        values = np.stack([items[i].pixel_values for i in given])
        with service.forward_lock:
            rows = run_batch(served.predictor.classify_pixel_values, values)
        for index, row in zip(given, rows, strict=True):
            scores[index] = row
    served.metrics.inference_seconds.observe(time.perf_counter() - started)
    for row in scores:
        best = int(np.argmax(row))
        served.metrics.record(served.labels[best], float(row[best]))
    return [Row(row, item.request) for row, item in zip(scores, items, strict=True)]


async def server_metadata(request: Request) -> JSONResponse:
    from importlib.metadata import version

    return JSONResponse(
        {"name": "visiontune", "version": version("visiontune"), "extensions": EXTENSIONS}
    )


async def live(request: Request) -> Response:
    return Response(status_code=200)


async def ready(request: Request) -> Response:
    """The worker answers only once the service is built and warmed up (like /readyz)."""
    service = bentoml.get_current_service()
    return Response(status_code=200 if getattr(service, "default", None) else 503)


async def metadata(request: Request) -> JSONResponse:
    served = bentoml.get_current_service().default
    tag = bentoml.Tag.from_taglike(served.tag)
    preprocessing = served.predictor.preprocessing
    return JSONResponse(
        model_metadata(
            tag.name,
            [str(tag.version)],
            f"visiontune_{served.predictor.runtime}",
            input_specs(preprocessing.height, preprocessing.width),
            output_specs(len(served.labels)),
        )
    )


routes = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", live, methods=["GET"]),
    Route("/v2/health/ready", ready, methods=["GET"]),
    Route("/v2/models/{model_name}", metadata, methods=["GET"]),
    Route("/v2/models/{model_name}/ready", ready, methods=["GET"]),
    Route("/v2/models/{model_name}/versions/{version}", metadata, methods=["GET"]),
    Route("/v2/models/{model_name}/versions/{version}/ready", ready, methods=["GET"]),
]


class V2Gate:
    """ASGI middleware for ``/v2/models/...``: another model's name (or version) is a 404, and
    every ``/v2`` error answers ``{"error": message}`` (the protocol's shape)."""

    def __init__(self, app, tag: str):
        self.app = app
        tag_ = bentoml.Tag.from_taglike(tag)
        self.name, self.version = tag_.name, str(tag_.version)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith("/v2"):
            return await self.app(scope, receive, send)
        parts = scope["path"].split("/")
        if len(parts) > 3 and parts[2] == "models":
            if parts[3] != self.name:
                return await send_error(
                    send,
                    404,
                    "unknown_model",
                    f"unknown model {parts[3]!r}; this server serves {self.name!r}",
                )
            if len(parts) > 5 and parts[4] == "versions" and parts[5] != self.version:
                return await send_error(
                    send,
                    404,
                    "unknown_model",
                    f"unknown version {parts[5]!r} of {self.name!r}; it serves {self.version!r}",
                )
        await self.app(scope, receive, _error_shape(send))


def _error_shape(send):
    """``send``, with an error answer's JSON rewritten to carry a readable ``error``."""
    start: dict | None = None
    chunks: list[bytes] = []

    async def shaped(message):
        nonlocal start
        if message["type"] == "http.response.start" and message["status"] >= 400:
            start = message
            return None
        if start is None:
            return await send(message)
        chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return None
        body = _protocol_error(b"".join(chunks))
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return shaped


def _protocol_error(body: bytes) -> bytes:
    try:
        answer = json.loads(body)
    except ValueError:
        return json.dumps({"error": body.decode(errors="replace") or "error"}).encode()
    if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], dict):
        answer = answer[0]
    if not isinstance(answer, dict):
        return json.dumps({"error": str(answer)}).encode()
    details = answer.get("detail")
    if isinstance(details, list) and details and all(isinstance(d, dict) for d in details):
        answer["error"] = "; ".join(str(d.get("msg", "")) for d in details)
    return json.dumps(answer, ensure_ascii=False).encode()
