"""Reading a rate off a learning-rate range test's curve, and the sweep's flags."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from training.lr_find import RangeTest, RangeTestConfig, RangeTestError, suggest


def curve(losses: list[float], planned: int | None = None, start: float = 1e-7) -> RangeTest:
    """A test whose rates grow tenfold every 10 steps from ``start``."""
    lrs = [start * 10 ** (i / 10) for i in range(len(losses))]
    return RangeTest(lrs, losses, losses, diverged=False, planned=planned or len(losses))


def test_steepest_descent_and_a_tenth_of_the_minimum():
    # flat at 2.3, falls fastest around step 50 (lr 1e-2), lowest at step 70, then climbs
    steps = np.arange(100)
    losses = 2.3 - 1.5 / (1 + np.exp(-(steps - 50) / 4.0))
    losses[70:] = losses[70] + 0.05 * (steps[70:] - 70)
    result = curve(list(losses))
    suggestion = suggest(result)
    assert suggestion.steepest == pytest.approx(result.lrs[49], rel=0.3)
    assert suggestion.minimum_tenth == pytest.approx(result.lrs[70] / 10)


def test_the_steepest_point_is_sought_before_the_minimum_only():
    losses = [2.0] * 10 + [2.0 - 0.02 * i for i in range(31)] + [1.4 + 0.3 * i for i in range(20)]
    losses[55] = losses[54] - 3  # a plunge on the climb, still above the minimum at step 40
    result = curve(losses)
    suggestion = suggest(result)
    assert suggestion.minimum_tenth == pytest.approx(result.lrs[40] / 10)
    assert result.lrs[10] <= suggestion.steepest < result.lrs[40]


def test_a_flat_curve_suggests_nothing():
    noise = np.random.default_rng(0).normal(0, 0.01, 100)
    with pytest.raises(RangeTestError, match="did not fall"):
        suggest(curve(list(1.39 + noise)))


def test_an_early_divergence_suggests_nothing():
    losses = [1.0, 1.0, 0.9, 1.5, 3.0, 5.0, math.inf]
    with pytest.raises(RangeTestError, match="diverged after 7 steps.*lower --start-lr"):
        suggest(curve(losses, planned=100))


def test_sweep_flags_are_checked():
    assert RangeTestConfig().model_dump() == {"start_lr": 1e-7, "end_lr": 10.0, "steps": 100}
    with pytest.raises(ValidationError, match="--end-lr must be above --start-lr"):
        RangeTestConfig(start_lr=1e-3, end_lr=1e-4)
    with pytest.raises(ValidationError, match="greater than or equal to 20"):
        RangeTestConfig(steps=10)
