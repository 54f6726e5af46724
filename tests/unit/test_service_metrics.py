from __future__ import annotations

import pytest

from service.metrics import LabelMix


def test_label_mix_waits_for_a_full_window():
    mix = LabelMix([0.5, 0.5], window=3)
    assert mix.add(0) is None
    assert mix.add(1) is None
    assert mix.add(0) == pytest.approx(0.5 * (abs(2 / 3 - 0.5) + abs(1 / 3 - 0.5)))


def test_label_mix_slides_and_spans_zero_to_one():
    mix = LabelMix([0.25, 0.25, 0.5], window=4)
    for label in (0, 0, 0, 0):
        distance = mix.add(label)
    assert distance == pytest.approx(0.75)
    for label in (0, 1, 2, 2):
        distance = mix.add(label)
    assert distance == pytest.approx(0.0)
    assert mix.counts == [1, 1, 2]
