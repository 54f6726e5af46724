"""BentoML's own exception logging, with the filter: rejections in one INFO line, the rest as before."""

from __future__ import annotations

import logging

import pytest
from bentoml._internal.server.http_app import log_exception
from starlette.requests import Request

from service.inputs import InputError, reject
from service.logs import BENTOML_EXCEPTION_LOGGER, RejectedInputRecords, filter_exceptions


def _request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/classify", "headers": []})


@pytest.fixture
def logged(caplog):
    filter_exceptions(RejectedInputRecords())
    filter_exceptions(RejectedInputRecords())  # once is enough; twice does no harm
    caplog.set_level(logging.INFO, logger=BENTOML_EXCEPTION_LOGGER)
    return caplog


def test_a_rejection_is_one_info_line_naming_the_problems(logged):
    problems = [
        InputError("not_an_image", "not an image file", ("images", 0)),
        InputError("too_many_pixels", "4000000 pixels, more than 1000000", ("images", 2)),
    ]
    try:
        raise reject(problems)
    except ValueError:
        log_exception(_request())
    [record] = logged.records
    assert record.levelno == logging.INFO and record.exc_info is None
    assert record.getMessage() == (
        "Exception on /classify [POST] answered 400: images.0: not_an_image (not an image file); "
        "images.2: too_many_pixels (4000000 pixels, more than 1000000)"
    )
    assert "Traceback" not in logged.text


def test_other_exceptions_keep_bentomls_error_and_traceback(logged):
    try:
        raise RuntimeError("the model broke")
    except RuntimeError:
        log_exception(_request())
    [record] = logged.records
    assert record.levelno == logging.ERROR
    assert "Traceback" in logged.text and "the model broke" in logged.text
