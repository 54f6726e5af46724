"""Strict request handling: every bad input becomes a 4xx naming the problem.

BentoML parses a request through the API's input spec before the API runs. The
specs here override that parsing (``from_http_request``): nothing is fetched,
written to disk or guessed; the media type, the field names, the number of images
and ``top_k`` are checked; then the images are decoded and resized in a worker
thread (``ImageClassifier.decode``). So what reaches the batchable API, and
BentoML's batching dispatcher, is a list of model-size images, each carrying the
``top_k`` its request asked for, and a bad image never gets that far.

The wire format (what clients send, and what ``/schema.json`` and the OpenAPI page
describe) is a separate model, ``ImageFilesForm`` or ``Base64Body``.

Rejections are raised as a pydantic ``ValidationError``, which BentoML answers
with a 400 and ``{"error": ..., "detail": [{"type": REASON, "loc": [...], "msg": ...}]}``;
``BodyLimit`` answers too large a body with a 413 of the same shape before it is read.
Each rejection counts in ``visiontune_rejected_inputs_total{model, reason}``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, NamedTuple

import anyio
import bentoml
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from service import metrics
from service.settings import settings

TopK = Annotated[int, Field(ge=1, description="Labels returned per image, best first.")]
_TOP_K = TypeAdapter(TopK)

# pydantic's error types, in the vocabulary of the rejected-inputs metric
_REASONS = {
    "json_invalid": "malformed_json",
    "json_type": "malformed_json",
    "model_type": "malformed_json",
    "extra_forbidden": "unknown_field",
    "missing": "missing_field",
    "too_short": "missing_field",
    "too_long": "too_many_images",
}


class InputError(ValueError):
    """One problem with a request; ``reason`` is the metric label and the error ``type``."""

    def __init__(self, reason: str, message: str, loc: tuple[str | int, ...] = ()):
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.loc = loc


def reject(errors: Iterable[InputError]) -> ValidationError:
    """Count the rejection and build the exception BentoML turns into a 400."""
    errors = list(errors)
    for reason in {error.reason for error in errors}:
        metrics.count_rejected(reason)
    details: list[InitErrorDetails] = [
        {"type": PydanticCustomError(e.reason, e.message), "loc": e.loc, "input": None}
        for e in errors
    ]
    return ValidationError.from_exception_data("request", details)


def from_pydantic(error: ValidationError) -> list[InputError]:
    return [
        InputError(_REASONS.get(e["type"], "invalid_value"), e["msg"], tuple(e["loc"]))
        for e in error.errors()
    ]


class Decoded(NamedTuple):
    """One image ready for the model, with the number of labels its request wants."""

    pixels: np.ndarray  # (height, width, 3) uint8
    top_k: int


class ImageFilesForm(bentoml.IODescriptor):
    """POST /classify: a multipart form with one or more image files in the field images."""

    images: list[Path] = Field(description="Image files (JPEG, PNG, WebP, ...), one part each.")
    top_k: TopK = settings.top_k


class Base64Body(BaseModel):
    """POST /classify_json: a JSON object {"images": [base64, ...], "top_k": k}."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(
        min_length=1,
        max_length=settings.max_images,
        description="Base64-encoded image files (a data: URL prefix is allowed).",
    )
    top_k: TopK = settings.top_k


class DecodedImages(bentoml.IODescriptor):
    """What a classify API receives; clients send ``wire`` (which the schema describes)."""

    wire: ClassVar[type[BaseModel]]
    images: list[Any]

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return cls.wire.model_json_schema(*args, **kwargs)


class ImageFiles(DecodedImages):
    wire = ImageFilesForm
    media_type = "multipart/form-data"

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> ImageFiles:
        _expect_media_type(request, "multipart/form-data", "images sent as files")
        try:
            form = await request.form(
                max_files=settings.max_images, max_fields=len(ImageFilesForm.model_fields)
            )
        except (MultiPartException, HTTPException, ValueError) as err:
            raise reject([_form_error(err)]) from None
        try:
            top_k = _check_form(form)
            files = [await part.read() for part in form.getlist("images")]
        finally:
            await form.close()
        return cls.model_construct(images=await _decode(files, top_k))


class Base64Images(DecodedImages):
    wire = Base64Body

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> Base64Images:
        _expect_media_type(request, "application/json", "a JSON object")
        try:
            body = Base64Body.model_validate_json(await request.body())
        except ValidationError as err:
            raise reject(from_pydantic(err)) from None
        return cls.model_construct(images=await _decode(body.images, body.top_k))


async def _decode(images: list[bytes] | list[str], top_k: int) -> list[Decoded]:
    """Decode in a worker thread: image decoding must not stall the event loop."""
    service = bentoml.get_current_service()
    arrays = await anyio.to_thread.run_sync(service.decode, images)
    return [Decoded(array, top_k) for array in arrays]


def decode_base64(text: str, index: int) -> bytes:
    """Standard base64 (whitespace and a ``data:...;base64,`` prefix are tolerated) to bytes."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise InputError(
            "malformed_base64", f"not valid base64 ({err})", ("images", index)
        ) from None


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets a 413 before anything parses it.

    A body without Content-Length (chunked) is buffered up to the limit; a rejected
    body is drained (up to four times the limit) so the client reads the answer
    instead of a reset connection.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit():
            if int(declared) <= self.max_bytes:
                return await self.app(scope, receive, send)
            more = True
        else:
            body, more = await _read(receive, self.max_bytes + 1)
            if not more and len(body) <= self.max_bytes:
                return await self.app(scope, _replay(body, receive), send)
        if more:
            await _drain(receive, 4 * self.max_bytes)
        await self._too_large(send)

    async def _too_large(self, send) -> None:
        message = f"request body exceeds {self.max_bytes} bytes"
        metrics.count_rejected("body_too_large")
        detail = [{"type": "body_too_large", "loc": [], "msg": message}]
        payload = json.dumps({"error": message, "detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
        headers.append((b"content-length", str(len(payload)).encode()))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": payload})


def _expect_media_type(request: Request, media_type: str, what: str) -> None:
    received = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if received != media_type:
        message = f"expected {media_type} ({what}), got {received or 'no Content-Type'}"
        raise reject([InputError("unsupported_media_type", message)])


def _form_error(err: Exception) -> InputError:
    message = getattr(err, "detail", None) or getattr(err, "message", None) or str(err)
    if "Too many files" in message:
        return InputError("too_many_images", f"more than {settings.max_images} images", ("images",))
    return InputError("malformed_multipart", f"malformed multipart body: {message}")


def _check_form(form: FormData) -> int:
    """The form's ``top_k``, or a rejection naming every problem of the form."""
    errors = [
        InputError("unknown_field", f"unknown field {key!r}; expected 'images' or 'top_k'", (key,))
        for key in form
        if key not in ImageFilesForm.model_fields
    ]
    parts = form.getlist("images")
    if not parts:
        errors.append(InputError("missing_field", "no files in the field 'images'", ("images",)))
    errors += [
        InputError(
            "not_a_file",
            "send each image as a file part (curl -F images=@photo.jpg)",
            ("images", i),
        )
        for i, part in enumerate(parts)
        if not isinstance(part, UploadFile)
    ]
    try:
        top_k = _TOP_K.validate_python(form.get("top_k", settings.top_k))
    except ValidationError as err:
        errors.append(InputError("invalid_value", err.errors()[0]["msg"], ("top_k",)))
    if errors:
        raise reject(errors)
    return top_k


async def _read(receive, limit: int) -> tuple[bytes, bool]:
    """Read the body until it ends or passes ``limit`` bytes; says whether more is left."""
    chunks, size, more = [], 0, True
    while more and size < limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    return b"".join(chunks), more and size >= limit


async def _drain(receive, limit: int) -> None:
    size, more = 0, True
    while more and size < limit:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)


def _replay(body: bytes, receive):
    """The ``receive`` of a request whose body was already read."""
    sent = False

    async def replay():
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
