"""Strict request handling: every bad input becomes a 4xx naming the problem.

BentoML parses a request through the API's input spec before the API runs. The
specs here override that parsing (``from_http_request``): nothing is fetched,
written to disk or guessed; the media type, the field names, the number of images
and ``top_k`` are checked (a JSON body's shape on its bytes, then the parse, in a
worker thread); then the images are decoded and resized in a worker thread
(``ImageClassifier.decode``, ``decode_images``: every header and the request's
pixel budget before any pixel). So what reaches the batchable API, and
BentoML's batching dispatcher, is a list of model-size images, each carrying the
``top_k`` its request asked for, and a bad image never gets that far.

The wire format (what clients send, and what ``/schema.json`` and the OpenAPI page
describe) is a separate model, ``ImageFilesForm`` or ``Base64Body``.

Rejections are raised as a pydantic ``ValidationError``, which BentoML answers
with a 400 in the service's error shape (``service.errors``): ``{"error": ...,
"detail": [{"type": REASON, "loc": [...], "msg": ...}]}``. Too large a body never
gets here (``service.uploads``). Each rejection counts in
``visiontune_rejected_inputs_total{model, reason}``; an answer names at most ten problems.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, ClassVar, NamedTuple

import anyio
import bentoml
import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from contract.images import ImageError, Preprocessing, load_image, open_image
from service import faults, metrics, routing
from service.limits import in_decode_thread
from service.routing import RequestInfo
from service.settings import settings

# Pillow's own decompression-bomb guard, for any code path that opens an image.
Image.MAX_IMAGE_PIXELS = settings.max_pixels

MAX_PROBLEMS = 10  # named in one answer
# A JSON request is {"images": [base64, ...], "top_k": k, "model": m}: one object, one array, one
# string per key or image. Bodies far past that are refused on a count of their bytes.
MAX_JSON_CONTAINERS = 8

TopK = Annotated[int, Field(ge=1, description="Labels returned per image, best first.")]
ModelName = Annotated[
    str | None,
    Field(
        description="Which of the server's models answers (GET /model lists them); "
        "default: the first."
    ),
]
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
    """Count the rejection and build the exception BentoML turns into a 400.

    The answer names at most ``MAX_PROBLEMS`` problems; the last one says how many more
    there were.
    """
    errors = list(errors)
    for reason in {error.reason for error in errors}:
        metrics.count_rejected(reason)
    if len(errors) > MAX_PROBLEMS:
        last = errors[MAX_PROBLEMS - 1]
        more = f"{last.message} (and {len(errors) - MAX_PROBLEMS} more problems not listed)"
        errors = [*errors[: MAX_PROBLEMS - 1], InputError(last.reason, more, last.loc)]
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
    """One image ready for the model its request names, with the number of labels the
    request wants, the file as received (for capture) and where it was in the request."""

    pixels: np.ndarray  # (height, width, 3) uint8
    top_k: int
    model: str
    data: bytes | str
    request: RequestInfo
    index: int


class ImageFilesForm(bentoml.IODescriptor):
    """POST /classify: a multipart form with one or more image files in the field images."""

    images: list[Path] = Field(
        description="Image files (JPEG, PNG, WebP, GIF, BMP or TIFF), one part each."
    )
    top_k: TopK = settings.top_k
    model: ModelName = None


class Base64Body(BaseModel):
    """POST /classify_json: a JSON object {"images": [base64, ...], "top_k": k}."""

    model_config = ConfigDict(extra="forbid")

    images: list[str] = Field(
        min_length=1,
        max_length=settings.max_images,
        description="Base64-encoded image files (a data: URL prefix is allowed).",
    )
    top_k: TopK = settings.top_k
    model: ModelName = None


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
            model = form.get("model")
            files = [await part.read() for part in form.getlist("images")]
        finally:
            await form.close()
        return cls.model_construct(images=await _decode(files, top_k, model))


class Base64Images(DecodedImages):
    wire = Base64Body

    @classmethod
    async def from_http_request(cls, request: Request, serde: Any) -> Base64Images:
        _expect_media_type(request, "application/json", "a JSON object")
        body = await anyio.to_thread.run_sync(parse_json_body, await request.body())
        return cls.model_construct(images=await _decode(body.images, body.top_k, body.model))


def parse_json_body(body: bytes) -> Base64Body:
    """Validate a JSON request (blocking: runs in a worker thread, not on the event loop).

    Before the parser runs, the body's quotes and brackets are counted: a body with
    far more strings or nesting than a request can have is refused in milliseconds,
    however many keys it holds.
    """
    strings, containers = body.count(b'"') // 2, body.count(b"{") + body.count(b"[")
    max_strings = 2 * (settings.max_images + 2)  # twice what a request can hold
    if strings > max_strings or containers > MAX_JSON_CONTAINERS:
        message = (
            f"the JSON body holds {strings} strings and {containers} objects or arrays; a "
            f'request, {{"images": [base64, ...], "top_k": k}}, holds at most '
            f"{max_strings} and {MAX_JSON_CONTAINERS}"
        )
        raise reject([InputError("json_too_complex", message)])
    try:
        return Base64Body.model_validate_json(body)
    except ValidationError as err:
        raise reject(from_pydantic(err)) from None


async def _decode(images: list[bytes] | list[str], top_k: int, model: str | None) -> list[Decoded]:
    """Decode in a worker thread: image decoding must not stall the event loop.

    The model is the one the request names (its field, else its path, else the server's
    first); a name the server doesn't hold is a 404 (``routing.UnknownModel``). The
    worker's decode slots (``service.limits``) bound how many decode at once."""
    service = bentoml.get_current_service()
    request = routing.current() or routing.RequestInfo(inference_id=uuid.uuid4().hex)
    try:
        name = service.model_name(model or request.model)
    except routing.UnknownModel as unknown:
        faults.note(unknown)  # answered 404 in the error shape (service.faults)
        raise
    request.sampled = service.live.sample_request()
    arrays = await in_decode_thread(service.decode, images, name)
    return [
        Decoded(array, top_k, name, data, request, index)
        for index, (array, data) in enumerate(zip(arrays, images, strict=True))
    ]


def decode_images(
    images: list[bytes] | list[str],
    preprocessing: Preprocessing,
    decoded: dict[int, np.ndarray] | None = None,
) -> list[np.ndarray]:
    """Image files (bytes, or base64 text) to model-size (height, width, 3) uint8 arrays.

    Blocking: runs in a worker thread. Every header is read first: the problems found
    there (and a request over ``VISIONTUNE_MAX_REQUEST_PIXELS``) are named in one 400
    before any pixel is decoded; then the problems of decoding are named in one 400.
    ``decoded`` holds the images already decoded elsewhere (on the GPU), by index.
    """
    decoded = decoded or {}
    opened, errors = [], []
    for index, image in enumerate(images):
        if index in decoded:
            opened.append(None)
            continue
        try:
            data = decode_base64(image, index) if isinstance(image, str) else image
            opened.append(open_image(data, max_pixels=settings.max_pixels))
        except InputError as err:
            errors.append(err)
        except ImageError as err:
            errors.append(InputError(err.reason, str(err), ("images", index)))
    if errors:
        raise reject(errors)
    _check_request_pixels(opened)
    arrays = []
    for index, image in enumerate(opened):
        if image is None:
            arrays.append(decoded[index])
            continue
        try:
            arrays.append(
                preprocessing.resize(load_image(image, draft_size=preprocessing.draft_size))
            )
        except ImageError as err:
            errors.append(InputError(err.reason, str(err), ("images", index)))
    if errors:
        raise reject(errors)
    return arrays


def _check_request_pixels(images: list[Image.Image | None]) -> None:
    total = sum(image.width * image.height for image in images if image is not None)
    if total > settings.max_request_pixels:
        message = (
            f"the images hold {total} pixels together, over the limit of "
            f"{settings.max_request_pixels} per request (VISIONTUNE_MAX_REQUEST_PIXELS): "
            "send them in several requests"
        )
        raise reject([InputError("too_many_pixels_in_request", message, ("images",))])


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
        InputError(
            "unknown_field", f"unknown field {key!r}; expected 'images', 'top_k' or 'model'", (key,)
        )
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
