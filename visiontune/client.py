"""The service's HTTP contract from the client side: readiness, and classifying files.

It speaks HTTP only (``POST /classify``), so it needs nothing of the model. Files
are packed into requests within the service's limits (images per request, body
size: ``GET /model`` says them), and a batch the service refuses because of some
files is sent again without them, so one corrupt file costs only its own answer. A
request that lost its connection or was answered 503 is sent once more
(classifying is idempotent). ``connect`` makes a client that sends the bearer
token of a service with auth on (``api_token`` reads it the ways the service
does); a 401 stops the command with one line. ``visiontune predict`` is built on it.
"""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.settings import Settings
from visiontune.errors import CommandError

DEFAULT_URL = "http://127.0.0.1:3000"
# a connection lost before an answer (a worker or pod going away): safe to send again
RETRYABLE = (httpx.NetworkError, httpx.RemoteProtocolError)
RETRY_PAUSE_S = 0.5
MAX_RETRY_AFTER_S = 10.0
# a multipart part's headers and boundary, counted against the body limit with its file
PART_OVERHEAD_BYTES = 1024
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# the variables the service reads its token from (service.auth), read here the same way
TOKEN_ENV = Settings.model_fields["api_token"].alias
TOKEN_FILE_ENV = Settings.model_fields["api_token_file"].alias


class ClientError(CommandError):
    """A problem that stops the whole command (one line, no traceback)."""


def api_token(
    token: str | None = None,
    token_file: str | Path | None = None,
    env: Mapping[str, str] = os.environ,
) -> str | None:
    """The bearer token to send: ``token``, else ``token_file``'s content, else
    ``$VISIONTUNE_API_TOKEN``, else ``$VISIONTUNE_API_TOKEN_FILE``'s; None: send none."""
    if token is not None and token_file is not None:
        raise ClientError("give --token or --token-file, not both")
    if token is None and token_file is None:
        token, token_file = env.get(TOKEN_ENV) or None, env.get(TOKEN_FILE_ENV) or None
    if token is not None:
        return _nonempty(token.strip(), "--token / " + TOKEN_ENV)
    if token_file is None:
        return None
    try:
        text = Path(token_file).read_text()
    except OSError as err:
        raise ClientError(f"token file {token_file}: {err.strerror}") from None
    return _nonempty(text.strip(), f"token file {token_file}")


def _nonempty(token: str, where: str) -> str:
    if not token:
        raise ClientError(f"{where} is empty: it must hold the service's API token")
    return token


def connect(url: str, token: str | None = None, timeout: float = 60.0) -> httpx.Client:
    """An HTTP client for the service at ``url`` that sends ``Authorization: Bearer token``."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, timeout=timeout, headers=headers)


def check_authorized(response: httpx.Response) -> None:
    """A 401 stops the command: no file can be classified without the right token."""
    if response.status_code != 401:
        return
    sent = "authorization" in response.request.headers
    raise ClientError(
        f"the service at {response.request.url.copy_with(path='/')} refused "
        f"{'the token' if sent else 'the request: it needs a bearer token'} (HTTP 401); "
        f"give it with --token, --token-file, {TOKEN_ENV} or {TOKEN_FILE_ENV}"
    )


def wait_until_ready(
    url: str, timeout: float = 180, server=None, path: str = "/readyz", interval: float = 0.5
) -> None:
    """Poll ``url + path`` until it answers 200; fail early if the ``server`` process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise ClientError(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(interval)
    raise ClientError(f"{url}{path} was not ready within {timeout:.0f}s")


def collect_images(paths: list[str]) -> list[Path]:
    """Files as given, and the images under folders (sorted), without duplicates."""
    files: dict[Path, None] = {}
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
            files.update(dict.fromkeys(p for p in found if p.is_file()))
        elif path.is_file():
            files[path] = None
        else:
            raise ClientError(f"no such file or folder: {name}")
    if not files:
        raise ClientError(f"no images found in {' '.join(paths)}")
    return list(files)


def check_ready(client: httpx.Client, url: str) -> None:
    try:
        response = client.get("/readyz")
    except httpx.HTTPError as err:
        raise ClientError(f"cannot reach the service at {url} ({_reason(err)})") from None
    if response.status_code != 200:
        raise ClientError(f"the service at {url} is not ready (HTTP {response.status_code})")


@dataclass(frozen=True)
class RequestLimits:
    """How much one request may carry: the service's own defaults unless it says otherwise."""

    max_images: int = Settings.model_fields["max_images"].default
    max_body_bytes: int = Settings().max_body_bytes
    max_batch_size: int = Settings.model_fields["max_batch_size"].default

    def files_per_request(self, concurrency: int) -> int:
        """Files per request so that ``concurrency`` requests in flight fill one batch: the
        service's batching joins them into one forward pass, and no image queues behind
        passes of the same client (a long queue outlasts the service's wait limit: 503)."""
        return min(self.max_images, max(1, self.max_batch_size // concurrency))


def request_limits(client: httpx.Client) -> RequestLimits:
    """The limits in ``GET /model``'s ``serving`` section; the defaults where it has none."""
    serving = {}
    try:
        response = client.get("/model")
    except httpx.HTTPError:
        response = None
    if response is not None:
        check_authorized(response)
        try:
            serving = response.json().get("serving", {}) if response.status_code == 200 else {}
        except (ValueError, AttributeError):
            serving = {}
    defaults = RequestLimits()
    return RequestLimits(
        max_images=int(serving.get("max_images", defaults.max_images)),
        max_body_bytes=int(serving.get("max_body_bytes", defaults.max_body_bytes)),
        max_batch_size=int(serving.get("max_batch_size", defaults.max_batch_size)),
    )


def pack(files: list[Path], max_images: int, max_body_bytes: int) -> list[list[Path]]:
    """Consecutive requests of at most ``max_images`` files whose bodies stay within
    ``max_body_bytes``; a file too large for any request goes alone (the service says why)."""
    requests: list[list[Path]] = []
    current: list[Path] = []
    size = 0
    for path in files:
        part = _file_size(path) + PART_OVERHEAD_BYTES
        if current and (len(current) == max_images or size + part > max_body_bytes):
            requests.append(current)
            current, size = [], 0
        current.append(path)
        size += part
    if current:
        requests.append(current)
    return requests


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:  # classify reports it as unreadable
        return 0


def classify(client: httpx.Client, files: list[Path], top_k: int | None = None) -> list[dict]:
    """Answers for ``files`` in order; files the service refuses are dropped and retried without.
    ``top_k`` labels per image; None: the service's own default (``VISIONTUNE_TOP_K``)."""
    answers: dict[Path, dict] = {}
    pending = list(files)
    while pending:
        parts, unreadable = _read(pending)
        answers.update(unreadable)
        pending = [path for path in pending if path not in unreadable]
        if not pending:
            break
        response = _post(client, parts, top_k)
        check_authorized(response)
        if response.status_code == 200:
            for path, prediction in zip(pending, response.json(), strict=True):
                answers[path] = {"path": str(path), **prediction}
            break
        refused = _refused_files(response, pending)
        if not refused:  # the whole request failed, not some of its files
            message = _error_message(response)
            answers.update({path: {"path": str(path), "error": message} for path in pending})
            break
        answers.update(refused)
        pending = [path for path in pending if path not in refused]
    return [answers[path] for path in files]


def _post(client: httpx.Client, parts: list[tuple], top_k: int | None) -> httpx.Response:
    """``POST /classify``, sent once more after a lost connection or a 503.

    Classifying is idempotent, so a request whose connection broke (a restarting
    worker, a pod going away) or that a full server refused can safely be repeated;
    after a 503 the client waits the ``Retry-After`` the server asked for.
    """
    try:
        response = _send(client, parts, top_k, retryable=True)
    except RETRYABLE:
        time.sleep(RETRY_PAUSE_S)
    else:
        if response.status_code != 503:
            return response
        time.sleep(_retry_after(response))
    return _send(client, parts, top_k, retryable=False)


def _send(
    client: httpx.Client, parts: list[tuple], top_k: int | None, retryable: bool
) -> httpx.Response:
    data = {"top_k": str(top_k)} if top_k is not None else {}
    try:
        return client.post("/classify", files=parts, data=data)
    except httpx.HTTPError as err:
        if retryable and isinstance(err, RETRYABLE):
            raise
        raise ClientError(f"request to {client.base_url} failed ({_reason(err)})") from None


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("Retry-After", "")
    return min(float(value), MAX_RETRY_AFTER_S) if value.isdigit() else RETRY_PAUSE_S


def _read(paths: list[Path]) -> tuple[list[tuple], dict[Path, dict]]:
    parts, unreadable = [], {}
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as err:
            unreadable[path] = {"path": str(path), "error": f"cannot read: {err.strerror}"}
            continue
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        parts.append(("images", (path.name, data, content_type)))
    return parts, unreadable


def _refused_files(response: httpx.Response, pending: list[Path]) -> dict[Path, dict]:
    """The files a 400 names (``loc: ["images", i]``), with the service's message."""
    try:
        detail = response.json().get("detail", [])
    except (ValueError, AttributeError):
        return {}
    refused = {}
    for problem in detail:
        loc = problem.get("loc", [])
        if len(loc) == 2 and loc[0] == "images" and 0 <= loc[1] < len(pending):
            path = pending[loc[1]]
            refused[path] = {"path": str(path), "error": f"{problem['type']}: {problem['msg']}"}
    return refused


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        detail = body.get("detail") or []
        message = "; ".join(f"{d['type']}: {d['msg']}" for d in detail) or body.get("error")
    except (ValueError, AttributeError, KeyError, TypeError):
        message = response.text[:200]
    return f"HTTP {response.status_code}: {message}"


def _reason(err: httpx.HTTPError) -> str:
    return str(err) or type(err).__name__
