"""A model error fails only its batch, and every failed request gets an answer saying why.

``run_batch`` runs the predictor on one batch. A CUDA out-of-memory error frees
the cache and runs the batch again once, as two halves; any other error (or a
second out-of-memory) becomes ``BatchFailed``, counted in
``visiontune_batch_failures_total{reason}``. BentoML's dispatcher hands the
exception to every request of that batch and nothing else: the next batch runs
as usual.

BentoML answers an API's unexpected exception with a 500, and its dispatcher's
refusal of a request that cannot be batched within ``max_latency_ms`` with a 503,
both with a body that only says "please check the server log"; it reports the
exception in the request's own context solely by logging it (``log_exception``).
So ``FailureAnswer`` (ASGI middleware) gives each inference request an
``_Outcome`` in a context variable, ``FailureRecords`` (a filter on BentoML's
exception logger, installed with the service's other log filters) notes a
``BatchFailed`` or the dispatcher's ``ServiceUnavailable`` there as it is logged,
and the middleware then answers in the service's error shape (``service.errors``)
with what happened: ``model_error``/``out_of_memory`` (500) or ``overloaded`` (503).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable

import numpy as np
import torch
from bentoml.exceptions import ServiceUnavailable

from service import metrics
from service.errors import send_error
from service.routing import UnknownModel

logger = logging.getLogger("bentoml.visiontune")


class BatchFailed(RuntimeError):
    """The model failed on one batch; every request in it is answered 500."""

    def __init__(self, reason: str, size: int, cause: BaseException):
        self.reason = reason
        self.message = (
            f"the model failed on the batch of {size} image(s) this request was in "
            f"({type(cause).__name__}); other requests are not affected, retrying may succeed"
        )
        super().__init__(self.message)


def run_batch(predictor: Callable[[np.ndarray], np.ndarray], pixels: np.ndarray) -> np.ndarray:
    """``predictor(pixels)``; on CUDA out-of-memory, once more as two halves."""
    try:
        return predictor(pixels)
    except torch.cuda.OutOfMemoryError as err:
        if len(pixels) < 2:
            raise _failed("out_of_memory", len(pixels), err) from err
        logger.warning("CUDA out of memory on a batch of %d; retrying as two halves", len(pixels))
    except Exception as err:
        raise _failed("model_error", len(pixels), err) from err
    torch.cuda.empty_cache()
    half = len(pixels) // 2
    try:
        return np.concatenate([predictor(pixels[:half]), predictor(pixels[half:])])
    except torch.cuda.OutOfMemoryError as err:
        raise _failed("out_of_memory", len(pixels), err) from err
    except Exception as err:
        raise _failed("model_error", len(pixels), err) from err


def _failed(reason: str, size: int, cause: BaseException) -> BatchFailed:
    metrics.count_batch_failure(reason)
    return BatchFailed(reason, size, cause)


class _Outcome:
    failure: BaseException | None = None


_outcome: contextvars.ContextVar[_Outcome | None] = contextvars.ContextVar(
    "visiontune_outcome", default=None
)


def note(failure: UnknownModel) -> None:
    """Note a failure of the current request that BentoML answers without saying what it was
    (a model the server doesn't hold, found in the input spec), for ``FailureAnswer``."""
    outcome = _outcome.get()
    if outcome is not None:
        outcome.failure = failure


class FailureRecords(logging.Filter):
    """Notes the ``BatchFailed`` or ``ServiceUnavailable`` BentoML logs for the current request."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        outcome = _outcome.get()
        if isinstance(error, (BatchFailed, ServiceUnavailable)) and outcome is not None:
            outcome.failure = error
        return True


class FailureAnswer:
    """ASGI middleware: a request whose batch failed gets a 500 naming the failure; one the
    batching dispatcher refused (its queue could not meet ``max_latency_ms``) a 503 saying so.
    """

    def __init__(self, app, max_latency_ms: int):
        self.app = app
        self.overloaded = (
            f"the server could not batch this request within its latency limit of "
            f"{max_latency_ms} ms (VISIONTUNE_MAX_LATENCY_MS): it is overloaded; retry later"
        )

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        outcome = _Outcome()
        token = _outcome.set(outcome)
        replaced = False

        async def answer(message):
            nonlocal replaced
            if message["type"] == "http.response.start" and self._explained(message, outcome):
                replaced = True
                return await self._send_explained(send, message, outcome.failure)
            if not (replaced and message["type"] == "http.response.body"):
                await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            _outcome.reset(token)

    @staticmethod
    def _explained(start: dict, outcome: _Outcome) -> bool:
        failure, status = outcome.failure, start["status"]
        return (
            (isinstance(failure, BatchFailed) and status == 500)
            or (isinstance(failure, ServiceUnavailable) and status == 503)
            or (isinstance(failure, UnknownModel) and status == 404)
        )

    async def _send_explained(self, send, start: dict, failure: BaseException) -> None:
        """The failure in the error shape, keeping BentoML's other headers (its request id)."""
        replaced = (b"content-length", b"content-type")
        kept = [(k, v) for k, v in start.get("headers", []) if k.lower() not in replaced]
        if isinstance(failure, UnknownModel):
            await send_error(send, 404, "unknown_model", failure.problems, kept)
        elif isinstance(failure, BatchFailed):
            await send_error(send, 500, failure.reason, failure.message, kept)
        else:
            await send_error(send, 503, "overloaded", self.overloaded, kept)
