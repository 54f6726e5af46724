"""Exporting a stored model to ONNX: ``pixel_values`` (any batch size) to ``logits``.

``torch.onnx.export``'s default exporter (``torch.export`` + onnxscript) is tried
first; models it cannot trace (Swin's windowed attention, for one) fall back to
the TorchScript exporter. What a runtime needs besides the graph travels in the
file's ``metadata_props``: labels in id order, the calibration temperature
(scores are ``softmax(logits / temperature)``), the input size and the image
processor config. The export is checked before it is kept: ONNX Runtime must give
the PyTorch model's logits on a random batch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from contract.savedmodel import ModelMetadata
from training.store import load_predictor

log = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "logits"
OPSET = 18
TOLERANCE = 1e-4  # largest |logit difference| accepted between PyTorch and ONNX Runtime


class ExportError(RuntimeError):
    """An export that could not be made or does not reproduce the model; one line."""


@dataclass
class Exported:
    path: Path
    tag: str
    max_difference: float


class _Logits(nn.Module):
    """The classifier as a plain tensor function, the graph ONNX holds."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def export_onnx(tag: str, output: Path | None = None) -> Exported:
    """Write the stored model ``tag`` as ONNX (default ``./NAME-VERSION.onnx``) and check it."""
    predictor, metadata, resolved = load_predictor(tag)
    path = Path(output) if output is not None else Path(f"{resolved.name}-{resolved.version}.onnx")
    if path.is_dir():
        raise ExportError(f"--output {path}: is a folder; name the .onnx file")
    difference = write_graph(predictor, metadata, str(resolved), path)
    return Exported(path=path, tag=str(resolved), max_difference=difference)


def write_graph(predictor, metadata: ModelMetadata, tag: str, path: Path) -> float:
    """Export ``predictor``'s model to ``path`` (written whole or not at all), checked against
    ONNX Runtime; the largest logit difference."""
    model, preprocessing = predictor.model, predictor.preprocessing
    module = _Logits(model).eval()
    example = torch.zeros(2, 3, preprocessing.height, preprocessing.width)
    properties = {
        "visiontune.tag": tag,
        "visiontune.labels": json.dumps(metadata.labels, ensure_ascii=False),
        "visiontune.temperature": repr(metadata.temperature),
        "visiontune.image_size": json.dumps(list(metadata.image_size)),
        "visiontune.backbone": metadata.backbone,
        "preprocessor_config": preprocessing.to_processor().to_json_string(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        draft = Path(tmp) / path.name
        _export(module, example, draft)
        _add_metadata(draft, properties)
        difference = _check(module, draft, preprocessing.height, preprocessing.width)
        draft.replace(path)
    return difference


@contextlib.contextmanager
def _quiet():
    """The exporters' warnings and notes (tracer, missing torchvision ops) are not the
    user's concern: the check after the export is what says the file is right."""
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_log.setLevel(level)


def _export(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with _quiet():
        _run_exporters(module, example, path)


def _run_exporters(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    common = {"input_names": [INPUT_NAME], "output_names": [OUTPUT_NAME], "opset_version": OPSET}
    try:
        batch = torch.export.Dim("batch")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=True,
            dynamic_shapes={INPUT_NAME: {0: batch}},
            external_data=False,
            verbose=False,
            **common,
        )
    except Exception as err:  # torch.export raises many types for graphs it cannot trace
        log.info(
            "torch.export cannot trace this model (%s); using the TorchScript exporter",
            type(err).__name__,
        )
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            **common,
        )


def _add_metadata(path: Path, properties: dict[str, str]) -> None:
    import onnx

    graph = onnx.load(str(path))
    existing = {prop.key for prop in graph.metadata_props}
    for key, value in properties.items():
        if key not in existing:
            graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def _check(module: nn.Module, path: Path, height: int, width: int) -> float:
    """The largest logit difference between ONNX Runtime and PyTorch on a random batch of 3."""
    import onnxruntime

    pixels = torch.randn(3, 3, height, width, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = module(pixels).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy()})
    difference = float(np.abs(logits - expected).max())
    if difference > TOLERANCE:
        raise ExportError(
            f"the ONNX model's logits differ from PyTorch's by {difference:.2e} "
            f"(tolerance {TOLERANCE:.0e}); not written"
        )
    return difference
