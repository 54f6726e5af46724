"""The stored model's ONNX graph run by ONNX Runtime or OpenVINO, as a ``Predictor``.

Both take what the PyTorch predictor takes, model-size uint8 images, normalise them
with the same ``Preprocessing.normalize`` and apply the same temperature: only the
forward pass (``run``: ``pixel_values`` to logits) is theirs. The graphs are the ones
``visiontune optimize`` keeps in the stored model's folder (``contract.savedmodel``):
``onnx/model.onnx`` (fp32) and ``onnx/model.int8.onnx`` (static int8, QDQ).

Precision is stated, never left to the library: OpenVINO's CPU plugin computes in
bf16 by default on a CPU with native bf16, so its ``INFERENCE_PRECISION_HINT`` is set
to what was chosen (``f32`` or ``bf16``; the int8 graph runs its quantized layers in
int8 and the rest in f32). Threads are set like torch's (one inference stream, the
worker's share of the CPUs), so the runtimes compete on the same cores.

ONNX Runtime's execution providers: ``cpu`` everywhere, ``cuda`` and ``tensorrt``
where onnxruntime-gpu and a GPU are there; asking for one that is not available is
refused with what to install (ONNX Runtime itself would quietly fall back to its CPU).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import torch

from contract.images import Preprocessing
from contract.predictor import Predictor
from contract.savedmodel import ONNX_GRAPH, ONNX_INT8_GRAPH

INPUT_NAME = "pixel_values"
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}
OPENVINO_PRECISIONS = {"float32": "f32", "bfloat16": "bf16", "int8": "f32"}


class RuntimeUnavailable(RuntimeError):
    """A runtime that cannot run here or for this model; the message says why and what to do."""


def installed(runtime: str) -> bool:
    return importlib.util.find_spec(runtime) is not None


def graph_for(folder: str | Path, precision: str) -> Path:
    """The stored graph a precision runs (the int8 graph for int8, else the fp32 one)."""
    relative = ONNX_INT8_GRAPH if precision == "int8" else ONNX_GRAPH
    path = Path(folder) / relative
    if not path.exists():
        flag = " --int8" if precision == "int8" else ""
        raise RuntimeUnavailable(
            f"the stored model has no {relative}: run `visiontune optimize TAG{flag}` "
            "(before `bentoml build`, so the bento packs it)"
        )
    return path


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def check_provider(provider: str) -> None:
    """Refuse an execution provider this machine's onnxruntime lacks (the fix in the message)."""
    if not installed("onnxruntime"):
        raise RuntimeUnavailable("onnxruntime is not installed: pip install 'visiontune[runtimes]'")
    wanted = PROVIDERS[provider]
    have = available_providers()
    if wanted not in have:
        fix = (
            "install onnxruntime-gpu (with CUDA and cuDNN, and TensorRT for tensorrt) on a "
            "machine with an NVIDIA GPU"
            if provider != "cpu"
            else "reinstall onnxruntime"
        )
        raise RuntimeUnavailable(
            f"ONNX Runtime's {wanted} is not available here (available: {', '.join(have)}); {fix}"
        )


class OnnxRuntimePredictor(Predictor):
    """An ONNX graph on one of ONNX Runtime's execution providers."""

    runtime = "onnxruntime"

    def __init__(
        self,
        graph: str | Path,
        preprocessing: Preprocessing,
        temperature: float,
        *,
        precision: str = "float32",
        provider: str = "cpu",
        threads: int | None = None,
    ):
        import onnxruntime

        check_provider(provider)
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3  # warnings about unused initializers are not the user's
        session = onnxruntime.InferenceSession(
            str(graph), options, providers=_provider_chain(provider, precision, Path(graph))
        )
        active = session.get_providers()[0]
        if active != PROVIDERS[provider]:
            raise RuntimeUnavailable(
                f"ONNX Runtime could not start {PROVIDERS[provider]} (it fell back to {active})"
            )
        device = "cpu" if provider == "cpu" else "cuda"
        super().__init__(session, preprocessing, temperature)
        self.provider = provider
        self.device = torch.device(device)
        self._precision = precision

    @property
    def precision(self) -> str:
        return self._precision

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.run(self.preprocessing.normalize(batch.cpu()))

    def run(self, pixel_values: torch.Tensor) -> torch.Tensor:
        inputs = {INPUT_NAME: np.ascontiguousarray(pixel_values.cpu().numpy(), dtype=np.float32)}
        (logits,) = self.model.run(None, inputs)
        return torch.from_numpy(logits).float()


def _provider_chain(provider: str, precision: str, graph: Path) -> list:
    """The providers ONNX Runtime tries in order; the GPU ones keep the CPU for what they lack."""
    if provider == "tensorrt":
        cache = graph.parent / "tensorrt-cache"
        options = {
            "trt_fp16_enable": precision == "float16",
            "trt_int8_enable": False,
            "trt_engine_cache_enable": cache.parent.is_dir() and _writable(cache.parent),
            "trt_engine_cache_path": str(cache),
        }
        return [(PROVIDERS["tensorrt"], options), PROVIDERS["cuda"], PROVIDERS["cpu"]]
    if provider == "cuda":
        return [PROVIDERS["cuda"], PROVIDERS["cpu"]]
    return [PROVIDERS["cpu"]]


def _writable(folder: Path) -> bool:
    return os.access(folder, os.W_OK)


class OpenVinoPredictor(Predictor):
    """An ONNX graph compiled by OpenVINO for this CPU, in a stated inference precision."""

    runtime = "openvino"

    def __init__(
        self,
        graph: str | Path,
        preprocessing: Preprocessing,
        temperature: float,
        *,
        precision: str = "float32",
        threads: int | None = None,
    ):
        if not installed("openvino"):
            raise RuntimeUnavailable(
                "openvino is not installed: pip install 'visiontune[runtimes]'"
            )
        import openvino

        core = openvino.Core()
        config = {
            "INFERENCE_PRECISION_HINT": OPENVINO_PRECISIONS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = str(threads)
        compiled = core.compile_model(core.read_model(str(graph)), "CPU", config)
        computes = compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        if computes != OPENVINO_PRECISIONS[precision]:
            raise RuntimeUnavailable(
                f"OpenVINO computes in {computes} on this CPU, not {precision} "
                "(bf16 needs AVX512-BF16 or AMX)"
            )
        super().__init__(compiled, preprocessing, temperature)
        self.request = compiled.create_infer_request()
        self._precision = precision

    @property
    def precision(self) -> str:
        return self._precision

    def run(self, pixel_values: torch.Tensor) -> torch.Tensor:
        inputs = np.ascontiguousarray(pixel_values.cpu().numpy(), dtype=np.float32)
        self.request.infer({0: inputs})
        return torch.from_numpy(self.request.get_output_tensor(0).data.copy()).float()
