"""The Open Inference Protocol (KServe v2) against a real server, through Triton's own HTTP client:
health, metadata, infer with image files (JSON and binary) and with pixel_values, the
classification extension, batching with /classify, bad tensors answered 400 in the protocol's
shape."""

from __future__ import annotations

import base64
from contextlib import contextmanager

import bentoml
import numpy as np
import pytest
import torch
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from contract.images import Preprocessing, decode_image
from tests.support.servers import burst_until_batched, released_together, total


@pytest.fixture(scope="module")
def client(server):
    with_client = InferenceServerClient(server.url.removeprefix("http://"))
    yield with_client
    with_client.close()


@pytest.fixture(scope="module")
def model_name(digits_model) -> str:
    return bentoml.Tag.from_taglike(digits_model).name


def files_input(paths, binary=True) -> InferInput:
    tensor = InferInput("images", [len(paths)], "BYTES")
    data = [p.read_bytes() for p in paths]
    if not binary:
        data = [base64.b64encode(d).decode() for d in data]
    tensor.set_data_from_numpy(np.array(data, dtype=np.object_), binary_data=binary)
    return tensor


def test_health_and_metadata(client, model_name, digits_model):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(model_name)
    assert not client.is_model_ready("another-model")
    metadata = client.get_model_metadata(model_name)
    assert metadata["versions"] == [bentoml.Tag.from_taglike(digits_model).version]
    assert metadata["inputs"] == [
        {"name": "images", "datatype": "BYTES", "shape": [-1]},
        {"name": "pixel_values", "datatype": "FP32", "shape": [-1, 3, 16, 16]},
    ]
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    assert "classification" in client.get_server_metadata()["extensions"]


@pytest.mark.parametrize("binary", [True, False])
def test_infer_on_image_files_gives_the_classify_scores(
    server, client, model_name, digit_files, binary
):
    paths = [paths[3] for paths in digit_files.values()][:8]  # VISIONTUNE_MAX_IMAGES
    expected = [p["score"] for p in server.classify(paths).json()]
    output = InferRequestedOutput("probabilities", binary_data=binary)
    result = client.infer(
        model_name, [files_input(paths, binary)], outputs=[output], request_id="a1"
    )
    scores = result.as_numpy("probabilities")
    assert scores.shape == (8, 10)
    np.testing.assert_allclose(scores.max(axis=1), expected, atol=1e-5)
    assert result.get_response()["id"] == "a1"
    labels = [int(label) for label in digit_files][:8]
    right = sum(int(np.argmax(row)) == label for row, label in zip(scores, labels, strict=True))
    assert right >= 6


def test_pixel_values_and_the_classification_extension(
    client, model_name, digits_model, digit_files
):
    """A caller that preprocesses sends pixel_values, normalised as the stored processor says."""
    path = digit_files["4"][5]
    policy = Preprocessing.from_pretrained(bentoml.models.get(digits_model).path)
    pixels = policy.normalize(torch.from_numpy(policy.resize(decode_image(path))[None])).numpy()
    tensor = InferInput("pixel_values", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    top = InferRequestedOutput("probabilities", binary_data=False, class_count=3)
    result = client.infer(model_name, [tensor], outputs=[top])
    [best] = result.as_numpy("probabilities").tolist()
    assert len(best) == 3
    score, index, label = (best[0].decode() if isinstance(best[0], bytes) else best[0]).split(":")
    assert label == "4" and index == "4" and 0 < float(score) <= 1
    files = client.infer(model_name, [files_input([path])]).as_numpy("probabilities")
    assert float(score) == pytest.approx(float(files.max()), abs=1e-4)


def test_infer_requests_are_batched_together(server, model_name, digit_files):
    paths = [path for paths in digit_files.values() for path in paths[:3]]

    @contextmanager
    def connect():
        own = InferenceServerClient(server.url.removeprefix("http://"))
        try:
            assert own.is_server_live()
            yield own
        finally:
            own.close()

    def infer(own: InferenceServerClient, path) -> tuple:
        return own.infer(model_name, [files_input([path])]).as_numpy("probabilities").shape

    burst = burst_until_batched(server, "infer", lambda: released_together(paths, connect, infer))
    assert set(burst.results) == {(1, 10)}
    requests, batches = burst.requests_and_batches("infer")
    assert requests == len(paths) and batches < requests


@pytest.mark.parametrize(
    ("tensor", "message"),
    [
        (
            ("pixel_values", [1, 3, 8, 8], "FP32"),
            "shape [1, 3, 8, 8]; the model takes [-1, 3, 16, 16]",
        ),
        (("pixel_values", [1, 3, 16, 16], "FP64"), "is 'FP64'; the model takes FP32"),
        (("pictures", [1], "BYTES"), "unknown input 'pictures'"),
    ],
)
def test_bad_tensors_get_400_in_the_protocols_shape(server, model_name, tensor, message):
    name, shape, datatype = tensor
    count = int(np.prod(shape))
    data = ["x"] * count if datatype == "BYTES" else [0.0] * count
    body = {"inputs": [{"name": name, "shape": shape, "datatype": datatype, "data": data}]}
    response = server.client.post(f"/v2/models/{model_name}/infer", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_the_client_reads_the_error(client, model_name):
    bad = InferInput("images", [1], "BYTES")
    bad.set_data_from_numpy(np.array([b"not an image"], dtype=np.object_), binary_data=True)
    with pytest.raises(InferenceServerException, match="not a recognised image format"):
        client.infer(model_name, [bad])
    with pytest.raises(InferenceServerException, match="unknown model 'nope'"):
        client.infer("nope", [bad])


def test_rejections_are_counted_like_classify(server, model_name):
    before = total(server.metrics(), "visiontune_rejected_inputs_total", reason="wrong_shape")
    body = {"inputs": [{"name": "images", "shape": [2], "datatype": "BYTES", "data": ["eA=="]}]}
    assert server.client.post(f"/v2/models/{model_name}/infer", json=body).status_code == 400
    after = total(server.metrics(), "visiontune_rejected_inputs_total", reason="wrong_shape")
    assert after == before + 1
