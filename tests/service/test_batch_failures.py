"""A model error fails only its batch, answered 500 with a body that says so and counted;
a CUDA out-of-memory error is survived by running the batch as two halves. The server
is the real service with a model that fails on marked images (tests/support/faulty_service)."""

from __future__ import annotations

from tests.support.faults import MODEL_ERROR, OUT_OF_MEMORY, solid_png
from tests.support.servers import total


def post(server, images: list[bytes]):
    files = [("images", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    return server.client.post("/classify", files=files)


def test_a_model_error_fails_its_batch_with_a_500_that_says_so(faulty_server, digit_files):
    digit = digit_files["3"][0].read_bytes()
    before = faulty_server.metrics()
    failed = post(faulty_server, [digit, solid_png(MODEL_ERROR)])
    assert failed.status_code == 500
    body = failed.json()
    assert body["detail"][0]["type"] == "model_error"
    assert "the model failed on the batch of 2 image(s)" in body["error"]
    assert "RuntimeError" in body["error"]

    served = post(faulty_server, [digit])
    assert served.status_code == 200 and served.json()[0]["label"] == "3"
    after = faulty_server.metrics()
    for name, labels in [
        ("visiontune_batch_failures_total", {"reason": "model_error"}),
        ("bentoml_service_request_total", {"http_response_code": "500"}),
    ]:
        assert total(after, name, **labels) == total(before, name, **labels) + 1, name


def test_out_of_memory_is_retried_as_two_halves(faulty_server, digit_files):
    digit = digit_files["7"][0].read_bytes()
    before = faulty_server.metrics()
    answered = post(faulty_server, [digit, solid_png(OUT_OF_MEMORY)])
    assert answered.status_code == 200
    assert [p["label"] for p in answered.json()][0] == "7"
    assert len(answered.json()) == 2
    after = faulty_server.metrics()
    assert total(after, "visiontune_batch_failures_total") == total(
        before, "visiontune_batch_failures_total"
    )
    assert "retrying as two halves" in faulty_server.log.read_text()
