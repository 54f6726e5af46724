"""`visiontune predict PATH... --url URL`: classify image files with a running service.

Folders are searched for images; files are packed into requests up to the
service's limits (``GET /model``), several requests at a time. Output is a table or JSON; exit 0 when every file was classified, 1 when
some failed, 2 when nothing ran. A service with auth on gets the bearer token of
``--token``, ``--token-file``, ``VISIONTUNE_API_TOKEN`` or ``VISIONTUNE_API_TOKEN_FILE``
(the variables the service itself reads).
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ThreadPoolExecutor

from service.settings import Settings
from visiontune.client import (
    DEFAULT_URL,
    TOKEN_ENV,
    TOKEN_FILE_ENV,
    ClientError,
    api_token,
    check_ready,
    classify,
    collect_images,
    connect,
    pack,
    request_limits,
)
from visiontune.errors import EXIT_PARTIAL

NAME = "predict"
HELP = "classify image files with a running service"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="image files, or folders searched recursively"
    )
    parser.add_argument(
        "--url",
        default=os.environ.get("VISIONTUNE_URL", DEFAULT_URL),
        help=f"the service (default: $VISIONTUNE_URL or {DEFAULT_URL})",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        help="labels per image (default: the service's, VISIONTUNE_TOP_K on the server, "
        f"{Settings.model_fields['top_k'].default} unless set there)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="most images per request (default: the service's batch size shared by the "
        "requests in flight; at most its per-request limit; both from /model)",
    )
    parser.add_argument("--concurrency", type=int, default=4, help="requests at a time (default 4)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds per request (default 60)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--token",
        help=f"bearer token of a service with auth on (default: ${TOKEN_ENV}; prefer "
        "--token-file: a flag's value shows in the process list)",
    )
    parser.add_argument(
        "--token-file",
        help=f"file holding the bearer token, e.g. a mounted Secret (default: ${TOKEN_FILE_ENV})",
    )


def run(args: argparse.Namespace) -> int:
    for name in ("top_k", "batch_size", "concurrency"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ClientError(f"--{name.replace('_', '-')} must be at least 1")
    token = api_token(args.token, args.token_file)
    files = collect_images(args.paths)
    with connect(args.url, token, args.timeout) as client:
        check_ready(client, args.url)
        limits = request_limits(client)
        per_request = args.batch_size or limits.files_per_request(args.concurrency)
        per_request = min(per_request, limits.max_images)
        batches = pack(files, per_request, limits.max_body_bytes)
        with ThreadPoolExecutor(args.concurrency) as pool:
            answers = [
                answer
                for batch in pool.map(lambda b: classify(client, b, args.top_k), batches)
                for answer in batch
            ]
    print(json.dumps(answers, indent=2) if args.json else table(answers))
    return EXIT_PARTIAL if any("error" in answer for answer in answers) else 0


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
