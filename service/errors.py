"""The one shape of every error answer: ``{"error": SUMMARY, "detail": [PROBLEM, ...]}``.

Each problem is ``{"type": TYPE, "loc": [...], "msg": MESSAGE}``: ``type`` is a
snake_case name clients can branch on (the ``reason`` label of
``visiontune_rejected_inputs_total`` for a rejected input), ``loc`` where in the
request the problem is (``["images", 3]``; empty for the request as a whole),
``msg`` what a person reads. ``error`` is a one-line summary.

Every 4xx and 5xx the service answers is built here (``error_response`` for an
app, ``send_error`` for a raw ASGI middleware), except one: BentoML itself answers
the pydantic ``ValidationError`` that the input specs raise (``service.inputs``)
with a 400 of this same shape, ``{"error": "N validation error for request",
"detail": [...]}``. tests/service/test_errors.py checks every error type the docs
list against a real server.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from starlette.responses import JSONResponse

Problem = Mapping[str, Any]


def error_body(error: str, detail: str | Sequence[Problem]) -> dict:
    """The body of an error answer.

    ``error`` is the error's type; ``detail`` is a message (the answer's one problem,
    of that type, for the request as a whole) or the list of problems, each with its
    own ``type``, ``loc`` and ``msg`` (the summary then names how many and the first).
    """
    if isinstance(detail, str):
        return {"error": detail, "detail": [{"type": error, "loc": [], "msg": detail}]}
    problems = [{"type": p["type"], "loc": list(p.get("loc", ())), "msg": p["msg"]} for p in detail]
    if not problems:
        raise ValueError("an error answer names at least one problem")
    summary = problems[0]["msg"]
    if len(problems) > 1:
        summary = f"{len(problems)} problems ({error}), the first: {summary}"
    return {"error": summary, "detail": problems}


def error_response(
    status: int,
    error: str,
    detail: str | Sequence[Problem],
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A Starlette response carrying :func:`error_body`."""
    return JSONResponse(error_body(error, detail), status_code=status, headers=headers)


async def send_error(
    send,
    status: int,
    error: str,
    detail: str | Sequence[Problem],
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    """Answer with :func:`error_body` through an ASGI ``send`` (for raw middlewares); the
    content type and length are set here, ``headers`` adds the rest."""
    payload = json.dumps(error_body(error, detail)).encode()
    start = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": payload})
