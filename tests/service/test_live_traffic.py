"""Live traffic on a real server: inference ids, capture to an object store (moto's S3
server), a shadow model, several models in one server, and the settings that stop a start."""

from __future__ import annotations

import base64
import threading
import time

import httpx
import pytest

from contract.capture import read_image, read_records
from tests.support.builders import store_random_classifier, unique_name
from tests.support.s3 import create_bucket, moto_s3
from tests.support.servers import LIMITS, Server, serving

CAPTURE = "s3://captures/live"


@pytest.fixture(scope="module")
def random_model(tmp_path_factory) -> str:
    """A random ResNet on the digits' labels: it disagrees with the trained one."""
    return store_random_classifier(tmp_path_factory.mktemp("random"), unique_name("random"))


@pytest.fixture(scope="module")
def s3(tmp_path_factory, monkeypatch_module):
    with moto_s3(tmp_path_factory.mktemp("moto") / "moto.log") as env:
        for name, value in env.items():
            monkeypatch_module.setenv(name, value)
        create_bucket(env, "captures")
        yield env


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture(scope="module")
def live(digits_model, random_model, s3, tmp_path_factory):
    """Two models (digits first: the default), the random one also shadowing digits on every
    image, every request captured to S3, the access log on."""
    env = {
        **LIMITS,
        "VISIONTUNE_MODELS": f"digits={digits_model},random={random_model}",
        "VISIONTUNE_SHADOW": random_model,
        "VISIONTUNE_SHADOW_RATE": "1",
        "VISIONTUNE_CAPTURE": CAPTURE,
        "VISIONTUNE_CAPTURE_RATE": "1",
        "VISIONTUNE_CAPTURE_HEADERS": "user-agent,x-tenant",
        "VISIONTUNE_ACCESS_LOG": "1",
    }
    with serving(tmp_path_factory.mktemp("live-home"), env) as server:
        yield server


def post_files(server, files, **data) -> httpx.Response:
    parts = [("images", (path.name, path.read_bytes(), "image/png")) for path in files]
    headers = {"x-tenant": "acme", "authorization": "Bearer not-captured"}
    return server.client.post("/classify", files=parts, data=data, headers=headers)


def records_of(ids: set[str], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        records = {r.inference_id: r for r in read_records(CAPTURE) if r.inference_id in ids}
        if len(records) == len(ids) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def test_answers_carry_inference_ids_that_the_capture_and_access_log_share(live, digit_files):
    files = [digit_files["3"][0], digit_files["8"][0]]
    response = post_files(live, files)
    assert response.status_code == 200, response.text
    request_id = response.headers["x-inference-id"]
    answers = response.json()
    assert [a["inference_id"] for a in answers] == [f"{request_id}-0", f"{request_id}-1"]
    records = records_of({a["inference_id"] for a in answers})
    for answer, path in zip(answers, files, strict=True):
        record = records[answer["inference_id"]]
        assert read_image(CAPTURE, record) == path.read_bytes()
        assert (record.answer.label, record.answer.score) == (answer["label"], answer["score"])
        assert record.answer.model == answer["model"]
        assert record.shadow is not None and record.shadow.model != answer["model"]
        assert record.headers == {"user-agent": record.headers["user-agent"], "x-tenant": "acme"}
        assert record.media_type == "image/png"
    assert f"inference_id={request_id}" in live.log.read_text()


def test_base64_images_are_captured_as_the_files_they_encode(live, digit_files):
    data = digit_files["5"][0].read_bytes()
    body = {"images": ["data:image/png;base64," + base64.b64encode(data).decode()]}
    response = live.client.post("/classify_json", json=body)
    assert response.status_code == 200, response.text
    (answer,) = response.json()
    record = records_of({answer["inference_id"]})[answer["inference_id"]]
    assert read_image(CAPTURE, record) == data


def test_the_shadow_is_counted_and_never_returned(live, digit_files, digits_model, random_model):
    response = post_files(live, digit_files["1"][:4])
    assert {a["model"] for a in response.json()} == {digits_model}
    ids = {a["inference_id"] for a in response.json()}
    records_of(ids)
    samples = live.metrics()
    pair = (("model", digits_model), ("shadow", random_model))
    compared = samples["visiontune_shadow_compared_total"][pair]
    agreed = samples["visiontune_shadow_agreed_total"].get(pair, 0)
    shadowed = [r for r in read_records(CAPTURE) if r.shadow is not None]
    assert compared == len(shadowed)  # every answer of digits was captured and shadowed
    assert agreed == sum(r.answer.label == r.shadow.label for r in shadowed)
    confidence = samples["visiontune_shadow_confidence_count"]
    for who in ("model", "shadow"):
        assert confidence[(("answered_by", who), *pair)] == compared
    assert samples["visiontune_shadow_inference_seconds_count"][pair] >= 1
    assert samples["visiontune_captured_images_total"][(("model", digits_model),)] >= compared


def test_a_request_picks_its_model_by_field_key_or_path(
    live, digit_files, digits_model, random_model
):
    files = digit_files["7"][:1]
    assert post_files(live, files).json()[0]["model"] == digits_model  # the first is the default
    assert post_files(live, files, model="random").json()[0]["model"] == random_model
    encoded = base64.b64encode(files[0].read_bytes()).decode()
    body = {"images": [encoded], "model": "random"}
    assert live.client.post("/classify_json", json=body).json()[0]["model"] == random_model
    parts = [("images", (files[0].name, files[0].read_bytes(), "image/png"))]
    by_path = live.client.post("/models/random/classify", files=parts)
    assert by_path.status_code == 200 and by_path.json()[0]["model"] == random_model
    described = live.client.get("/model").json()
    assert described["tag"] == digits_model
    assert {name: m["tag"] for name, m in described["models"].items()} == {
        "digits": digits_model,
        "random": random_model,
    }
    assert described["shadow"]["tag"] == random_model
    assert live.client.get("/models/random/model").json()["tag"] == random_model
    samples = live.metrics()["visiontune_predictions_total"]
    assert {dict(labels)["model"] for labels in samples} == {digits_model, random_model}


def test_an_unknown_model_is_a_404_naming_the_ones_there(live, digit_files):
    for response in (
        post_files(live, digit_files["7"][:1], model="fashion"),
        live.client.post(
            "/models/fashion/classify",
            files=[("images", ("a.png", digit_files["7"][0].read_bytes(), "image/png"))],
        ),
        live.client.get("/models/fashion/model"),
    ):
        assert response.status_code == 404, response.text
        body = response.json()
        assert body["error"] == "no model 'fashion' here; this server holds: digits, random"
        assert body["detail"] == [{"type": "unknown_model", "loc": ["model"], "msg": body["error"]}]
    rejected = live.metrics()["visiontune_rejected_inputs_total"]
    assert sum(v for labels, v in rejected.items() if ("reason", "unknown_model") in labels) == 3


def test_concurrent_requests_for_two_models_are_each_answered_by_theirs(
    live, digit_files, digits_model, random_model
):
    """Requests for both models arrive together and share batches; each image is answered
    by the model its request named."""
    wanted = {"digits": digits_model, "random": random_model}
    answers: list[tuple[str, str]] = []

    def client(name: str) -> None:
        for path in digit_files["2"][:6]:
            response = post_files(live, [path], model=name)
            answers.append((name, response.json()[0]["model"]))

    threads = [threading.Thread(target=client, args=(name,)) for name in [*wanted, *wanted]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 24
    assert all(tag == wanted[name] for name, tag in answers)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "VISIONTUNE_CAPTURE",
            "nosuch://bucket/x",
            "VISIONTUNE_CAPTURE is not a folder or a known",
        ),
        (
            "VISIONTUNE_CAPTURE",
            "/dev/null/capture",
            "VISIONTUNE_CAPTURE=/dev/null/capture: can't write",
        ),
        ("VISIONTUNE_CAPTURE_RATE", "1.5", "VISIONTUNE_CAPTURE_RATE"),
        ("VISIONTUNE_MODELS", "a=nosuch:v1", "VISIONTUNE_MODELS=nosuch:v1: no model nosuch:v1"),
    ],
)
def test_bad_settings_stop_the_start_naming_the_variable(
    digits_model, tmp_path, variable, value, message
):
    env = {"VISIONTUNE_MODEL": digits_model, variable: value}
    if variable == "VISIONTUNE_MODELS":
        env = {variable: value}
    server = Server(tmp_path, env)
    try:
        assert server.process.wait(timeout=180) != 0
    finally:
        server.stop()
    assert message in server.log.read_text()
