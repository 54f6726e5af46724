"""service.oip: infer requests as tritonclient (a real KServe v2 client) encodes them, JSON and
binary, read into tensors; answers it decodes; every bad tensor named in one OipError."""

from __future__ import annotations

import base64
import json
import struct

import numpy as np
import pytest
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput, InferResult

from service.oip import (
    OipError,
    OutputTensor,
    TensorSpec,
    classification,
    encode_infer_response,
    model_metadata,
    pack_bytes,
    parse_infer_request,
    unpack_bytes,
)

INPUTS = [
    TensorSpec("images", "BYTES", (-1,)),
    TensorSpec("pixel_values", "FP32", (-1, 3, 4, 4)),
]
OUTPUTS = [TensorSpec("probabilities", "FP32", (-1, 3))]
LABELS = ["cat", "dog", "bird"]


def client_request(inputs, outputs=None, request_id="", parameters=None):
    body, json_size = InferenceServerClient.generate_request_body(
        inputs, outputs=outputs, request_id=request_id, parameters=parameters
    )
    return body, None if json_size is None else str(json_size)


def files_input(files: list[bytes], binary: bool) -> InferInput:
    tensor = InferInput("images", [len(files)], "BYTES")
    elements = files if binary else [base64.b64encode(f).decode() for f in files]
    tensor.set_data_from_numpy(np.array(elements, dtype=np.object_), binary_data=binary)
    return tensor


def parse(body, header_length=None):
    return parse_infer_request(body, header_length, INPUTS, OUTPUTS)


@pytest.mark.parametrize("binary", [True, False])
def test_encoded_files_as_the_client_sends_them(binary):
    files = [b"\x89PNG first", b"\xff\xd8\xff second \x00\x01"]
    body, length = client_request([files_input(files, binary)], request_id="r-1")
    assert (length is not None) == binary
    request = parse(body, length)
    assert request.inputs["images"] == files
    assert request.id == "r-1"
    # naming no outputs, the client asks for every one as binary data
    assert [(o.name, o.binary) for o in request.outputs] == [("probabilities", True)]


@pytest.mark.parametrize("binary", [True, False])
def test_pixel_values_as_the_client_sends_them(binary):
    pixels = np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)
    tensor = InferInput("pixel_values", list(pixels.shape), "FP32")
    tensor.set_data_from_numpy(pixels, binary_data=binary)
    wanted = InferRequestedOutput("probabilities", binary_data=True, class_count=2)
    request = parse(*client_request([tensor], outputs=[wanted]))
    np.testing.assert_array_equal(request.inputs["pixel_values"], pixels)
    [output] = request.outputs
    assert (output.name, output.binary, output.classification) == ("probabilities", True, 2)


def test_a_data_url_and_nested_json_are_accepted():
    png = b"\x89PNG data"
    document = {
        "inputs": [
            {
                "name": "images",
                "datatype": "BYTES",
                "shape": [1],
                "data": [["data:image/png;base64," + base64.b64encode(png).decode()]],
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    request = parse(json.dumps(document).encode())
    assert request.inputs["images"] == [png]
    assert request.outputs[0].binary


@pytest.mark.parametrize("binary", [True, False])
def test_answers_decode_in_the_client(binary):
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], dtype=np.float32)
    outputs = [
        OutputTensor("probabilities", "FP32", [2, 3], scores),
        OutputTensor("labels", "BYTES", [2, 2], sum(classification(scores, 2, LABELS), [])),
    ]
    body, headers = encode_infer_response(
        "m", "1", "r-9", outputs, {"probabilities", "labels"} if binary else set()
    )
    length = headers.get("inference-header-content-length")
    assert headers["content-type"] == ("application/octet-stream" if binary else "application/json")
    result = InferResult.from_response_body(body, header_length=int(length) if length else None)
    np.testing.assert_allclose(result.as_numpy("probabilities"), scores)
    decoded = [
        [e if isinstance(e, bytes) else e.encode() for e in row]
        for row in result.as_numpy("labels").tolist()
    ]
    assert decoded == [
        [b"0.700000:0:cat", b"0.200000:1:dog"],
        [b"0.600000:2:bird", b"0.300000:1:dog"],
    ]
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == ("m", "1", "r-9")


def test_bytes_elements_round_trip():
    elements = [b"", b"a", b"\x00" * 5]
    assert unpack_bytes(pack_bytes(elements)) == elements


def test_metadata_lists_the_tensors():
    metadata = model_metadata("m", ["v1"], "pytorch_torchscript", INPUTS, OUTPUTS)
    assert metadata["inputs"][1] == {
        "name": "pixel_values",
        "datatype": "FP32",
        "shape": [-1, 3, 4, 4],
    }
    assert metadata["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]


def json_request(**entry) -> bytes:
    tensor = {"name": "pixel_values", "datatype": "FP32", "shape": [1, 3, 4, 4], "data": [0.0] * 48}
    return json.dumps({"inputs": [{**tensor, **entry}]}).encode()


@pytest.mark.parametrize(
    ("body", "header_length", "reason", "message"),
    [
        (b"{not json", None, "malformed_json", "not valid JSON"),
        (b"[]", None, "malformed_json", '"inputs" list'),
        (json_request(name="pixels"), None, "unknown_field", "unknown input 'pixels'"),
        (json_request(datatype="FP16"), None, "wrong_datatype", "is 'FP16'; the model takes FP32"),
        (json_request(shape=[1, 3, 5, 5]), None, "wrong_shape", "shape [1, 3, 5, 5]"),
        (
            json_request(shape=[2, 3, 4, 4]),
            None,
            "wrong_shape",
            "holds 48 elements; its shape says 96",
        ),
        (json_request(data=["a"] * 48), None, "wrong_datatype", "data must be numbers"),
        (json_request(data=[float("nan")] * 48), None, "invalid_value", "NaN or infinite"),
        (json_request(data=None), None, "missing_field", "has no data"),
        (json_request(), "999", "invalid_tensor", "Inference-Header-Content-Length"),
        (
            json.dumps(
                {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": ["%%"]}]}
            ).encode(),
            None,
            "malformed_base64",
            "'images'[0]: not valid base64",
        ),
        (
            json.dumps(
                {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [1], "data": [1]}]}
            ).encode(),
            None,
            "wrong_datatype",
            "BYTES elements in JSON are strings",
        ),
    ],
)
def test_bad_tensors_are_named(body, header_length, reason, message):
    body = body.replace(b', "data": null', b"")
    with pytest.raises(OipError, match=message.replace("[", r"\[").replace("]", r"\]")) as raised:
        parse(body, header_length)
    assert raised.value.reason == reason


def binary_request(size_declared: int, payload: bytes, name="images", datatype="BYTES") -> tuple:
    head = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": datatype,
                    "shape": [1] if datatype == "BYTES" else [1, 3, 4, 4],
                    "parameters": {"binary_data_size": size_declared},
                }
            ]
        }
    ).encode()
    return head + payload, str(len(head))


def test_binary_sizes_that_do_not_add_up_are_refused():
    element = struct.pack("<I", 100) + b"short"
    with pytest.raises(OipError, match="element of 100 bytes runs past"):
        parse(*binary_request(len(element), element))
    with pytest.raises(OipError, match="runs past the 3 bytes"):
        parse(*binary_request(10, b"abc"))
    with pytest.raises(OipError, match="2 bytes after the last binary input"):
        parse(*binary_request(4 + 1, struct.pack("<I", 1) + b"a" + b"zz"))
    with pytest.raises(OipError, match="190 bytes of binary data for shape"):
        parse(*binary_request(190, b"\x00" * 190, "pixel_values", "FP32"))


def test_outputs_and_classification_are_checked():
    with pytest.raises(OipError, match="unknown output 'logits'"):
        parse(json.dumps({"inputs": [], "outputs": [{"name": "logits"}]}).encode())
    bad_k = {
        "inputs": [],
        "outputs": [{"name": "probabilities", "parameters": {"classification": 0}}],
    }
    with pytest.raises(OipError, match="classification must be a count"):
        parse(json.dumps(bad_k).encode())


def test_classification_takes_at_most_every_label():
    rows = classification(np.array([[0.2, 0.5, 0.3]]), 10, LABELS)
    assert rows == [[b"0.500000:1:dog", b"0.300000:2:bird", b"0.200000:0:cat"]]
