"""Every error type the docs list is answered by a real server, in the one error shape
(``service.errors``): ``{"error": summary, "detail": [{"type", "loc", "msg"}, ...]}``."""

from __future__ import annotations

import http.client
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support import REPO
from tests.support.bad_input import CASES, EXPECTED, png, post_files
from tests.support.faults import (
    ALWAYS_OUT_OF_MEMORY,
    MODEL_ERROR,
    SLOW,
    SLOW_S,
    solid_png,
    undecodable_png,
)
from tests.support.servers import total

TABLE_HEADER = "| status | types |"
# the batching dispatcher calibrates itself on its first 11 batches, refusing nothing then
DISPATCHER_CALIBRATION = 12


def documented_errors() -> dict[str, int]:
    """Error type -> status, from the table of error types in the README or docs/."""
    found: dict[str, int] = {}
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        if TABLE_HEADER not in text:
            continue
        for line in text.split(TABLE_HEADER, 1)[1].splitlines()[2:]:
            if not line.startswith("|"):
                break
            status, types = (cell.strip() for cell in line.strip().strip("|").split("|"))
            found.update((name, int(status)) for name in re.findall(r"`(\w+)`", types))
    return found


def stalled_upload(server) -> socket.socket:
    """A request whose body never comes: it holds one of the server's request slots."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=60)
    sock.sendall(
        b"POST /classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 1000\r\n\r\n--x\r\n"
    )
    return sock


def answer_of(sock: socket.socket) -> httpx.Response:
    with sock:
        raw = http.client.HTTPResponse(sock)
        raw.begin()
        return httpx.Response(raw.status, headers=raw.getheaders(), content=raw.read())


def full_and_timed_out(server, digit: bytes) -> tuple[httpx.Response, httpx.Response]:
    """Once every slot is held by a stalled upload, a request is refused (server_full); the
    stalled ones are answered when ``VISIONTUNE_TIMEOUT_S`` passes (timeout)."""
    slots = int(server.env["VISIONTUNE_MAX_CONCURRENCY"])
    stalled = [stalled_upload(server) for _ in range(slots)]
    deadline = time.monotonic() + float(server.env["VISIONTUNE_TIMEOUT_S"]) - 1
    while total(server.metrics(), "bentoml_service_request_in_progress") < slots:
        assert time.monotonic() < deadline, "the stalled uploads never all reached the server"
        time.sleep(0.1)
    refused = post_files(server, digit)
    return refused, [answer_of(sock) for sock in stalled][0]


def overloaded(server, digit: bytes) -> httpx.Response | None:
    """Two requests queued behind a slow batch wait past ``VISIONTUNE_MAX_LATENCY_MS``: when
    it ends, the dispatcher refuses the older one."""
    for _ in range(DISPATCHER_CALIBRATION):
        assert post_files(server, digit).status_code == 200

    def post(image: bytes) -> httpx.Response:
        files = [("images", ("a.png", image, "image/png"))]
        return httpx.post(f"{server.url}/classify", files=files, timeout=60)

    with ThreadPoolExecutor(3) as pool:
        slow = pool.submit(post, solid_png(SLOW))
        time.sleep(SLOW_S / 4)
        queued = [pool.submit(post, digit) for _ in range(2)]
        answers = [future.result() for future in queued]
        assert slow.result().status_code == 200
    return next((answer for answer in answers if answer.status_code != 200), None)


@pytest.fixture(scope="module")
def answers(server, guarded_server, faulty_server, digit_files) -> dict[str, httpx.Response]:
    """One answer per error type: the bad-input cases on ``server``, the rest where each can
    be provoked."""
    answers: dict[str, httpx.Response | None] = {}
    for case, (_, error_type) in EXPECTED.items():
        if error_type not in answers:
            answers[error_type] = CASES[case](server)
    wrong = {"authorization": "Bearer wrong"}
    answers["unauthorized"] = guarded_server.client.post("/classify", headers=wrong)
    answers["unknown_model"] = post_files(server, png((8, 8)), model="nosuch")
    faulty = faulty_server
    digit = digit_files["4"][0].read_bytes()
    answers["too_many_pixels_in_request"] = post_files(faulty, png((800, 800)), png((800, 800)))
    answers["undecodable"] = post_files(faulty, undecodable_png())
    answers["model_error"] = post_files(faulty, solid_png(MODEL_ERROR))
    answers["out_of_memory"] = post_files(faulty, solid_png(ALWAYS_OUT_OF_MEMORY))
    answers["server_full"], answers["timeout"] = full_and_timed_out(faulty, digit)
    answers["overloaded"] = overloaded(faulty, digit)
    return answers


@pytest.mark.parametrize(("error_type", "status"), documented_errors().items())
def test_each_documented_error_is_answered_in_the_one_shape(answers, error_type, status):
    response = answers.get(error_type)
    assert response is not None, f"no request here provokes {error_type}"
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error", "detail"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert body["detail"], body
    for problem in body["detail"]:
        assert set(problem) == {"type", "loc", "msg"}, problem
        assert isinstance(problem["loc"], list) and isinstance(problem["msg"], str)
    assert error_type in {problem["type"] for problem in body["detail"]}, body
    if status == 503:
        assert response.headers["retry-after"] == "1"


def test_every_error_provoked_here_is_documented(answers):
    assert set(answers) == set(documented_errors())
