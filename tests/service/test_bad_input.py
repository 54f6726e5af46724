"""Bad input gets a 4xx whose JSON names the problem, is counted, and harms nothing after it."""

from __future__ import annotations

import pytest

from tests.support.bad_input import CASES, EXPECTED, noisy_png, png, post_files
from tests.support.images import ico_holding
from tests.support.servers import total


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_and_named(server, digit_files, case):
    status, reason = EXPECTED[case]
    before = total(server.metrics(), "visiontune_rejected_inputs_total", reason=reason)
    served = total(server.metrics(), "visiontune_predictions_total")

    response = CASES[case](server)

    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["error"]
    assert reason in {problem["type"] for problem in body["detail"]}, body
    after = server.metrics()
    assert total(after, "visiontune_rejected_inputs_total", reason=reason) == before + 1
    assert total(after, "visiontune_predictions_total") == served, "bad input reached the model"
    good = server.classify([digit_files["1"][0]])
    assert good.status_code == 200, good.text


def test_every_bad_image_in_a_request_is_named(server, digit_files):
    """Headers first (nothing is decoded while one is wrong), then the pixels."""
    good = digit_files["2"][0].read_bytes()
    cut = noisy_png()[:2000]
    response = post_files(server, good, b"", cut, good, png((2000, 2000)), ico_holding(good))
    assert response.status_code == 400
    named = {tuple(p["loc"]): p["type"] for p in response.json()["detail"]}
    assert named == {
        ("images", 1): "empty",
        ("images", 4): "too_many_pixels",
        ("images", 5): "unsupported_format",
    }
    response = post_files(server, good, cut, good, cut)
    named = {tuple(p["loc"]): p["type"] for p in response.json()["detail"]}
    assert named == {("images", 1): "truncated", ("images", 3): "truncated"}


def test_no_request_ended_in_a_server_error(server):
    assert "status=500" not in server.log.read_text()
    samples = server.metrics()["bentoml_service_request_total"]
    assert not [
        key for key, value in samples.items() if ("http_response_code", "500") in key and value
    ]


def test_rejections_are_logged_in_one_line_without_traceback(server):
    assert post_files(server, b"hello, I am a text file").status_code == 400
    log = server.wait_for_log("answered 400: images.0: not_an_image")
    assert "ValidationError" not in log and "Traceback" not in log
