"""BentoML's access log is off unless VISIONTUNE_ACCESS_LOG turns it on (a line per request
costs CPU time on every request)."""

from __future__ import annotations

import re

import pytest

from tests.support.servers import LIMITS, serving

ACCESS_LINE = re.compile(r"\(scheme=http,method=POST,path=/classify,.*\) \(status=200,")


@pytest.fixture(scope="module")
def logging_server(digits_model, tmp_path_factory):
    env = {"VISIONTUNE_MODEL": digits_model, "VISIONTUNE_ACCESS_LOG": "1", **LIMITS}
    with serving(tmp_path_factory.mktemp("home-access-log"), env) as running:
        yield running


def test_no_access_log_by_default(server, digit_files):
    assert server.classify([digit_files["3"][0]]).status_code == 200
    assert server.client.get("/model").status_code == 200
    assert not ACCESS_LINE.search(server.log.read_text())


def test_access_log_on_with_the_setting(logging_server, digit_files):
    assert logging_server.classify([digit_files["3"][0]]).status_code == 200
    logging_server.wait_for_log(ACCESS_LINE.pattern)
