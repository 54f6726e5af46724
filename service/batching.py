"""BentoML's adaptive batching, without holding lone requests after a burst.

BentoML's dispatcher (``CorkDispatcher``) holds queued requests back for a bigger
batch while the model is free as long as they have waited less than
``Optimizer.wait``: the mean, over the last 50 batches, of how long each batch's
first request waited before the batch started. That mean counts the time a
request spent queued behind a batch that was still running. Under load that is
about a batch's duration, so when the load drops, each lone request is held
about as long with the model idle, and its hold is recorded as the next wait:
the estimate decays only slowly (measured on CPU: 500 ms per lone request after a
burst, for 45 ms of work).

``IdleWaitOptimizer`` records only the part of a wait after the model became
free, which is the hold the dispatcher chose. So a batch starts as soon as the
model is free, with the requests that queued while it was busy (up to
``max_batch_size``): under load batches still fill, and a lone request is never
held.

While a batch runs, BentoML's dispatcher polls: every millisecond it wakes,
takes its condition's lock, sees the model still busy and sleeps again (a
second of batches on one CPU core costs about a thousand wake-ups of the event
loop, on the core the model needs). ``SignallingSema`` is its one-batch-at-a-time
semaphore, which also sets an event when a batch ends, and the dispatcher's
sleeps while it is held wait for that event instead: the dispatch rule is
BentoML's own, decided as the batch ends rather than up to a millisecond later.
A request whose ``max_latency_ms`` passes while a batch runs is answered 503 when
that batch ends, not at the millisecond.

``install`` swaps both in; it must run before BentoML builds the service's app,
which it does by importing ``service.classifier`` first. These are BentoML's
private internals (``bentoml._internal.marshal.dispatcher``), kept to this module;
``tests/unit/test_service_batching.py`` drives the real dispatcher through them.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

from bentoml._internal.marshal import dispatcher


class IdleWaitOptimizer(dispatcher.Optimizer):
    """BentoML's batch-latency estimator, with queueing behind a running batch left out."""

    def __init__(self, max_latency: float):
        super().__init__(max_latency)
        self.model_free_since = 0.0

    def log_outbound(self, n: int, wait: float, duration: float) -> None:
        # BentoML calls this as a batch finishes (batches run one at a time), with the
        # first request's wait from its arrival to the batch's start.
        finished = time.time()
        started = finished - duration
        arrived = started - wait
        idle_wait = max(0.0, started - max(arrived, self.model_free_since))
        self.model_free_since = finished
        super().log_outbound(n, idle_wait, duration)


class SignallingSema(dispatcher.NonBlockSema):
    """BentoML's non-blocking semaphore (one batch at a time) that signals its release."""

    def __init__(self, count: int):
        super().__init__(count)
        self.released = asyncio.Event()

    def acquire(self) -> bool:
        acquired = super().acquire()
        if self.is_locked():
            self.released.clear()
        return acquired

    def release(self) -> None:
        super().release()
        self.released.set()


# the dispatcher whose controller task is running (each controller is a task of its own)
_controlling: contextvars.ContextVar[Any] = contextvars.ContextVar("visiontune_dispatcher")
_upstream_controller = dispatcher.CorkDispatcher.controller


async def _controller(self) -> None:
    _controlling.set(self)
    await _upstream_controller(self)


class _DispatcherAsyncio:
    """The ``asyncio`` the dispatcher module sees: ``sleep`` in a controller whose batch is
    running waits for the batch to end; everything else is asyncio itself."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def sleep(delay: float, result: Any = None) -> Any:
        cork = _controlling.get(None)
        sema = getattr(cork, "_sema", None)
        if isinstance(sema, SignallingSema) and sema.is_locked():
            await sema.released.wait()
            return result
        return await asyncio.sleep(delay, result)


def install() -> None:
    """Make every dispatcher BentoML creates from now on use ``IdleWaitOptimizer`` and wait
    for a running batch to end instead of polling."""
    dispatcher.Optimizer = IdleWaitOptimizer
    dispatcher.NonBlockSema = SignallingSema
    dispatcher.CorkDispatcher.controller = _controller
    dispatcher.asyncio = _DispatcherAsyncio()
