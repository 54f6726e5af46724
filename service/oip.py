"""The Open Inference Protocol (KServe v2, Triton's HTTP API): requests in, answers out.

The wire format only, with no server in it: ``parse_infer_request`` reads an infer
request (JSON, or JSON followed by raw tensors with the binary data extension) into
numpy arrays and byte strings, checked against the tensors a model declares
(``TensorSpec``); ``encode_infer_response`` writes the answer, each output as JSON
or, where asked, as raw bytes after the JSON; ``classification`` is the
classification extension (``"score:index:label"`` strings, best first).

The binary data extension: a request whose ``Inference-Header-Content-Length``
header is set holds that many bytes of JSON, then the data of every input whose
``parameters.binary_data_size`` is set, in the order the inputs are listed. FP32
data is little-endian; each element of a BYTES tensor is a 4-byte little-endian
length and then its bytes. An answer carries binary outputs the same way when an
output asks for ``"binary_data": true`` (or the request for
``"binary_data_output": true``). In JSON, the elements of a BYTES input that holds
files (encoded images) are base64 text, as KServe's image examples send them.

Every problem is an :class:`OipError`, whose message names the tensor and what is
wrong; the service answers it 400 with the protocol's ``{"error": message}``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER_LENGTH = "inference-header-content-length"
DATATYPES = {"FP32": np.dtype("<f4"), "BYTES": None}
MAX_JSON_ELEMENTS = 1 << 24  # numbers one JSON tensor may hold (a 4096-image batch of 64x64)


class OipError(ValueError):
    """A request the protocol or the model cannot take; ``reason`` is the metric label."""

    def __init__(self, message: str, reason: str = "invalid_tensor"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TensorSpec:
    """A tensor a model takes or gives: name, datatype, shape (-1: any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def check_shape(self, shape: tuple[int, ...]) -> None:
        matches = len(shape) == len(self.shape) and all(
            want in (-1, got) for want, got in zip(self.shape, shape, strict=True)
        )
        if not matches:
            raise OipError(
                f"input {self.name!r} has shape {list(shape)}; the model takes "
                f"{list(self.shape)} (-1: any size)",
                "wrong_shape",
            )


@dataclass
class RequestedOutput:
    name: str
    binary: bool = False
    classification: int | None = None


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray | list[bytes]]
    outputs: list[RequestedOutput]
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray | list[bytes]


def parse_infer_request(
    body: bytes,
    header_length: str | None,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
) -> InferRequest:
    """An infer request's tensors, checked against the model's ``inputs`` and ``outputs``."""
    head, binary = _split(body, header_length)
    try:
        document = json.loads(head)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise OipError(f"the request is not valid JSON ({err})", "malformed_json") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise OipError('an infer request is a JSON object with an "inputs" list', "malformed_json")
    specs = {spec.name: spec for spec in inputs}
    tensors: dict[str, np.ndarray | list[bytes]] = {}
    offset = 0
    for entry in document["inputs"]:
        spec, shape = _input_header(entry, specs)
        if spec.name in tensors:
            raise OipError(f"input {spec.name!r} is given twice", "invalid_tensor")
        size = _parameters(entry).get("binary_data_size")
        if size is not None:
            chunk, offset = _binary_chunk(binary, offset, size, spec.name)
            tensors[spec.name] = _from_binary(chunk, spec, shape)
        elif "data" in entry:
            tensors[spec.name] = _from_json(entry["data"], spec, shape)
        else:
            raise OipError(f"input {spec.name!r} has no data", "missing_field")
    if offset != len(binary):
        raise OipError(
            f"{len(binary) - offset} bytes after the last binary input; the inputs' "
            "binary_data_size must add up to the body after the JSON header",
            "invalid_tensor",
        )
    parameters = _parameters(document)
    return InferRequest(
        id=_request_id(document),
        inputs=tensors,
        outputs=_requested_outputs(document, parameters, outputs),
        parameters=parameters,
    )


def _split(body: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return body, b""
    if not header_length.strip().isdigit() or int(header_length) > len(body):
        raise OipError(
            f"Inference-Header-Content-Length is {header_length!r}; it must be the length of "
            f"the JSON header, at most the body's {len(body)} bytes",
            "invalid_tensor",
        )
    length = int(header_length)
    return body[:length], body[length:]


def _parameters(entry: dict) -> dict[str, Any]:
    parameters = entry.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise OipError('"parameters" must be a JSON object', "malformed_json")
    return parameters


def _request_id(document: dict) -> str | None:
    value = document.get("id")
    return None if value is None else str(value)


def _input_header(entry: Any, specs: dict[str, TensorSpec]) -> tuple[TensorSpec, tuple[int, ...]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise OipError('each input is a JSON object with a "name"', "malformed_json")
    name = entry["name"]
    if name not in specs:
        raise OipError(
            f"unknown input {name!r}; the model takes {', '.join(map(repr, specs))}",
            "unknown_field",
        )
    spec = specs[name]
    if entry.get("datatype") != spec.datatype:
        raise OipError(
            f"input {name!r} is {entry.get('datatype')!r}; the model takes {spec.datatype}",
            "wrong_datatype",
        )
    shape = entry.get("shape")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise OipError(f"input {name!r}: shape must be a list of sizes", "wrong_shape")
    spec.check_shape(tuple(shape))
    return spec, tuple(shape)


def _binary_chunk(binary: bytes, offset: int, size: Any, name: str) -> tuple[bytes, int]:
    if not isinstance(size, int) or size < 0 or offset + size > len(binary):
        raise OipError(
            f"input {name!r}: binary_data_size {size!r} runs past the {len(binary)} bytes of "
            "binary data after the JSON header",
            "invalid_tensor",
        )
    return binary[offset : offset + size], offset + size


def _from_binary(
    chunk: bytes, spec: TensorSpec, shape: tuple[int, ...]
) -> np.ndarray | list[bytes]:
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        elements = unpack_bytes(chunk, spec.name)
        _check_count(len(elements), count, spec.name)
        return elements
    dtype = DATATYPES[spec.datatype]
    if len(chunk) != count * dtype.itemsize:
        raise OipError(
            f"input {spec.name!r}: {len(chunk)} bytes of binary data for shape {list(shape)}, "
            f"which needs {count * dtype.itemsize}",
            "wrong_shape",
        )
    return _finite(np.frombuffer(chunk, dtype=dtype).astype(np.float32).reshape(shape), spec.name)


def _from_json(data: Any, spec: TensorSpec, shape: tuple[int, ...]) -> np.ndarray | list[bytes]:
    count = math.prod(shape)
    if spec.datatype == "BYTES":
        elements = _flatten(data)
        _check_count(len(elements), count, spec.name)
        return [_text_bytes(element, spec.name, index) for index, element in enumerate(elements)]
    if count > MAX_JSON_ELEMENTS:
        raise OipError(
            f"input {spec.name!r}: {count} numbers are too many for JSON; send them with the "
            "binary data extension",
            "too_many_pixels_in_request",
        )
    try:
        array = np.asarray(data, dtype=np.float32)
    except (TypeError, ValueError):
        raise OipError(f"input {spec.name!r}: data must be numbers", "wrong_datatype") from None
    _check_count(array.size, count, spec.name)
    return _finite(array.reshape(shape), spec.name)


def _flatten(data: Any) -> list:
    if not isinstance(data, list):
        return [data]
    flat: list = []
    for item in data:
        flat.extend(_flatten(item) if isinstance(item, list) else [item])
    return flat


def _text_bytes(element: Any, name: str, index: int) -> bytes:
    """A BYTES element sent in JSON: base64 text of a file (a data: URL prefix is allowed)."""
    if not isinstance(element, str):
        raise OipError(
            f"input {name!r}[{index}]: BYTES elements in JSON are strings", "wrong_datatype"
        )
    text = element.split(",", 1)[1] if element.startswith("data:") and "," in element else element
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise OipError(
            f"input {name!r}[{index}]: not valid base64 ({err}); in JSON, send each file as "
            "base64 text, or the raw bytes with the binary data extension",
            "malformed_base64",
        ) from None


def _check_count(got: int, want: int, name: str) -> None:
    if got != want:
        raise OipError(f"input {name!r} holds {got} elements; its shape says {want}", "wrong_shape")


def _finite(array: np.ndarray, name: str) -> np.ndarray:
    if not np.isfinite(array).all():
        raise OipError(f"input {name!r} holds NaN or infinite values", "invalid_value")
    return array


def unpack_bytes(chunk: bytes, name: str = "BYTES") -> list[bytes]:
    """The elements of a binary BYTES tensor: each a 4-byte little-endian length and its bytes."""
    elements, offset = [], 0
    while offset < len(chunk):
        if offset + 4 > len(chunk):
            raise OipError(
                f"input {name!r}: a BYTES element's length is cut short", "invalid_tensor"
            )
        (length,) = struct.unpack_from("<I", chunk, offset)
        offset += 4
        if offset + length > len(chunk):
            raise OipError(
                f"input {name!r}: a BYTES element of {length} bytes runs past the data",
                "invalid_tensor",
            )
        elements.append(chunk[offset : offset + length])
        offset += length
    return elements


def pack_bytes(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(element)) + element for element in elements)


def _requested_outputs(
    document: dict, parameters: dict[str, Any], outputs: list[TensorSpec]
) -> list[RequestedOutput]:
    """The outputs asked for (all, in JSON, where none are named), each checked."""
    names = {spec.name for spec in outputs}
    binary_default = bool(parameters.get("binary_data_output", False))
    entries = document.get("outputs")
    if entries is None:
        return [RequestedOutput(spec.name, binary_default) for spec in outputs]
    if not isinstance(entries, list):
        raise OipError('"outputs" must be a list', "malformed_json")
    requested = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("name") not in names:
            name = entry.get("name") if isinstance(entry, dict) else entry
            raise OipError(
                f"unknown output {name!r}; the model gives {', '.join(map(repr, sorted(names)))}",
                "unknown_field",
            )
        options = _parameters(entry)
        k = options.get("classification")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise OipError(
                f"output {entry['name']!r}: classification must be a count of at least 1",
                "invalid_value",
            )
        binary = bool(options.get("binary_data", binary_default))
        requested.append(RequestedOutput(entry["name"], binary, k))
    return requested


def classification(scores: np.ndarray, k: int, labels: list[str]) -> list[list[bytes]]:
    """The classification extension: per row, the ``k`` best as ``b"score:index:label"``."""
    rows = []
    for row in scores:
        best = np.argsort(row)[::-1][: min(k, len(row))]
        rows.append([f"{row[i]:.6f}:{i}:{labels[i]}".encode() for i in best])
    return rows


def encode_infer_response(
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: list[OutputTensor],
    binary: set[str],
) -> tuple[bytes, dict[str, str]]:
    """The answer's body and headers: JSON, then the raw data of the outputs in ``binary``."""
    entries, chunks = [], []
    for output in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if output.name in binary:
            raw = (
                pack_bytes(output.data)  # type: ignore[arg-type]
                if output.datatype == "BYTES"
                else np.ascontiguousarray(output.data, dtype="<f4").tobytes()
            )
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif output.datatype == "BYTES":
            entry["data"] = [element.decode() for element in output.data]  # type: ignore[union-attr]
        else:
            entry["data"] = np.asarray(output.data, dtype=np.float32).ravel().tolist()
        entries.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "outputs": entries}
    if model_version is not None:
        document["model_version"] = model_version
    if request_id is not None:
        document["id"] = request_id
    head = json.dumps(document, ensure_ascii=False).encode()
    if not chunks:
        return head, {"content-type": "application/json"}
    headers = {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
    return head + b"".join(chunks), headers


def model_metadata(
    name: str,
    versions: list[str],
    platform: str,
    inputs: list[TensorSpec],
    outputs: list[TensorSpec],
) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the model's tensors."""
    return {
        "name": name,
        "versions": versions,
        "platform": platform,
        "inputs": [spec.metadata() for spec in inputs],
        "outputs": [spec.metadata() for spec in outputs],
    }
