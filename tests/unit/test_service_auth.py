"""Bearer-token auth: who gets in, what the others are told, where the token comes from."""

from __future__ import annotations

import logging

import pytest
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from service.auth import BearerAuth, configured_token
from service.settings import Settings

TOKEN = "s3cret-token"


async def hello(request) -> PlainTextResponse:
    return PlainTextResponse("hello")


@pytest.fixture
def guarded():
    mounted = Starlette(routes=[Route("/model", hello)])
    routes = [Route(path, hello, methods=["GET", "POST"]) for path in ("/classify", "/livez")]
    routes += [Route("/readyz", hello), Route("/metrics", hello), Mount("/", mounted)]
    with TestClient(BearerAuth(Starlette(routes=routes), token=TOKEN)) as client:
        yield client


@pytest.mark.parametrize("path", ["/classify", "/model"])
@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (None, 'Bearer realm="visiontune"'),
        ("Bearer wrong", 'Bearer realm="visiontune", error="invalid_token"'),
        (f"Basic {TOKEN}", 'Bearer realm="visiontune"'),
        (f"Bearer {TOKEN}x", 'Bearer realm="visiontune", error="invalid_token"'),
    ],
)
def test_protected_paths_answer_401_without_the_token(guarded, path, authorization, challenge):
    headers = {"authorization": authorization} if authorization else {}
    response = guarded.post(path, headers=headers, content=b"{}")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == challenge
    assert response.json()["detail"][0]["type"] == "unauthorized"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer"])
def test_the_token_opens_every_protected_path(guarded, scheme):
    headers = {"authorization": f"{scheme} {TOKEN}"}
    assert guarded.post("/classify", headers=headers).text == "hello"
    assert guarded.get("/model", headers=headers).text == "hello"


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics"])
def test_probes_and_metrics_stay_open(guarded, path):
    assert guarded.get(path).text == "hello"


def test_without_a_token_nothing_is_guarded():
    app = Starlette(routes=[Route("/classify", hello, methods=["POST"])])
    with TestClient(BearerAuth(app, token=None)) as client:
        assert client.post("/classify").text == "hello"


def test_the_token_comes_from_the_variable_or_a_file(tmp_path, caplog):
    assert configured_token(Settings()) is None
    assert configured_token(Settings.from_env({"VISIONTUNE_API_TOKEN": TOKEN})) == TOKEN
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")  # as `kubectl create secret --from-file` keeps it
    assert configured_token(Settings(api_token_file=path)) == TOKEN
    with caplog.at_level(logging.WARNING, logger="bentoml.visiontune"):
        assert configured_token(Settings(api_token_file=tmp_path / "absent")) is None
    assert "without auth" in caplog.text
    path.write_text("\n")
    with pytest.raises(ValueError, match="VISIONTUNE_API_TOKEN_FILE=.* is empty"):
        configured_token(Settings(api_token_file=path))


@pytest.mark.parametrize(
    ("environ", "match"),
    [
        (
            {"VISIONTUNE_API_TOKEN": TOKEN, "VISIONTUNE_API_TOKEN_FILE": "/run/token"},
            "keep one",
        ),
        ({"VISIONTUNE_API_TOKEN": "  "}, "API_TOKEN is empty"),
        (
            {"VISIONTUNE_MAX_PIXELS": "50000000", "VISIONTUNE_MAX_REQUEST_PIXELS": "1000"},
            "MAX_REQUEST_PIXELS .* below",
        ),
    ],
)
def test_contradictory_settings_are_refused_with_the_fix(environ, match):
    with pytest.raises(ValidationError, match=match):
        Settings.from_env(environ)


def test_the_token_is_not_shown_in_the_settings():
    assert TOKEN not in repr(Settings.from_env({"VISIONTUNE_API_TOKEN": TOKEN}))
