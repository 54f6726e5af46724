"""Optional bearer-token auth: ``VISIONTUNE_API_TOKEN`` or ``VISIONTUNE_API_TOKEN_FILE``.

``BearerAuth`` is an ASGI middleware around the whole application, so it covers the
inference APIs and the mounted ``/model`` app alike. Every path needs the token except
the probes, ``/metrics`` (Prometheus scrapes without credentials) and the API's
description (the OpenAPI schema and the page that shows it). Tokens are compared in
constant time; a missing or wrong token gets a 401 with ``WWW-Authenticate: Bearer``
(RFC 6750) and counts as ``visiontune_rejected_inputs_total{reason="unauthorized"}``.
"""

from __future__ import annotations

import hmac
import logging

from service import metrics
from service.errors import send_error
from service.settings import PREFIX, Settings

logger = logging.getLogger("bentoml.visiontune")

OPEN_PATHS = frozenset(
    {"/livez", "/readyz", "/healthz", "/metrics", "/", "/docs.json", "/schema.json"}
)
OPEN_PREFIXES = ("/static_content/",)


def configured_token(settings: Settings) -> str | None:
    """The token the server requires, or None (auth off).

    A token file that does not exist leaves auth off with a warning: the manifests
    mount the Secret as optional. An empty file is an error, named.
    """
    if settings.api_token is not None:
        return settings.api_token.get_secret_value().strip()
    path = settings.api_token_file
    if path is None:
        return None
    if not path.exists():
        logger.warning(
            "%sAPI_TOKEN_FILE=%s does not exist: the API is served without auth", PREFIX, path
        )
        return None
    token = path.read_text().strip()
    if not token:
        raise ValueError(f"{PREFIX}API_TOKEN_FILE={path} is empty: write the token in it")
    return token


class BearerAuth:
    """ASGI middleware: requests to protected paths must carry ``Authorization: Bearer TOKEN``."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.token = token.encode() if token else None

    async def __call__(self, scope, receive, send):
        if self.token is None or scope["type"] != "http" or is_open(scope["path"]):
            return await self.app(scope, receive, send)
        supplied = bearer_token(scope["headers"])
        if supplied is not None and hmac.compare_digest(supplied, self.token):
            return await self.app(scope, receive, send)
        metrics.count_rejected("unauthorized")
        await _unauthorized(send, "a wrong token" if supplied is not None else "no token")


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def bearer_token(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The token of an ``Authorization: Bearer ...`` header (the scheme is case-insensitive)."""
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
    return None


async def _unauthorized(send, what: str) -> None:
    message = f"this endpoint needs an Authorization: Bearer header with the API token; got {what}"
    challenge = b'Bearer realm="visiontune"'
    if what == "a wrong token":
        challenge += b', error="invalid_token"'
    headers = [
        (b"www-authenticate", challenge),
        (b"connection", b"close"),  # the body, if any, was not read
    ]
    await send_error(send, 401, "unauthorized", message, headers)
