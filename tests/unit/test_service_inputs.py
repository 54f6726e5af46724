"""The parts of request handling that need no running service."""

from __future__ import annotations

import base64
import io
import json
import logging
import time

import pytest
from PIL import Image
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from contract.images import Preprocessing
from service.inputs import (
    MAX_PROBLEMS,
    Base64Body,
    Base64Images,
    ImageFiles,
    InputError,
    decode_base64,
    decode_images,
    from_pydantic,
    parse_json_body,
    reject,
)
from service.settings import Settings, settings
from service.uploads import BodyLimit


def test_decode_base64_accepts_data_urls_and_line_breaks():
    data = bytes(range(256))
    encoded = base64.b64encode(data).decode()
    assert decode_base64(encoded, 0) == data
    assert decode_base64("data:image/png;base64," + encoded, 0) == data
    assert (
        decode_base64("\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)), 0) == data
    )


@pytest.mark.parametrize("text", ["not base64!", "abc", "ab=c"])
def test_decode_base64_names_the_image(text):
    with pytest.raises(InputError) as raised:
        decode_base64(text, 3)
    assert raised.value.reason == "malformed_base64"
    assert raised.value.loc == ("images", 3)


def test_reject_lists_every_problem_with_its_reason():
    error = reject(
        [
            InputError("truncated", "cut short", ("images", 0)),
            InputError("empty", "0 bytes", ("images", 2)),
        ]
    )
    assert isinstance(error, ValidationError)
    problems = error.errors(include_context=False, include_input=False)
    assert [(p["type"], p["loc"], p["msg"]) for p in problems] == [
        ("truncated", ("images", 0), "cut short"),
        ("empty", ("images", 2), "0 bytes"),
    ]


@pytest.mark.parametrize(
    ("body", "reasons"),
    [
        (b'{"images": [', {"malformed_json"}),
        (b"[1, 2]", {"malformed_json"}),
        (b'{"imgs": ["x"]}', {"unknown_field", "missing_field"}),
        (b'{"images": []}', {"missing_field"}),
        (json.dumps({"images": ["x"] * 65}).encode(), {"too_many_images"}),
        (b'{"images": ["x"], "top_k": 0}', {"invalid_value"}),
        (b'{"images": [1]}', {"invalid_value"}),
    ],
)
def test_pydantic_errors_map_to_rejection_reasons(body, reasons):
    with pytest.raises(ValidationError) as raised:
        Base64Body.model_validate_json(body)
    assert {error.reason for error in from_pydantic(raised.value)} == reasons


def test_schemas_describe_what_clients_send():
    files = ImageFiles.model_json_schema()
    assert files["properties"]["images"]["items"]["type"] == "file"
    assert files["properties"]["top_k"]["minimum"] == 1
    assert ImageFiles.mime_type() == "multipart/form-data"
    assert set(Base64Images.model_json_schema()["properties"]) == {"images", "top_k", "model"}
    assert Base64Images.mime_type() == "application/json"


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"size": len(await request.body())})


@pytest.fixture
def limited():
    app = Starlette(routes=[Route("/", echo, methods=["GET", "POST"])])
    with TestClient(BodyLimit(app, max_bytes=1000)) as client:
        yield client


def test_body_limit_passes_bodies_up_to_the_limit(limited):
    assert limited.post("/", content=b"x" * 1000).json() == {"size": 1000}
    assert limited.post("/", content=iter([b"x" * 600, b"y" * 400])).json() == {"size": 1000}
    assert limited.get("/").json() == {"size": 0}


@pytest.mark.parametrize("chunked", [False, True])
def test_body_limit_refuses_larger_bodies_with_a_413(limited, chunked):
    body = b"x" * 1001
    response = limited.post("/", content=iter([body[:500], body[500:]]) if chunked else body)
    assert response.status_code == 413
    assert response.json()["detail"][0]["type"] == "body_too_large"


class Exchange:
    """One request through an ASGI app: the messages the client sends, what the app answers."""

    def __init__(self, messages: list[dict], headers: list[tuple[bytes, bytes]]):
        self.messages = list(messages)
        self.scope = {"type": "http", "method": "POST", "path": "/", "headers": headers}
        self.sent: list[dict] = []

    async def receive(self) -> dict:
        return self.messages.pop(0) if self.messages else {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)

    async def through(self, app) -> int:
        await app(self.scope, self.receive, self.send)
        (start,) = [m for m in self.sent if m["type"] == "http.response.start"]
        return start["status"]


def part(body: bytes, more: bool) -> dict:
    return {"type": "http.request", "body": body, "more_body": more}


def echo_app() -> Starlette:
    return Starlette(routes=[Route("/", echo, methods=["POST"])])


@pytest.mark.anyio
@pytest.mark.parametrize(
    "headers", [[], [(b"content-length", b"900")]], ids=["chunked", "content-length"]
)
async def test_a_client_leaving_mid_upload_is_a_499_never_a_complete_body(headers, caplog):
    caplog.set_level(logging.INFO, logger="bentoml.visiontune")
    seen = []

    async def app(scope, receive, send):  # what BentoML does: read, and answer 500 on errors
        try:
            seen.append(await Request(scope, receive).body())
        except ClientDisconnect:
            await JSONResponse({"error": "unexpected"}, status_code=500)(scope, receive, send)

    exchange = Exchange([part(b"x" * 300, more=True), {"type": "http.disconnect"}], headers)
    assert await exchange.through(BodyLimit(app, max_bytes=1000)) == 499
    assert seen == [], "a partial body was taken as complete"
    (line,) = [r for r in caplog.records if "(499)" in r.getMessage()]
    assert line.levelno == logging.INFO
    assert "after sending 300 bytes" in line.getMessage()


@pytest.mark.anyio
async def test_a_complete_chunked_body_still_reaches_the_app():
    exchange = Exchange([part(b"x" * 300, more=True), part(b"y" * 200, more=False)], [])
    assert await exchange.through(BodyLimit(echo_app(), max_bytes=1000)) == 200
    assert b'{"size":500}' in exchange.sent[-1]["body"]


def timed_rejection(body: bytes) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    with pytest.raises(ValidationError) as raised:
        parse_json_body(body)
    return time.perf_counter() - started, raised.value.errors(include_input=False)


def test_a_json_body_with_300000_keys_is_refused_in_milliseconds():
    keys = {f"key{i}": 1 for i in range(300_000)}
    body = json.dumps({"images": ["aGVsbG8="], **keys}).encode()
    assert len(body) > 3_000_000
    seconds, problems = timed_rejection(body)
    assert seconds < 0.1
    assert [p["type"] for p in problems] == ["json_too_complex"]
    assert len(problems[0]["msg"]) < 200


def test_deep_json_is_refused_before_parsing():
    seconds, problems = timed_rejection(b'{"images": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert seconds < 0.1
    assert [p["type"] for p in problems] == ["json_too_complex"]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps({"images": ["x"] * 65}).encode(), "too_many_images"),
        (b'{"images": ["x"], "top_k": {"a": [1]}}', "invalid_value"),
        (b'{"images": ["x"], "extra": 1}', "unknown_field"),
    ],
)
def test_json_bodies_near_the_shape_of_a_request_get_the_precise_reason(body, reason):
    _, problems = timed_rejection(body)
    assert reason in {p["type"] for p in problems}


def test_an_answer_names_at_most_ten_problems():
    error = reject([InputError("empty", f"image {i} is empty", ("images", i)) for i in range(25)])
    problems = error.errors(include_input=False)
    assert len(problems) == MAX_PROBLEMS == 10
    assert problems[-1]["msg"] == "image 9 is empty (and 15 more problems not listed)"


def png_of(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", size, 100).save(buffer, "PNG")
    return buffer.getvalue()


def test_headers_are_checked_before_any_image_is_decoded(monkeypatch):
    preprocessing = Preprocessing(8, 8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    monkeypatch.setattr(
        "service.inputs.settings", Settings(max_pixels=10_000, max_request_pixels=20_000)
    )
    arrays = decode_images([png_of((100, 100)), png_of((100, 100))], preprocessing)
    assert [array.shape for array in arrays] == [(8, 8, 3)] * 2
    with pytest.raises(ValidationError) as raised:
        decode_images([png_of((100, 100))] * 3, preprocessing)
    (problem,) = raised.value.errors(include_input=False)
    assert problem["type"] == "too_many_pixels_in_request"
    assert "VISIONTUNE_MAX_REQUEST_PIXELS" in problem["msg"]
    cut = png_of((90, 90))[:60]
    with pytest.raises(ValidationError) as raised:
        decode_images([b"", cut, png_of((200, 200))], preprocessing)
    assert {(p["loc"], p["type"]) for p in raised.value.errors(include_input=False)} == {
        (("images", 0), "empty"),
        (("images", 2), "too_many_pixels"),
    }, "a header problem stops the request before anything is decoded"


def test_pillow_refuses_what_the_service_refuses():
    assert settings.max_pixels == Image.MAX_IMAGE_PIXELS
