"""A model error fails only its batch, with an answer that says so.

``run_batch`` runs the predictor on one batch. A CUDA out-of-memory error frees
the cache and runs the batch again once, as two halves; any other error (or a
second out-of-memory) becomes ``BatchFailed``, counted in
``visiontune_batch_failures_total{reason}``. BentoML's dispatcher hands the
exception to every request of that batch and nothing else: the next batch runs
as usual.

BentoML answers an API's unexpected exception with a 500 whose body only says
"please check the server log", and reports the exception in the request's own
context solely by logging it (``log_exception``). So ``BatchFailureAnswer``
(ASGI middleware) gives each inference request a ``_Outcome`` in a context
variable, ``BatchFailureRecords`` (a filter on BentoML's exception logger) notes a
``BatchFailed`` there as it is logged, and the middleware then answers the 500
with a JSON body naming the failure.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Callable

import numpy as np
import torch

from service import metrics
from service.logs import BENTOML_EXCEPTION_LOGGER
from service.routing import UnknownModel, answer_unknown

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


_OURS = (b"content-length", b"content-type")


class _Outcome:
    failure: BatchFailed | UnknownModel | None = None


_outcome: contextvars.ContextVar[_Outcome | None] = contextvars.ContextVar(
    "visiontune_outcome", default=None
)


def note(failure: UnknownModel) -> None:
    """Note a failure of the current request for ``BatchFailureAnswer`` to answer."""
    outcome = _outcome.get()
    if outcome is not None:
        outcome.failure = failure


class BatchFailureRecords(logging.Filter):
    """Notes the ``BatchFailed`` BentoML logs for the current request."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        outcome = _outcome.get()
        if isinstance(error, BatchFailed) and outcome is not None:
            outcome.failure = error
        return True


class BatchFailureAnswer:
    """ASGI middleware: a request whose batch failed gets a 500 naming the failure."""

    def __init__(self, app):
        self.app = app
        bentoml_logger = logging.getLogger(BENTOML_EXCEPTION_LOGGER)
        if not any(isinstance(f, BatchFailureRecords) for f in bentoml_logger.filters):
            bentoml_logger.addFilter(BatchFailureRecords())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        outcome = _Outcome()
        token = _outcome.set(outcome)
        replaced = False

        async def answer(message):
            nonlocal replaced
            failure = outcome.failure
            if message["type"] == "http.response.start" and isinstance(failure, UnknownModel):
                replaced = True
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _OURS]
                return await answer_unknown(send, failure, kept)
            if message["type"] == "http.response.start" and failure and message["status"] == 500:
                replaced = True
                return await _send_failure(send, message, failure)
            if not (replaced and message["type"] == "http.response.body"):
                await send(message)

        try:
            await self.app(scope, receive, answer)
        finally:
            _outcome.reset(token)


async def _send_failure(send, start: dict, failure: BatchFailed) -> None:
    detail = [{"type": failure.reason, "loc": [], "msg": failure.message}]
    payload = json.dumps({"error": failure.message, "detail": detail}).encode()
    keep = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
    headers = [*keep, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
