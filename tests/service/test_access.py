"""Bearer-token auth on a real server, and what /model shows of the machine that trained."""

from __future__ import annotations

import httpx
import pytest

from tests.support.servers import total


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/classify"), ("POST", "/classify_json"), ("GET", "/model")]
)
def test_inference_and_model_need_the_token(guarded_server, method, path):
    before = total(
        guarded_server.metrics(), "visiontune_rejected_inputs_total", reason="unauthorized"
    )
    response = httpx.request(method, guarded_server.url + path, json={"images": []})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.json()["detail"][0]["type"] == "unauthorized"
    wrong = httpx.request(
        method, guarded_server.url + path, headers={"authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    after = total(
        guarded_server.metrics(), "visiontune_rejected_inputs_total", reason="unauthorized"
    )
    assert after == before + 2


def test_the_token_opens_them(guarded_server, digit_files):
    assert guarded_server.classify([digit_files["4"][0]]).status_code == 200
    assert guarded_server.client.get("/model").status_code == 200


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/metrics", "/docs.json"])
def test_probes_metrics_and_the_schema_stay_open(guarded_server, path):
    assert httpx.get(guarded_server.url + path).status_code == 200


def test_model_description_holds_no_local_paths(server, bentoml_home, tmp_path_factory):
    text = server.client.get("/model").text
    described = server.client.get("/model").json()
    for private in (str(tmp_path_factory.getbasetemp()), str(bentoml_home), "/tmp/"):
        assert private not in text
    config = described["training_config"]
    assert "output_dir" not in config and "skipped_files" not in config
    assert described["backbone"].startswith("local folder ")  # trained from a folder here
    assert config["data"] == "digits"  # a dataset name stays
    assert "/tmp/" not in server.client.get("/metrics").text
