"""Which precision a CPU serves in: bf16 where the CPU has it natively and it agrees with fp32.

``VISIONTUNE_PRECISION=auto`` on a CPU with native bf16 (the ``avx512_bf16`` or
``amx_bf16`` flags) tries bf16 at warm-up: the model classifies a calibration
batch in fp32 and in bf16, and bf16 is kept only if the two agree on the top label
for at least :data:`MIN_TOP1_AGREEMENT` of the images and no calibrated score moves
by more than :data:`SCORE_TOLERANCE`. Otherwise, or on a CPU without native bf16
(where bf16 is emulated and slower than fp32), it serves fp32. Either way the
decision and its reason are one log line and part of ``GET /model``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contract.predictor import Predictor

MIN_TOP1_AGREEMENT = 0.99
SCORE_TOLERANCE = 0.05
CALIBRATION_IMAGES = 128  # at 99%, one flip in 128 is allowed, none in 64
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class PrecisionChoice:
    """The autocast dtype to serve with (None: fp32) and why."""

    autocast_dtype: torch.dtype | None
    reason: str


@dataclass(frozen=True)
class Agreement:
    """How closely a lower precision's calibrated probabilities follow fp32's."""

    top1: float
    max_score_change: float

    @classmethod
    def between(cls, reference: np.ndarray, candidate: np.ndarray) -> Agreement:
        same = reference.argmax(axis=1) == candidate.argmax(axis=1)
        return cls(float(same.mean()), float(np.abs(reference - candidate).max()))

    @property
    def acceptable(self) -> bool:
        return self.top1 >= MIN_TOP1_AGREEMENT and self.max_score_change <= SCORE_TOLERANCE

    def describe(self) -> str:
        return (
            f"top-1 agreement with fp32 {self.top1:.1%} (needs {MIN_TOP1_AGREEMENT:.0%}), "
            f"largest score change {self.max_score_change:.4f} (allowed {SCORE_TOLERANCE})"
        )


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX), from its flags."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    flags = next(
        (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")),
        [],
    )
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def calibration_batch(height: int, width: int, count: int = CALIBRATION_IMAGES) -> np.ndarray:
    """``count`` fixed images (seeded): smooth colour fields with edges, like photos at a
    glance, rather than white noise that no model has an opinion about."""
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(count, 4, 4, 3), dtype=np.uint8)
    rows = np.linspace(0, 3.999, height).astype(int)
    cols = np.linspace(0, 3.999, width).astype(int)
    fields = coarse[:, rows][:, :, cols].astype(np.int16)
    grain = rng.integers(-24, 25, size=fields.shape, dtype=np.int16)
    return np.clip(fields + grain, 0, 255).astype(np.uint8)


def choose_cpu_precision(predictor: Predictor, native_bf16: bool) -> PrecisionChoice:
    """auto on a CPU: bf16 if ``native_bf16`` and it agrees with fp32 (see the module), else fp32.

    Leaves ``predictor`` in fp32; the caller sets the chosen dtype.
    """
    if not native_bf16:
        return PrecisionChoice(None, "auto: this CPU has no native bf16 (AVX512-BF16 or AMX)")
    batch = calibration_batch(predictor.preprocessing.height, predictor.preprocessing.width)
    predictor.autocast_dtype = None
    reference = predictor(batch)
    predictor.autocast_dtype = torch.bfloat16
    try:
        agreement = Agreement.between(reference, predictor(batch))
    finally:
        predictor.autocast_dtype = None
    if agreement.acceptable:
        return PrecisionChoice(
            torch.bfloat16, f"auto: native bf16 on this CPU; {agreement.describe()}"
        )
    return PrecisionChoice(None, f"auto: bf16 refused, {agreement.describe()}")
