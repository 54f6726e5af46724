"""A rejected request is logged in one short INFO line, not as an ERROR with a traceback.

BentoML logs every exception an API raises through ``log_exception``: at ERROR,
with the traceback. A rejected input (``service.inputs`` raises a pydantic
``ValidationError``, which BentoML answers with a 400) is the client's mistake and
is already counted in ``visiontune_rejected_inputs_total``; logged as errors, a
stream of bad requests would bury the real ones. A client that disconnects
mid-upload makes Starlette raise ``ClientDisconnect``: ``service.uploads.BodyLimit``
logs that as a 499 line already, so BentoML's record of it is dropped. Every other
exception keeps BentoML's treatment.
"""

from __future__ import annotations

import logging

from bentoml.exceptions import NotFound
from pydantic import ValidationError
from starlette.requests import ClientDisconnect

BENTOML_EXCEPTION_LOGGER = "bentoml._internal.server.http_app"
MAX_LINE = 600  # characters of a rejection's line; the answer names the problems in full


class RejectedInputRecords(logging.Filter):
    """Rewrites BentoML's record of a ``ValidationError`` as one INFO line naming the problems."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ClientDisconnect):
            return False
        if isinstance(error, NotFound):  # a model the server doesn't hold: the client's mistake
            record.msg, record.args = f"{record.getMessage()} answered 404: {error}", None
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.exc_info = record.exc_text = None
            return True
        if isinstance(error, ValidationError):
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['type']} ({e['msg']})"
                for e in error.errors(include_input=False)
            )
            line = f"{record.getMessage()} answered 400: {problems}"
            record.msg = line if len(line) <= MAX_LINE else line[: MAX_LINE - 3] + "..."
            record.args = None
            record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
            record.exc_info = record.exc_text = None
        return True


def filter_exceptions(*filters: logging.Filter) -> None:
    """Attach ``filters`` to the logger BentoML reports API exceptions with (each kind once)."""
    logger = logging.getLogger(BENTOML_EXCEPTION_LOGGER)
    for new in filters:
        if not any(type(f) is type(new) for f in logger.filters):
            logger.addFilter(new)


class InferenceIdRecords(logging.Filter):
    """Adds the request's inference id to BentoML's access log line (``service.routing``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from service.routing import current

        request = current()
        if request is not None and isinstance(record.args, tuple) and len(record.args) == 4:
            address, asked, answered, latency = record.args
            record.args = (
                address,
                asked,
                f"{answered},inference_id={request.inference_id}",
                latency,
            )
        return True


def log_inference_ids() -> None:
    """Attach ``InferenceIdRecords`` to BentoML's access logger (once)."""
    logger = logging.getLogger("bentoml.access")
    if not any(isinstance(f, InferenceIdRecords) for f in logger.filters):
        logger.addFilter(InferenceIdRecords())
