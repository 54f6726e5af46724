"""BentoML's real batching dispatcher, driven by a simulated model: a burst, then lone requests.

The same scenario runs with BentoML's own optimizer and with ``IdleWaitOptimizer``,
side by side, so the test shows the difference it exists for.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import pytest
from bentoml._internal.marshal import dispatcher

from service import batching

# BentoML's own optimizer, even where importing the service has already run install()
BENTOML_OPTIMIZER = batching.IdleWaitOptimizer.__base__
PER_IMAGE_S = 0.01  # the simulated model: 5 ms a batch plus 10 ms an image
BURST_CLIENTS = 32


async def _scenario(optimizer: type[dispatcher.Optimizer]) -> dict[str, float]:
    original = dispatcher.Optimizer
    dispatcher.Optimizer = optimizer
    try:
        cork = dispatcher.CorkDispatcher(
            max_latency_in_ms=10_000,
            max_batch_size=BURST_CLIENTS // 2,
            fallback=lambda: None,
            get_batch_size=lambda _: 1,
        )
    finally:
        dispatcher.Optimizer = original
    batch_sizes: list[int] = []

    async def model(images):
        batch_sizes.append(len(images))
        await asyncio.sleep(0.005 + PER_IMAGE_S * len(images))
        return [image * 2 for image in images]

    classify = cork(model)
    for image in range(10):  # BentoML trains its estimate on the first requests, one by one
        assert await classify(image) == 2 * image

    async def client(until: float) -> None:
        while time.perf_counter() < until:
            assert await classify(1) == 2

    burst_starts = len(batch_sizes)
    until = time.perf_counter() + 1.5
    await asyncio.gather(*(client(until) for _ in range(BURST_CLIENTS)))
    burst = batch_sizes[burst_starts:]
    cork.optimizer.trigger_refresh()  # what BentoML does every few seconds

    lone = []
    for image in range(5):
        started = time.perf_counter()
        assert await classify(image) == 2 * image
        lone.append(time.perf_counter() - started)
    cork.shutdown()
    return {
        "burst_mean_batch": sum(burst) / len(burst),
        "estimated_wait": cork.optimizer.wait,
        "lone_latency": statistics.median(lone),
    }


@pytest.mark.timeout(60)
def test_lone_requests_after_a_burst_are_not_held():
    upstream = asyncio.run(_scenario(BENTOML_OPTIMIZER))
    ours = asyncio.run(_scenario(batching.IdleWaitOptimizer))

    # BentoML's estimate counts queueing behind running batches, and holds lone requests
    assert upstream["estimated_wait"] > 0.05
    assert upstream["lone_latency"] > 0.05
    # ours counts only holds while the model was free: a lone request goes at once
    assert ours["estimated_wait"] < 0.01
    assert ours["lone_latency"] < 0.5 * upstream["lone_latency"]
    # and the burst still batched: requests queued behind a running batch go together
    assert ours["burst_mean_batch"] >= 8


def test_install_makes_new_dispatchers_use_it(monkeypatch):
    monkeypatch.setattr(dispatcher, "Optimizer", BENTOML_OPTIMIZER)
    batching.install()
    cork = dispatcher.CorkDispatcher(
        max_latency_in_ms=1000, max_batch_size=4, fallback=lambda: None
    )
    assert isinstance(cork.optimizer, batching.IdleWaitOptimizer)


@pytest.mark.timeout(60)
def test_the_dispatcher_waits_for_a_running_batch_instead_of_polling(monkeypatch):
    batching.install()

    async def scenario() -> tuple[list[int], int]:
        cork = dispatcher.CorkDispatcher(
            max_latency_in_ms=10_000,
            max_batch_size=8,
            fallback=lambda: None,
            get_batch_size=lambda _: 1,
        )
        assert isinstance(cork._sema, batching.SignallingSema)
        checks = 0
        is_locked = cork._sema.is_locked

        def counted() -> bool:
            nonlocal checks
            checks += 1
            return is_locked()

        monkeypatch.setattr(cork._sema, "is_locked", counted)
        sizes: list[int] = []

        async def model(images):
            sizes.append(len(images))
            await asyncio.sleep(0.1)  # each batch holds the model for 100 ms
            return [image + 1 for image in images]

        classify = cork(model)
        for image in range(10):  # BentoML's one-by-one training of its estimate
            assert await classify(image) == image + 1
        checks = 0
        answers = await asyncio.gather(*(classify(image) for image in range(32)))
        assert answers == [image + 1 for image in range(32)]
        cork.shutdown()
        return sizes[10:], checks

    sizes, checks = asyncio.run(scenario())
    assert sum(sizes) == 32 and max(sizes) == 8  # the queued requests still went in full batches
    # polling every millisecond would check the semaphore about 100 times per batch
    assert checks < 10 * len(sizes), (checks, sizes)
