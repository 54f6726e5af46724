"""Which runtime runs a stored model's forward pass, and why: ``build_runtime``.

``VISIONTUNE_RUNTIME`` names torch, onnxruntime, openvino or auto. torch is the
stored model in PyTorch, in the precision ``VISIONTUNE_PRECISION`` gives it (auto:
bf16 on a CPU with native bf16 if it agrees with fp32, ``contract.precision``). The
other runtimes run the ONNX graphs ``visiontune optimize`` keeps in the stored model
(``contract.runtimes``), each in the precisions the setting allows: ONNX Runtime in
fp32 (and int8 where the int8 graph is kept), OpenVINO in fp32, bf16 (on a CPU with
native bf16) and int8, each precision stated to the library.

Before the server is ready, every candidate classifies the model's stored held-out
images (``contract.samples``; a fixed calibration batch for a model that keeps
none) and is kept only if it agrees with torch fp32: the same top label for at least
:data:`MIN_TOP1_AGREEMENT` of them and no calibrated score further than
:data:`SCORE_TOLERANCE`. The candidates that agree are timed side by side at the
forward-batch sizes (``service.forward_batch``, in rotating rounds), and the fastest
per image serves, in passes of its fastest size. A runtime named explicitly serves if
one of its precisions agrees, else torch serves and one log line says why. On a GPU,
auto is torch; ONNX Runtime's CUDA and TensorRT providers are asked for by name.

``build_runtime`` is a function of one stored model and the settings, so a server
holding several models calls it once for each; the ``Runtime`` it returns carries the
ready predictor and what ``GET /model`` and the start-up log say about the choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from contract.precision import Agreement, calibration_batch, choose_cpu_precision
from contract.precision import cpu_has_native_bf16 as native_bf16
from contract.predictor import Predictor
from contract.runtimes import (
    OnnxRuntimePredictor,
    OpenVinoPredictor,
    RuntimeUnavailable,
    available_providers,
    graph_for,
    installed,
)
from contract.samples import Samples
from contract.savedmodel import ModelMetadata
from service.forward_batch import candidate_sizes, describe, fastest_size, time_predictors
from service.settings import PREFIX, Settings

logger = logging.getLogger("bentoml.visiontune")

MIN_TOP1_AGREEMENT = 0.995
SCORE_TOLERANCE = 0.02
TIMING_BUDGET_S = 20.0  # warm-up seconds the side-by-side timing may take (after one round)
CHECK_BATCH = 32  # images per forward pass of the agreement check


@dataclass
class Candidate:
    """One way to run the model, and how it fared at warm-up."""

    runtime: str
    precision: str
    predictor: Predictor | None = None
    refused: str | None = None
    agreement: Agreement | None = None
    seconds: dict[int, float] = field(default_factory=dict)  # per image, by batch size

    @property
    def name(self) -> str:
        return f"{self.runtime} {self.precision}"

    @property
    def best(self) -> float:
        return min(self.seconds.values()) if self.seconds else float("inf")

    def describe(self) -> dict:
        described: dict = {"runtime": self.runtime, "precision": self.precision}
        if self.agreement is not None:
            described["top1_agreement"] = self.agreement.top1
            described["max_score_change"] = self.agreement.max_score_change
        if self.refused is not None:
            described["refused"] = self.refused
        if self.seconds:
            described["ms_per_image"] = {str(s): 1000 * t for s, t in self.seconds.items()}
        return described


@dataclass
class Runtime:
    """The predictor that serves, and what was tried and measured to choose it."""

    predictor: Predictor
    reason: str
    precision_reason: str
    forward_batch_reason: str
    candidates: list[Candidate]
    checked_on: str | None

    @property
    def name(self) -> str:
        return self.predictor.runtime

    def description(self) -> dict:
        """The ``serving`` fields of ``GET /model`` about the runtime."""
        return {
            "runtime": self.name,
            "runtime_reason": self.reason,
            "runtime_checked_on": self.checked_on,
            "runtimes": [candidate.describe() for candidate in self.candidates],
        }


def build_runtime(folder: str | Path, metadata: ModelMetadata, settings: Settings) -> Runtime:
    """The stored model in ``folder`` as a ready, warmed predictor on the runtime the settings
    and the warm-up checks choose (see the module)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(settings.cpu_threads())
    reference = Predictor.from_folder(folder, metadata, device=device)
    others = _other_candidates(folder, metadata, settings, reference, device)
    checked_on = _check(others, reference, folder) if any(c.predictor for c in others) else None
    precision_reason = _torch_precision(reference, settings)
    torch_candidate = Candidate("torch", reference.precision, reference)
    candidates = [torch_candidate, *others]
    passing = [c for c in candidates if c.refused is None]
    if settings.runtime not in ("auto", "torch"):
        named = [c for c in passing if c.runtime == settings.runtime]
        passing = named or [torch_candidate]
    chosen, forward_batch_reason = _fastest(passing, settings, device)
    reason = _why(chosen, candidates, settings, checked_on)
    logger.info("serving with %s: %s", chosen.name, reason)
    predictor = chosen.predictor
    if chosen.runtime == "torch":
        logger.info("serving in %s: %s", predictor.precision, precision_reason)
        if settings.compile:
            predictor.model = torch.compile(predictor.model, dynamic=True)
    elif settings.precision == "auto":
        precision_reason = (
            f"auto: {chosen.precision} on {chosen.runtime}, the fastest of its precisions "
            "that agree with torch fp32"
        )
    else:
        precision_reason = f"{PREFIX}PRECISION={settings.precision}"
    logger.info(
        "forward passes of at most %s images: %s",
        predictor.forward_batch or settings.max_batch_size,
        forward_batch_reason,
    )
    return Runtime(
        predictor, reason, precision_reason, forward_batch_reason, candidates, checked_on
    )


def _other_candidates(folder, metadata, settings: Settings, reference, device) -> list[Candidate]:
    """The ONNX Runtime and OpenVINO candidates the settings allow, built (or refused)."""
    wanted = []
    if settings.runtime == "onnxruntime" or (settings.runtime == "auto" and device.type == "cpu"):
        wanted += [("onnxruntime", p) for p in _onnxruntime_precisions(settings)]
    if settings.runtime == "openvino" or (settings.runtime == "auto" and device.type == "cpu"):
        wanted += [("openvino", p) for p in _openvino_precisions(settings)]
    candidates = []
    for runtime, precision in wanted:
        candidate = Candidate(runtime, precision)
        try:
            candidate.predictor = _make(runtime, precision, folder, metadata, settings, reference)
        except (RuntimeUnavailable, ImportError) as err:
            candidate.refused = str(err)
        except Exception as err:  # a runtime that cannot load this graph: say so, serve torch
            candidate.refused = f"{runtime} could not load the graph ({type(err).__name__}: {err})"
        candidates.append(candidate)
    return candidates


def _onnxruntime_precisions(settings: Settings) -> list[str]:
    if settings.onnx_provider == "tensorrt" and settings.precision in ("auto", "fp16"):
        return ["float16", "float32"] if settings.precision == "auto" else ["float16"]
    if settings.onnx_provider != "cpu":
        return ["float32"]
    return {"auto": ["float32", "int8"], "fp32": ["float32"], "int8": ["int8"]}.get(
        settings.precision, []
    )


def _openvino_precisions(settings: Settings) -> list[str]:
    if settings.precision == "auto":
        return ["float32", "bfloat16", "int8"] if native_bf16() else ["float32", "int8"]
    return {"fp32": ["float32"], "bf16": ["bfloat16"], "int8": ["int8"]}.get(settings.precision, [])


def _make(runtime, precision, folder, metadata, settings: Settings, reference) -> Predictor:
    if not installed(runtime):
        raise RuntimeUnavailable(f"{runtime} is not installed: pip install 'visiontune[runtimes]'")
    graph = graph_for(folder, precision)
    threads = settings.cpu_threads()
    if runtime == "onnxruntime":
        return OnnxRuntimePredictor(
            graph,
            reference.preprocessing,
            metadata.temperature,
            precision=precision,
            provider=settings.onnx_provider,
            threads=threads,
        )
    return OpenVinoPredictor(
        graph, reference.preprocessing, metadata.temperature, precision=precision, threads=threads
    )


def onnxruntime_providers() -> list[str] | None:
    """ONNX Runtime's available execution providers; None where it is not installed."""
    return available_providers() if installed("onnxruntime") else None


def check_images(folder: str | Path, height: int, width: int) -> tuple[np.ndarray, str]:
    """The stored held-out images, or a fixed calibration batch where the model keeps none."""
    samples = Samples.load(folder)
    if samples is not None and len(samples.held_out):
        return samples.held_out, f"{len(samples.held_out)} stored held-out images"
    batch = calibration_batch(height, width)
    return batch, f"{len(batch)} calibration images (the stored model keeps no held-out images)"


def _check(candidates: list[Candidate], reference: Predictor, folder) -> str:
    """Refuse every built candidate that does not agree with ``reference`` (torch fp32)."""
    images, checked_on = check_images(
        folder, reference.preprocessing.height, reference.preprocessing.width
    )
    expected = _scores(reference, images)
    for candidate in candidates:
        if candidate.predictor is None:
            continue
        try:
            candidate.agreement = Agreement.between(expected, _scores(candidate.predictor, images))
        except Exception as err:  # a graph the runtime loads but cannot run on these shapes
            candidate.refused = f"failed on the check images ({type(err).__name__}: {err})"
            continue
        if not _agrees(candidate.agreement):
            candidate.refused = (
                f"disagrees with torch fp32 on {checked_on}: {_describe(candidate.agreement)}"
            )
        if candidate.refused is not None:
            candidate.predictor = None
    return checked_on


def _scores(predictor: Predictor, images: np.ndarray) -> np.ndarray:
    chunk, predictor.forward_batch = predictor.forward_batch, CHECK_BATCH
    try:
        return predictor(images)
    finally:
        predictor.forward_batch = chunk


def _agrees(agreement: Agreement) -> bool:
    return agreement.top1 >= MIN_TOP1_AGREEMENT and agreement.max_score_change <= SCORE_TOLERANCE


def _describe(agreement: Agreement) -> str:
    return (
        f"top-1 agreement {agreement.top1:.1%} (needs {MIN_TOP1_AGREEMENT:.1%}), largest score "
        f"change {agreement.max_score_change:.4f} (allowed {SCORE_TOLERANCE})"
    )


def _torch_precision(predictor: Predictor, settings: Settings) -> str:
    """Set torch's precision as ``VISIONTUNE_PRECISION`` says; why (auto on a CPU decides here)."""
    gpu_has_bf16 = predictor.device.type == "cuda" and torch.cuda.is_bf16_supported()
    name = settings.autocast_dtype(predictor.device.type, gpu_has_bf16)
    predictor.autocast_dtype = getattr(torch, name) if name else None
    if settings.precision == "int8":
        predictor.quantize_linear_layers()
    if settings.precision != "auto":
        return f"{PREFIX}PRECISION={settings.precision}"
    if predictor.device.type != "cpu":
        return "auto: the GPU's half precision (bf16 where supported, else fp16)"
    choice = choose_cpu_precision(predictor, native_bf16())
    predictor.autocast_dtype = choice.autocast_dtype
    return choice.reason


def _fastest(passing: list[Candidate], settings: Settings, device) -> tuple[Candidate, str]:
    """The candidate to serve and its forward batch (set on its predictor), and why."""
    limit = settings.max_batch_size
    if settings.forward_batch != "auto":
        size = min(int(settings.forward_batch), limit)
        sizes, reason = [size], f"{PREFIX}FORWARD_BATCH={settings.forward_batch}"
    elif device.type != "cpu":
        sizes, size, reason = [limit], None, "auto: a GPU runs the whole batch in one pass"
    elif limit == 1:
        sizes, size, reason = [1], None, "auto: batching is off"
    else:
        sizes, size, reason = candidate_sizes(limit), None, ""
    if len(passing) > 1 or not reason:
        predictors = [c.predictor for c in passing]
        budget = min(TIMING_BUDGET_S, 10.0 * len(passing))
        timings = time_predictors(predictors, sizes, budget)
        for candidate, seconds in zip(passing, timings, strict=True):
            candidate.seconds = seconds
    chosen = min(passing, key=lambda c: c.best)
    if not reason:
        size = fastest_size(chosen.seconds)
        reason = describe(size, chosen.seconds)
        size = None if size == limit else size
    chosen.predictor.forward_batch = size
    return chosen, reason


def _why(chosen: Candidate, candidates: list[Candidate], settings: Settings, checked_on) -> str:
    """One line: what was asked, what was refused and why, what was measured."""
    refused = [c for c in candidates if c.refused is not None]
    refusals = "; ".join(f"{c.name} refused: {c.refused}" for c in refused)
    timed = [c for c in candidates if c.seconds]
    speeds = ", ".join(f"{c.name} {1000 * c.best:.2f}" for c in timed)
    measured = f"ms per image at its fastest batch size: {speeds}" if len(timed) > 1 else ""
    asked = f"{PREFIX}RUNTIME={settings.runtime}"
    if settings.runtime == "torch":
        parts = [asked]
    elif chosen.runtime == "torch" and settings.runtime != "auto":
        parts = [f"{asked}, but no precision of it agreed with torch fp32; serving with torch"]
    elif settings.runtime == "auto":
        agreed = f"the fastest that agrees with torch fp32 on {checked_on}" if checked_on else ""
        parts = [f"auto: {agreed or 'the only runtime that could run here'}"]
    else:
        parts = [f"{asked}: agrees with torch fp32 on {checked_on}"]
    return "; ".join(part for part in [*parts, measured, refusals] if part)
