"""Request bodies as they arrive: too large a body is refused before anything reads it,
and a client that leaves mid-upload is answered (and counted) 499, never taken for a
complete request.

``BodyLimit`` is the ASGI middleware; ``Upload`` follows one request's body.
"""

from __future__ import annotations

import logging

from service import metrics
from service.errors import send_error

logger = logging.getLogger("bentoml.visiontune")


class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` gets a 413 before anything parses it,
    and a client that leaves mid-upload is a 499 logged in one INFO line.

    A body without Content-Length (chunked) is buffered up to the limit; a rejected
    body is drained (up to four times the limit) so the client reads the answer
    instead of a reset connection. A disconnect before the last chunk never passes
    for the end of the body: the request is dropped, and whatever the app answers
    (an error, as Starlette raises ``ClientDisconnect``) goes out as status 499, so
    the access log and BentoML's request metrics count the client's leaving, not a
    server error.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        upload = Upload(receive)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) <= self.max_bytes:
            await self.app(scope, upload.receive, upload.answer(send))
        elif not declared.isdigit() and await upload.read(self.max_bytes):
            await self.app(scope, upload.replay(), upload.answer(send))
        else:
            await upload.drain(4 * self.max_bytes)
            if not upload.abandoned:
                await self._too_large(send)
        if upload.abandoned:
            await upload.answer(send)({"type": "http.response.start", "status": 499})
            logger.info(
                "%s %s: the client disconnected after sending %d bytes of its body (499)",
                scope["method"],
                scope["path"],
                upload.received,
            )

    async def _too_large(self, send) -> None:
        metrics.count_rejected("body_too_large")
        message = f"request body exceeds {self.max_bytes} bytes"
        await send_error(send, 413, "body_too_large", message, [(b"connection", b"close")])


class Upload:
    """A request body as it arrives: how much came, whether it was complete, or whether
    the client disconnected first (``abandoned``)."""

    def __init__(self, receive):
        self._receive = receive
        self.chunks: list[bytes] = []
        self.received = 0
        self.complete = False
        self.abandoned = False
        self.answered = False

    async def receive(self):
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.complete = not message.get("more_body", False)
        elif message["type"] == "http.disconnect" and not self.complete:
            self.abandoned = True
        return message

    async def read(self, max_bytes: int) -> bool:
        """Buffer the body until it ends, passes ``max_bytes`` or is abandoned; whether
        all of it arrived within ``max_bytes``."""
        while not (self.complete or self.abandoned) and self.received <= max_bytes:
            message = await self.receive()
            self.chunks.append(message.get("body", b""))
        return self.complete and self.received <= max_bytes

    async def drain(self, limit: int) -> None:
        while not (self.complete or self.abandoned) and self.received < limit:
            await self.receive()

    def replay(self):
        """The ``receive`` of a request whose body was already read."""
        body, sent = b"".join(self.chunks), False

        async def replay():
            nonlocal sent
            if sent:
                return await self.receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay

    def answer(self, send):
        """``send``, but once the client has left only one response start, with status 499."""

        async def answer(message):
            if not self.abandoned:
                self.answered = self.answered or message["type"] == "http.response.start"
                return await send(message)
            if message["type"] == "http.response.start" and not self.answered:
                self.answered = True
                await send({"type": "http.response.start", "status": 499, "headers": []})
                await send({"type": "http.response.body", "body": b""})

        return answer
