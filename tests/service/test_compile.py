"""VISIONTUNE_COMPILE=1 on CPU: Inductor builds the model at warm-up and it answers as eager does."""

from __future__ import annotations

import pytest

from tests.support.servers import LIMITS, Server
from visiontune.client import wait_until_ready

# Inductor compiles C++ for two graphs before /readyz: under a minute on an idle core,
# a quarter of an hour on a 2-core machine shared by a dozen busy processes
COMPILE_READY_TIMEOUT_S = 1500


@pytest.mark.slow
@pytest.mark.timeout(2400)
def test_a_compiled_model_serves_the_same_labels(server, digits_model, tmp_path, digit_files):
    paths = [paths[45] for paths in list(digit_files.values())[:8]]
    env = {"VISIONTUNE_MODEL": digits_model, "VISIONTUNE_COMPILE": "1", **LIMITS}
    compiled = Server(tmp_path, env)
    try:
        wait_until_ready(compiled.url, COMPILE_READY_TIMEOUT_S, server=compiled.process)
        one = compiled.classify(paths[:1])
        many = compiled.classify(paths)
        serving_info = compiled.client.get("/model").json()["serving"]
        log = compiled.log.read_text()
    finally:
        compiled.stop()
    eager = server.classify(paths)
    assert one.status_code == many.status_code == eager.status_code == 200, many.text
    assert serving_info["compiled"] is True
    assert "and one of 1 (compiling)" in log
    assert [a["label"] for a in many.json()] == [a["label"] for a in eager.json()]
    assert one.json()[0]["label"] == eager.json()[0]["label"]
    for a, b in zip(many.json(), eager.json(), strict=True):
        assert a["score"] == pytest.approx(b["score"], abs=0.05)
