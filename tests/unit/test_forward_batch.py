"""service.forward_batch and Predictor.forward_batch: a batch runs in chunks of the size that
is fastest per image, measured at warm-up on a CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from contract.images import Preprocessing
from contract.predictor import Predictor
from service.forward_batch import candidate_sizes, choose_forward_batch, time_per_image

PREPROCESSING = Preprocessing(height=8, width=8, mean=(0.5,) * 3, std=(0.5,) * 3)


class Recorded(torch.nn.Module):
    """A linear model that notes the batch size of every forward pass, and moves its own clock
    by ``cost[size]`` seconds per image at a batch size (the measurement reads that clock)."""

    def __init__(self, cost: dict[int, float] | None = None):
        super().__init__()
        self.linear = torch.nn.Linear(3 * 8 * 8, 4)
        self.cost = cost or {}
        self.sizes: list[int] = []
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def forward(self, pixel_values):
        size = len(pixel_values)
        self.sizes.append(size)
        self.now += self.cost.get(size, 0.0) * size
        return type("Output", (), {"logits": self.linear(pixel_values.flatten(1))})


def predictor(model: Recorded, device: str = "cpu") -> Predictor:
    torch.manual_seed(0)
    result = Predictor(model.eval(), PREPROCESSING, temperature=1.5)
    result.device = torch.device(device)  # the GPU case is only read, never run
    return result


def pixels(count: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, size=(count, 8, 8, 3), dtype=np.uint8)


def test_chunked_passes_give_the_whole_batch_answer():
    model = Recorded()
    whole = predictor(model)(pixels(11))
    chunked_predictor = predictor(model)
    chunked_predictor.forward_batch = 4
    model.sizes.clear()
    chunked = chunked_predictor(pixels(11))
    assert model.sizes == [4, 4, 3]
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-7)


def test_a_batch_within_the_size_is_one_pass():
    model = Recorded()
    chunked = predictor(model)
    chunked.forward_batch = 8
    chunked(pixels(8))
    assert model.sizes == [8]


@pytest.mark.parametrize(
    ("limit", "sizes"), [(32, [1, 2, 4, 8, 16, 32]), (12, [1, 2, 4, 8, 12]), (2, [1, 2])]
)
def test_candidates_are_powers_of_two_then_the_limit(limit, sizes):
    assert candidate_sizes(limit) == sizes


def test_auto_on_a_cpu_takes_the_fastest_size_per_image():
    # per image: 4 ms alone, 1 ms in passes of 4, slower again past them
    model = Recorded({1: 0.004, 2: 0.002, 4: 0.001, 8: 0.0015, 16: 0.002})
    chosen = choose_forward_batch(predictor(model), "auto", 16, clock=model.clock)
    assert chosen.size == 4
    assert chosen.reason.startswith("auto: fastest per image at warm-up in passes of 4")
    assert "16: 2." in chosen.reason


def test_auto_keeps_the_whole_batch_when_it_is_fastest():
    model = Recorded({1: 0.004, 2: 0.003, 4: 0.002, 8: 0.001})
    assert choose_forward_batch(predictor(model), "auto", 8, clock=model.clock).size is None


def test_a_smaller_size_within_the_tolerance_of_the_best_is_preferred():
    model = Recorded({1: 0.003, 2: 0.002, 4: 0.00102, 8: 0.001})
    assert choose_forward_batch(predictor(model), "auto", 8, clock=model.clock).size == 4


def test_each_size_keeps_its_least_time_over_the_rounds():
    model = Recorded({1: 0.002, 2: 0.001})
    measured = time_per_image(predictor(model), [1, 2], clock=model.clock)
    assert measured == pytest.approx({1: 0.002, 2: 0.001})
    assert len(model.sizes) == 1 + 3 * 2  # the unmeasured first pass, then three rounds


def test_the_measurement_stops_before_a_round_would_pass_its_budget():
    model = Recorded({1: 1.0, 2: 1.0})  # a round takes 3 s
    time_per_image(predictor(model), [1, 2], budget_s=5.0, clock=model.clock)
    assert len(model.sizes) == 1 + 2  # the unmeasured first pass, then one round


def test_a_set_size_is_taken_as_is_up_to_the_batch_limit():
    model = Recorded()
    assert choose_forward_batch(predictor(model), 8, 32).size == 8
    assert choose_forward_batch(predictor(model), 64, 32).size == 32
    assert "VISIONTUNE_FORWARD_BATCH=8" in choose_forward_batch(predictor(model), 8, 32).reason
    assert model.sizes == []  # nothing measured


def test_auto_on_a_gpu_or_without_batching_runs_the_whole_batch():
    model = Recorded()
    on_gpu = choose_forward_batch(predictor(model, "cuda"), "auto", 32)
    assert on_gpu.size is None and "GPU" in on_gpu.reason
    assert choose_forward_batch(predictor(model), "auto", 1).size is None
    assert model.sizes == []
