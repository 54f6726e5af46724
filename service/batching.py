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
held. ``install`` swaps it in; it must run before BentoML builds the service's
app, which it does by importing ``service.classifier`` first.
"""

from __future__ import annotations

import time

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


def install() -> None:
    """Make every dispatcher BentoML creates from now on use ``IdleWaitOptimizer``."""
    dispatcher.Optimizer = IdleWaitOptimizer
