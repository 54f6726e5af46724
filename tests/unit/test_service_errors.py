"""The one error shape: built by ``service.errors``, and given to BentoML's bare answers of a
failed batch (500) and of a request its dispatcher refused (503)."""

from __future__ import annotations

import pytest
from bentoml._internal.server.http_app import log_exception
from bentoml.exceptions import ServiceUnavailable
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from service.errors import error_body, error_response, send_error
from service.faults import BatchFailed, FailureAnswer, FailureRecords
from service.limits import RetryAfter
from service.logs import filter_exceptions


def test_a_message_is_one_problem_of_the_errors_type():
    assert error_body("server_full", "the server is full") == {
        "error": "the server is full",
        "detail": [{"type": "server_full", "loc": [], "msg": "the server is full"}],
    }


def test_a_list_of_problems_is_kept_and_summarised():
    problems = [
        {"type": "truncated", "loc": ("images", 0), "msg": "cut short"},
        {"type": "empty", "loc": ["images", 2], "msg": "0 bytes"},
    ]
    body = error_body("invalid_input", problems)
    assert body["detail"] == [
        {"type": "truncated", "loc": ["images", 0], "msg": "cut short"},
        {"type": "empty", "loc": ["images", 2], "msg": "0 bytes"},
    ]
    assert body["error"] == "2 problems (invalid_input), the first: cut short"
    assert error_body("x", problems[:1])["error"] == "cut short"
    with pytest.raises(ValueError, match="at least one problem"):
        error_body("x", [])


def test_the_response_and_the_raw_asgi_answer_are_the_same():
    async def raw(scope, receive, send):
        await send_error(send, 413, "body_too_large", "too big", [(b"connection", b"close")])

    answered = TestClient(raw).post("/")  # no lifespan: the raw app answers HTTP only
    made = error_response(413, "body_too_large", "too big", headers={"connection": "close"})
    assert answered.status_code == made.status_code == 413
    assert answered.json() == error_body("body_too_large", "too big")
    assert answered.headers["content-type"] == made.headers["content-type"]
    assert answered.headers["connection"] == "close"
    assert int(answered.headers["content-length"]) == len(answered.content)


def bentoml_answering(error: Exception, status: int):
    """What BentoML's API wrapper does with an API's exception: log it, answer bare."""

    async def app(scope, receive, send):
        try:
            raise error
        except Exception:
            log_exception(Request(scope, receive))
        body = {"error": "An unexpected error has occurred, please check the server log."}
        await JSONResponse(body, status_code=status)(scope, receive, send)

    return app


@pytest.fixture
def recorded():
    filter_exceptions(FailureRecords())


def test_a_failed_batch_is_a_500_naming_the_failure(recorded):
    failure = BatchFailed("model_error", 3, RuntimeError("boom"))
    app = RetryAfter(FailureAnswer(bentoml_answering(failure, 500), max_latency_ms=100))
    answered = TestClient(app).post("/classify")
    assert answered.status_code == 500
    assert answered.json() == error_body("model_error", failure.message)


def test_a_request_the_dispatcher_refused_is_a_503_saying_so(recorded):
    refused = ServiceUnavailable("process is overloaded")
    app = RetryAfter(FailureAnswer(bentoml_answering(refused, 503), max_latency_ms=100))
    answered = TestClient(app).post("/classify")
    assert answered.status_code == 503
    assert answered.headers["retry-after"] == "1"
    body = answered.json()
    assert body["detail"][0]["type"] == "overloaded"
    assert "100 ms (VISIONTUNE_MAX_LATENCY_MS)" in body["error"]
    assert body == error_body("overloaded", body["error"])
