"""``visiontune predict PATH... --url URL``: classify image files with a running service.

It speaks HTTP only (the service's ``POST /classify``), so it needs nothing of the
model. Folders are searched for images; files go in batches, several requests at
a time. A batch the service refuses because of some files is sent again without
them, so one corrupt file costs only its own answer. Output is a table or JSON.
"""

from __future__ import annotations

import argparse
import json
import mimetypes
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

DEFAULT_URL = "http://127.0.0.1:3000"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
EXIT_PARTIAL = 1
EXIT_ERROR = 2


class ClientError(Exception):
    """A problem that stops the whole command (one line, no traceback)."""


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files, or folders searched recursively"
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("VISIONTUNE_URL", DEFAULT_URL),
        help=f"the service (default: $VISIONTUNE_URL or {DEFAULT_URL})",
    )
    parser.add_argument("--top-k", type=int, default=3, help="labels per image (default 3)")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="images per request (default 16)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="requests at a time (default 4)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per request (default 60)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    """Classify, print, and exit 0 (all classified), 1 (some files failed) or 2 (nothing ran)."""
    try:
        for name in ("top_k", "batch_size", "concurrency"):
            if getattr(args, name) < 1:
                raise ClientError(f"--{name.replace('_', '-')} must be at least 1")
        files = collect_images(args.paths)
        with httpx.Client(base_url=args.url, timeout=args.timeout) as client:
            check_ready(client, args.url)
            batches = [
                files[i : i + args.batch_size] for i in range(0, len(files), args.batch_size)
            ]
            with ThreadPoolExecutor(args.concurrency) as pool:
                answers = [
                    answer
                    for batch in pool.map(lambda b: classify(client, b, args.top_k), batches)
                    for answer in batch
                ]
    except ClientError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    print(json.dumps(answers, indent=2) if args.json else table(answers))
    return EXIT_PARTIAL if any("error" in answer for answer in answers) else 0


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


def classify(client: httpx.Client, files: list[Path], top_k: int) -> list[dict]:
    """Answers for ``files`` in order; files the service refuses are dropped and retried without."""
    answers: dict[Path, dict] = {}
    pending = list(files)
    while pending:
        parts, unreadable = _read(pending)
        answers.update(unreadable)
        pending = [path for path in pending if path not in unreadable]
        if not pending:
            break
        try:
            response = client.post("/classify", files=parts, data={"top_k": str(top_k)})
        except httpx.HTTPError as err:
            raise ClientError(f"request to {client.base_url} failed ({_reason(err)})") from None
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


def table(answers: list[dict]) -> str:
    width = max(len(answer["path"]) for answer in answers)
    lines = [f"{'PATH':<{width}}  {'LABEL':<12} {'SCORE':>6}  TOP-K"]
    for answer in answers:
        if "error" in answer:
            lines.append(f"{answer['path']:<{width}}  error: {answer['error']}")
            continue
        top = ", ".join(f"{t['label']} {t['score']:.3f}" for t in answer["top_k"])
        lines.append(
            f"{answer['path']:<{width}}  {answer['label']:<12} {answer['score']:>6.3f}  {top}"
        )
    return "\n".join(lines)


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
