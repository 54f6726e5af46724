"""Bounded work per worker: images decoded at once, and requests in flight.

Decoding is the step whose memory grows with the input (a full-size image before
it is resized), so each worker decodes at most ``settings.decode_slots()``
requests at a time, on a thread pool of its own (``in_decode_thread``): waiting
decodes start in arrival order, and they do not take the thread tokens that the
model's forward pass needs (BentoML runs a batch through anyio's default limiter).

Requests in flight are bounded by BentoML's own ``traffic.max_concurrency``
(``settings.traffic``). BentoML 1.4 answers a request past it with a bare 429
("Too many requests") from ``MaxConcurrencyMiddleware``. A full server is the
server's condition, not the client's: ``install`` swaps in ``ServerFull``, which
answers 503 with ``Retry-After`` and a JSON body naming the limit, so clients and
load balancers retry elsewhere or later. The swap touches BentoML internals
(``bentoml._internal.server.http.traffic``), hence this module and the test that
guards it (tests/service/test_load.py). ``RetryAfter`` adds the same header to
the 503 BentoML's batching dispatcher answers when its queue cannot meet
``max_latency_ms``. ``Deadline`` replaces BentoML's request timeout in the same
way, to stop it keeping every answered request alive until its timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from bentoml._internal.server.http import traffic

from service.errors import send_error
from service.settings import settings

RETRY_AFTER_S = 1
RETRY_AFTER = (b"retry-after", str(RETRY_AFTER_S).encode())
T = TypeVar("T")


@functools.cache
def _decode_pool() -> ThreadPoolExecutor:
    """The worker's decode threads (created on first use, inside the worker)."""
    return ThreadPoolExecutor(settings.decode_slots(), thread_name_prefix="visiontune-decode")


async def in_decode_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` on one of the worker's decode threads, in the caller's context."""
    context = contextvars.copy_context()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_decode_pool(), context.run, function, *args)


class ServerFull(traffic.MaxConcurrencyMiddleware):
    """BentoML's in-flight limit (probes and /metrics bypass it), answered 503 + Retry-After."""

    def __init__(self, app, max_concurrency: int, skip_paths: list[str] | None = None) -> None:
        super().__init__(app, max_concurrency, skip_paths)
        self.limit = max_concurrency

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in self.skip_paths:
            return await self.app(scope, receive, send)
        if self._semaphore.locked():
            message = f"the server is at its limit of {self.limit} requests in flight; retry later"
            return await send_error(send, 503, "server_full", message, [RETRY_AFTER])
        async with self._semaphore:
            await self.app(scope, receive, send)


class Deadline(traffic.TimeoutMiddleware):
    """BentoML's request timeout (504 when no answer has started in time), without its leak.

    BentoML's ``TimeoutMiddleware`` arms a ``loop.call_later`` timer per request and never
    cancels it, so every request's context (its tracing span, its futures) stays alive for
    the whole timeout after it was answered: at 70 requests/s and the default 60 s, 4,000
    contexts and 50,000 objects, which each full garbage collection walks while the worker
    stands still. Here ``asyncio.timeout`` arms one timer in the request's own task and
    disarms it as soon as the answer starts or the request is done.
    """

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        deadline = asyncio.timeout(self.timeout)

        async def send_and_disarm(message) -> None:
            deadline.reschedule(None)  # an answer under way is never cut
            await send(message)

        try:
            async with deadline:
                return await self.app(scope, receive, send_and_disarm)
        except TimeoutError:
            if not deadline.expired():
                raise
        message = f"Not able to process the request in {self.timeout} seconds"
        await send_error(send, 504, "timeout", message)


class RetryAfter:
    """ASGI middleware: every 503 tells the client when to retry."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_retry_after(message):
            if message["type"] == "http.response.start" and message["status"] == 503:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"retry-after" for name, _ in headers):
                    headers.append(RETRY_AFTER)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_retry_after)


def install() -> None:
    """Make the apps BentoML builds from now on use ``ServerFull`` and ``Deadline``."""
    traffic.MaxConcurrencyMiddleware = ServerFull
    traffic.TimeoutMiddleware = Deadline
