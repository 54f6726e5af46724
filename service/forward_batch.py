"""How many images one forward pass takes: on a CPU, the size that is fastest per image here.

BentoML's dispatcher gathers up to ``VISIONTUNE_MAX_BATCH_SIZE`` images, but a
CPU is often fastest per image at a smaller batch: past a few images a ViT's
activations no longer fit its caches (DeiT-tiny at 224 px on the benchmark's
CPU: 53 images/s in batches of 8, 47 in batches of 32). With
``VISIONTUNE_FORWARD_BATCH=auto`` the service times forward passes of 1, 2, 4...
images up to the batch limit at warm-up, in rotating rounds within a time budget,
and runs every larger batch in chunks of the fastest size (the smallest within
:data:`TOLERANCE` of the best, for the shorter wait). A GPU takes the whole batch.
The choice and its figures are one log line and part of ``GET /model``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from contract.predictor import Predictor

TOLERANCE = 0.03  # a smaller size this close to the fastest is taken instead
BUDGET_S = 10.0  # warm-up seconds the measurement may take at most (after one round)
ROUNDS = 3


@dataclass(frozen=True)
class ForwardBatch:
    """Most images per forward pass (None: the whole batch) and why."""

    size: int | None
    reason: str


def candidate_sizes(max_batch_size: int) -> list[int]:
    """Powers of two below ``max_batch_size``, then ``max_batch_size`` itself."""
    sizes = [1 << i for i in range(max_batch_size.bit_length()) if 1 << i < max_batch_size]
    return [*sizes, max_batch_size]


def choose_forward_batch(
    predictor: Predictor,
    setting: int | str,
    max_batch_size: int,
    clock: Callable[[], float] = time.perf_counter,
) -> ForwardBatch:
    """What ``VISIONTUNE_FORWARD_BATCH`` (``setting``) means for this predictor and machine."""
    if setting != "auto":
        size = min(int(setting), max_batch_size)
        return ForwardBatch(size, f"VISIONTUNE_FORWARD_BATCH={setting}")
    if predictor.device.type != "cpu":
        return ForwardBatch(None, "auto: a GPU runs the whole batch in one pass")
    if max_batch_size == 1:
        return ForwardBatch(None, "auto: batching is off")
    seconds = time_per_image(predictor, candidate_sizes(max_batch_size), clock=clock)
    size = fastest_size(seconds)
    return ForwardBatch(None if size == max_batch_size else size, describe(size, seconds))


def fastest_size(seconds: dict[int, float]) -> int:
    """The smallest size within :data:`TOLERANCE` of the fastest per image (the shorter wait)."""
    fastest = min(seconds.values())
    return min(s for s, t in seconds.items() if t <= fastest * (1 + TOLERANCE))


def describe(size: int, seconds: dict[int, float]) -> str:
    timings = ", ".join(f"{s}: {1000 * t:.1f}" for s, t in seconds.items())
    return (
        f"auto: fastest per image at warm-up in passes of {size} "
        f"(ms per image by batch size: {timings})"
    )


def time_per_image(
    predictor: Predictor,
    sizes: list[int],
    budget_s: float = BUDGET_S,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, float]:
    """The least seconds per image of a forward pass at each size, over rotating rounds.

    The least, not the mean: on a shared machine the undisturbed pass is the one that
    measures the model. After the first round, rounds stop when the budget is spent.
    """
    return time_predictors([predictor], sizes, budget_s, clock)[0]


def time_predictors(
    predictors: list[Predictor],
    sizes: list[int],
    budget_s: float = BUDGET_S,
    clock: Callable[[], float] = time.perf_counter,
) -> list[dict[int, float]]:
    """:func:`time_per_image` for several predictors of the same model side by side: each
    round times every predictor at every size, both in a rotating order, so that other work
    on the machine slows them alike."""
    first = predictors[0].preprocessing
    pixels = np.random.default_rng(0).integers(
        0, 256, size=(max(sizes), first.height, first.width, 3), dtype=np.uint8
    )
    for predictor in predictors:
        predictor(pixels[:1])  # the first pass allocates; it is not measured
    best = [dict.fromkeys(sizes, float("inf")) for _ in predictors]
    order = list(range(len(predictors)))
    started = clock()
    for round_index in range(ROUNDS):
        spent = clock() - started
        if round_index and spent * (round_index + 1) / round_index > budget_s:
            break  # another round, as long as the ones before, would pass the budget
        turn = order[round_index % len(order) :] + order[: round_index % len(order)]
        shift = round_index % len(sizes)
        for index in turn:
            for size in sizes[shift:] + sizes[:shift]:
                begun = clock()
                predictors[index](pixels[:size])
                best[index][size] = min(best[index][size], (clock() - begun) / size)
    return best
