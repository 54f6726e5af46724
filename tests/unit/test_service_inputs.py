"""The parts of request handling that need no running service."""

from __future__ import annotations

import base64
import json

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from service.inputs import (
    Base64Body,
    Base64Images,
    BodyLimit,
    ImageFiles,
    InputError,
    decode_base64,
    from_pydantic,
    reject,
)


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
    assert set(Base64Images.model_json_schema()["properties"]) == {"images", "top_k"}
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
