"""`VISIONTUNE_MODEL=NAME@production`: the server resolves the stage once, at start."""

from __future__ import annotations

from tests.support.builders import unique_name
from tests.support.servers import LIMITS, Server, serving
from tests.support.store import copy_model
from visiontune.lifecycle import registry


def test_a_stage_reference_serves_the_resolved_tag(digits_model, digit_files, tmp_path):
    name = unique_name("staged")
    production = copy_model(digits_model, name)
    registry.promote(str(production), "serve it")
    newer = copy_model(digits_model, name)  # the newest version is a candidate, not served

    env = {"VISIONTUNE_MODEL": f"{name}@production", **LIMITS}
    with serving(tmp_path, env) as server:
        info = server.client.get("/model").json()
        answers = server.classify(digit_files["3"][:2]).json()

    assert info["tag"] == str(production) != str(newer)
    assert info["stage"] == "production"
    assert info["requested"] == f"{name}@production"
    assert [answer["model"] for answer in answers] == [str(production)] * 2


def test_no_production_model_stops_the_start_with_one_line(digits_model, tmp_path):
    name = unique_name("unpromoted")
    copy_model(digits_model, name)
    server = Server(tmp_path, {"VISIONTUNE_MODEL": f"{name}@production"})
    try:
        assert server.process.wait(timeout=120) != 0
    finally:
        server.stop()
    assert server.log.read_text().strip().splitlines() == [
        f"visiontune: error: VISIONTUNE_MODEL={name}@production: {name} has no production "
        f"model; promote one: visiontune promote {name}:VERSION"
    ]
