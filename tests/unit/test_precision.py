"""contract.precision: auto picks bf16 on a CPU only where it is native and agrees with fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contract.images import Preprocessing
from contract.precision import (
    MIN_TOP1_AGREEMENT,
    SCORE_TOLERANCE,
    Agreement,
    calibration_batch,
    choose_cpu_precision,
    cpu_has_native_bf16,
)
from contract.predictor import Predictor

PREPROCESSING = Preprocessing(height=8, width=8, mean=(0.5,) * 3, std=(0.5,) * 3)


class Logits(torch.nn.Module):
    """A model whose logits depend on whether it runs under bf16 autocast: ``shift`` is
    added to the first label's logit in bf16 (a model that bf16 changes, or not)."""

    def __init__(self, shift: float):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 8 * 8, 4)
        self.shift = shift

    def forward(self, pixel_values):
        out = self.linear(pixel_values.flatten(1)).float()
        if torch.is_autocast_enabled("cpu"):
            out[:, 0] += self.shift
        return type("Output", (), {"logits": out})


def predictor(shift: float) -> Predictor:
    torch.manual_seed(0)
    return Predictor(Logits(shift).eval(), PREPROCESSING, temperature=1.0)


def cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: fpu sse2 {flags}\n")
    return path


@pytest.mark.parametrize(
    ("flags", "native"),
    [("avx512f avx512_bf16", True), ("amx_tile amx_bf16", True), ("avx512f avx2", False)],
)
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, native):
    assert cpu_has_native_bf16(cpuinfo(tmp_path, flags)) is native
    assert cpu_has_native_bf16(tmp_path / "missing") is False


def test_without_native_bf16_auto_serves_fp32_and_says_why():
    choice = choose_cpu_precision(predictor(0.0), native_bf16=False)
    assert choice.autocast_dtype is None
    assert choice.reason == "auto: this CPU has no native bf16 (AVX512-BF16 or AMX)"


def test_bf16_that_agrees_with_fp32_is_chosen():
    model = predictor(0.0)
    choice = choose_cpu_precision(model, native_bf16=True)
    assert choice.autocast_dtype is torch.bfloat16
    assert choice.reason.startswith("auto: native bf16 on this CPU; top-1 agreement with fp32 ")
    assert model.autocast_dtype is None  # the caller sets the choice


def test_bf16_that_changes_the_answers_is_refused():
    choice = choose_cpu_precision(predictor(50.0), native_bf16=True)
    assert choice.autocast_dtype is None
    assert choice.reason.startswith("auto: bf16 refused, top-1 agreement with fp32 ")
    assert f"(needs {MIN_TOP1_AGREEMENT:.0%})" in choice.reason


def test_agreement_thresholds():
    reference = np.array([[0.9, 0.1], [0.2, 0.8]] * 50)
    assert Agreement.between(reference, reference).acceptable
    moved = reference + [SCORE_TOLERANCE * 2, -SCORE_TOLERANCE * 2]
    assert not Agreement.between(reference, moved).acceptable
    one_flip = reference.copy()
    one_flip[0] = [0.1, 0.9]
    agreement = Agreement.between(reference, one_flip)
    assert agreement.top1 == pytest.approx(0.99)
    assert not agreement.acceptable  # its score moved by 0.8


def test_the_calibration_batch_is_fixed_and_varied():
    batch = calibration_batch(16, 12, count=5)
    assert batch.shape == (5, 16, 12, 3) and batch.dtype == np.uint8
    np.testing.assert_array_equal(batch, calibration_batch(16, 12, count=5))
    assert batch.std() > 30
