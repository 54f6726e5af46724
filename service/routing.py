"""Which model a request is for, and the inference id its answers carry.

``Requests`` is an ASGI middleware around the service's app. Every POST gets an
inference id (``uuid4().hex``): its answers carry ``ID-INDEX`` per image, the
response the header ``X-Inference-Id: ID``, and the access log line
``inference_id=ID`` (``service.logs``). A path ``/models/NAME/REST`` is the
same request to ``/REST`` for the model ``NAME`` (``POST
/models/digits/classify``, ``GET /models/digits/model``); a name the server does
not hold is answered 404 naming the ones it does, before the body is read. What a
request is for travels in a context variable (:func:`current`) to the input
specs (``service.inputs``), which may name the model by a form field or JSON
key instead, and to ``GET /model``.
"""

from __future__ import annotations

import contextvars
import uuid
from dataclasses import dataclass, field

from bentoml.exceptions import NotFound

from contract.capture import INFERENCE_ID_HEADER
from service import metrics
from service.errors import send_error

MODELS_PREFIX = "/models/"


class UnknownModel(NotFound):
    """A request for a model this server does not hold (404)."""

    def __init__(self, name: str, known: list[str]):
        self.message = f"no model {name!r} here; this server holds: {', '.join(known)}"
        self.problems = [{"type": "unknown_model", "loc": ["model"], "msg": self.message}]
        super().__init__(self.message)


@dataclass
class RequestInfo:
    """What the routing knows of one request."""

    inference_id: str
    model: str | None = None  # named by the path; None: the request's field, or the default
    headers: dict[str, str] = field(default_factory=dict)  # those VISIONTUNE_CAPTURE_HEADERS names
    sampled: bool = False  # all its images are captured (VISIONTUNE_CAPTURE_RATE)


_current: contextvars.ContextVar[RequestInfo | None] = contextvars.ContextVar(
    "visiontune_request", default=None
)


def current() -> RequestInfo | None:
    """The request being handled (None outside a request, e.g. at warm-up)."""
    return _current.get()


def check_model(name: str, known: list[str]) -> str:
    if name not in known:
        metrics.count_rejected("unknown_model")
        raise UnknownModel(name, known)
    return name


class Requests:
    """ASGI middleware: the inference id, and the model a ``/models/NAME/...`` path names."""

    def __init__(self, app, models: list[str], captured_headers: list[str]):
        self.app = app
        self.models = models
        self.captured_headers = {name.encode() for name in captured_headers}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        info = RequestInfo(inference_id=uuid.uuid4().hex)
        path = scope["path"]
        if path.startswith(MODELS_PREFIX):
            name, _, rest = path.removeprefix(MODELS_PREFIX).partition("/")
            if name not in self.models:
                metrics.count_rejected("unknown_model")
                unknown = UnknownModel(name, self.models)
                return await send_error(send, 404, "unknown_model", unknown.problems)
            info.model = name
            scope = {**scope, "path": "/" + rest, "raw_path": ("/" + rest).encode()}
        if scope["method"] != "POST":
            token = _current.set(info)
            try:
                return await self.app(scope, receive, send)
            finally:
                _current.reset(token)
        info.headers = {
            key.decode(): value.decode("latin-1")
            for key, value in scope["headers"]
            if key in self.captured_headers
        }
        header = (INFERENCE_ID_HEADER.encode(), info.inference_id.encode())

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        token = _current.set(info)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)
