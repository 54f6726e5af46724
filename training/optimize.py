"""`visiontune optimize`: the ONNX graphs the other runtimes serve, kept in the stored model.

The fp32 graph is ``visiontune export``'s (checked against ONNX Runtime as it is
made), written into the stored model's folder as ``onnx/model.onnx``. With
``int8`` a statically quantized copy is made by ONNX Runtime's quantizer (QDQ
format, weights int8 per channel, activations uint8 with ranges calibrated on the
model's stored training images, ``contract.samples``), and both graphs classify
the stored held-out images: if int8 loses more than ``max_loss`` of accuracy it is
refused and nothing is kept; otherwise it is written as ``onnx/model.int8.onnx`` and
its accuracy change recorded in the model's metadata. ONNX Runtime and OpenVINO
both run the int8 graph.

A stored model is otherwise never changed, so this is the one writer of its folder
after it is saved: each file appears whole (written beside it, then renamed), the
metadata last, under a lock, so a concurrent ``optimize`` of the same model waits and
a service starting meanwhile sees either no graph or a whole one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bentoml
import numpy as np

from contract.images import Preprocessing
from contract.runtimes import OnnxRuntimePredictor
from contract.samples import Samples
from contract.savedmodel import ONNX_GRAPH, ONNX_INT8_GRAPH, Int8Check, ModelMetadata, OnnxGraphs
from contract.stages import resolve
from training.export import OPSET, write_graph
from training.store import load_predictor, update_metadata

log = logging.getLogger(__name__)

MAX_LOSS = 0.01  # accuracy (0-1) the int8 graph may lose on the held-out images
QUANTIZER = "onnxruntime.quantization.quantize_static: QDQ, per-channel int8 weights, uint8 activations (min-max)"


class OptimizeError(RuntimeError):
    """A graph that could not be made; one line."""


class Int8Refused(OptimizeError):
    """The int8 graph loses more accuracy than allowed; nothing was kept."""

    def __init__(self, check: Int8Check):
        self.check = check
        super().__init__(
            f"int8 loses {-check.accuracy_change:.2%} accuracy on {check.held_out_images} held-out "
            f"images ({check.accuracy_fp32:.2%} -> {check.accuracy_int8:.2%}), more than the "
            f"{check.max_loss:.2%} allowed (--max-accuracy-loss); not kept"
        )


@dataclass
class Optimized:
    tag: str
    graphs: OnnxGraphs
    exported: bool  # False: the fp32 graph was already stored
    folder: Path


def optimize(ref: str, *, int8: bool = False, max_loss: float = MAX_LOSS) -> Optimized:
    """Keep the ONNX graph (and with ``int8`` the int8 one) in the stored model ``ref``."""
    stored = bentoml.models.get(resolve(ref))
    folder = Path(stored.path)
    with _locked(folder):
        metadata = ModelMetadata.model_validate(stored.info.metadata)
        graphs, exported = metadata.onnx, False
        if graphs is None or not (folder / ONNX_GRAPH).exists():
            predictor, metadata, _ = load_predictor(str(stored.tag))
            log.info("exporting %s to ONNX", stored.tag)
            difference = write_graph(predictor, metadata, str(stored.tag), folder / ONNX_GRAPH)
            graphs, exported = OnnxGraphs(opset=OPSET, max_logit_difference=difference), True
            update_metadata(stored, {"onnx": graphs.model_dump(mode="json", exclude_none=True)})
        if int8:
            graphs = graphs.model_copy(update={"int8": _quantize(folder, metadata, max_loss)})
            update_metadata(stored, {"onnx": graphs.model_dump(mode="json", exclude_none=True)})
    return Optimized(str(stored.tag), graphs, exported, folder)


def _quantize(folder: Path, metadata: ModelMetadata, max_loss: float) -> Int8Check:
    samples = Samples.load(folder)
    if samples is None or not len(samples.calibration) or not len(samples.held_out):
        raise OptimizeError(
            "this model keeps no sample images to calibrate and check int8 on (samples.npz, "
            "which `visiontune train` stores with every model it saves)"
        )
    preprocessing = Preprocessing.from_pretrained(folder)
    with tempfile.TemporaryDirectory(dir=folder / "onnx") as tmp:
        draft = Path(tmp) / "model.int8.onnx"
        _quantize_static(folder / ONNX_GRAPH, draft, samples.calibration, preprocessing)
        fp32 = OnnxRuntimePredictor(folder / ONNX_GRAPH, preprocessing, metadata.temperature)
        quantized = OnnxRuntimePredictor(
            draft, preprocessing, metadata.temperature, precision="int8"
        )
        check = _compare(fp32, quantized, samples, max_loss)
        if -check.accuracy_change > max_loss:
            raise Int8Refused(check)
        draft.replace(folder / ONNX_INT8_GRAPH)
    return check


def _quantize_static(
    graph: Path, output: Path, images: np.ndarray, preprocessing: Preprocessing
) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [
        preprocessing.normalize(_tensor(images[i : i + 8])).numpy()
        for i in range(0, len(images), 8)
    ]

    class Calibration(CalibrationDataReader):
        def __init__(self):
            self.pending = iter(batches)

        def get_next(self):
            batch = next(self.pending, None)
            return None if batch is None else {"pixel_values": batch}

    prepared = output.with_name("prepared.onnx")
    with _quiet():
        quant_pre_process(str(graph), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(output),
            Calibration(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )
    prepared.unlink()


def _compare(
    fp32: OnnxRuntimePredictor, quantized: OnnxRuntimePredictor, samples: Samples, max_loss: float
) -> Int8Check:
    """Both graphs on the stored held-out images: accuracies and top-1 agreement."""
    fp32.forward_batch = quantized.forward_batch = 32
    reference, scores = fp32(samples.held_out), quantized(samples.held_out)
    truth = samples.held_out_labels
    accuracy_fp32 = float((reference.argmax(1) == truth).mean())
    accuracy_int8 = float((scores.argmax(1) == truth).mean())
    return Int8Check(
        method=QUANTIZER,
        calibration_images=len(samples.calibration),
        held_out_images=len(samples.held_out),
        accuracy_fp32=accuracy_fp32,
        accuracy_int8=accuracy_int8,
        accuracy_change=accuracy_int8 - accuracy_fp32,
        max_loss=max_loss,
        top1_agreement=float((reference.argmax(1) == scores.argmax(1)).mean()),
    )


def _tensor(images: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images))


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer logs every tensor it calibrates, and warns on the root logger
    about each weight it keeps per tensor (layer norms): the check after it is what counts."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    (folder / "onnx").mkdir(exist_ok=True)
    with open(folder / "onnx" / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
