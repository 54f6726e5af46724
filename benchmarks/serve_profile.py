"""Where the service's CPU time per image goes, by component: py-spy samples of a loaded server.

The benchmark model of ``serve_throughput`` (DeiT-tiny size, 224 px) is served by
``bentoml serve service:ImageClassifier`` in two configurations, one after the other:
``bentoml_defaults`` (BentoML's access log and tracing middleware on, as they are
unless the service turns them off) and ``service`` (the service's own defaults); then
``benchmarks/floor_service.py``, the same decoding and model behind a bare batchable
BentoML API (what BentoML's request path costs without the service's code). Each
is loaded like ``serve_throughput`` does (one 640x480 JPEG per request, ``--concurrency``
in flight, pinned to the same CPUs) while ``py-spy record`` samples every process of
the server for ``--seconds`` (on-CPU samples only: threads waiting in a selector, on a
condition or in uvloop's loop are left out). The server's CPU time per image over
the same window (``/proc``) is split between components in proportion to their samples;
a sample counts for the component of its innermost frame that belongs to one of
:data:`COMPONENTS` (the middlewares wrap all that a request does, so only the frames
they run themselves count as theirs), else for the HTTP server and event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from benchmarks.common import parser, write_result
from benchmarks.serve_throughput import (
    CLIENT_CPUS,
    _tree_cpu_seconds,
    load,
    make_images,
    make_servers,
    store_model,
)

# (component, pattern on a frame "function (path:line)"); middlewares by their functions,
# since everything a request does runs inside them
COMPONENTS = [
    ("forward pass", r"torch/|transformers/|contract/predictor\.py"),
    ("decoding and resizing", r"contract/images\.py|PIL/"),
    ("access log", r"http/access\.py|/logging/"),
    ("tracing spans", r"opentelemetry/|_tracer_metrics\.py"),
    ("metrics middleware", r"http/instruments\.py|prometheus_client/|service/metrics\.py"),
    ("multipart parsing", r"multipart/|formparsers\.py|^(ImageFiles|Base64Images)\.|^_decode "),
    ("pydantic validation", r"pydantic/|pydantic_core"),
    ("JSON encoding", r"/json/|starlette/responses\.py|io_models\.py"),
    ("batching dispatcher", r"marshal/dispatcher\.py|service/batching\.py"),
    ("service: predict and encode", r"service/classifier\.py"),
    # BentoML's own handling of an API call (its endpoint, the API method's binding, which
    # builds a signature per call); last, so the parts above keep their frames
    ("BentoML API handling", r"_bentoml_impl/server/app\.py|_bentoml_sdk/|/inspect\.py"),
]
# the server's own work, whoever called it: a sample whose innermost frame is here counts
# for it, and so does one that no component claims
GENERIC = ("HTTP server and event loop", r"uvicorn/|h11/|httptools|asyncio/|starlette/|anyio/")
SOCKET_IO = re.compile(r"selector_events\.py|uvicorn/|h11/|httptools")
# innermost frames of a thread waiting, which py-spy can report as running: asyncio's
# selector, a condition, uvloop's loop (C code under Runner.run: waiting in epoll) and
# an idle thread of a concurrent.futures pool (in its queue's get)
IDLE = re.compile(
    r"\b(select \(selectors\.py|wait \(threading\.py|Runner\.run \(runners\.py"
    r"|_worker \(thread\.py)\)"
)
CONFIGURATIONS = {
    "bentoml_defaults": {"VISIONTUNE_ACCESS_LOG": "1", "VISIONTUNE_TRACING": "1"},
    "service": {},
}


def classify(stack: str) -> str:
    """The component of the innermost frame that belongs to one (the middlewares wrap
    everything a request does, so the outermost would count it all as theirs)."""
    frames = stack.split(";")
    if SOCKET_IO.search(frames[-1]):
        return GENERIC[0]
    for frame in reversed(frames):
        for name, pattern in COMPONENTS:
            if re.search(pattern, frame):
                return name
    return GENERIC[0] if re.search(GENERIC[1], stack) else "other"


def read_samples(raw: Path) -> tuple[Counter, dict[str, Counter]]:
    """py-spy's raw (collapsed) output, ``outer;...;inner count`` per line: samples by
    component, and by the innermost frame within each component."""
    counts: Counter = Counter()
    frames: dict[str, Counter] = {}
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit() and not IDLE.search(_short(stack.split(";")[-1])):
            component = classify(stack)
            counts[component] += int(count)
            frames.setdefault(component, Counter())[_short(stack.split(";")[-1])] += int(count)
    return counts, frames


def _short(frame: str) -> str:
    """``function (path/to/file.py:line)`` as ``function (file.py)``."""
    function, _, where = frame.partition(" (")
    return f"{function} ({Path(where.split(':')[0]).name})" if where else function


def profile(server, images: list[bytes], concurrency: int, seconds: float, work: Path) -> dict:
    """Load ``server`` while py-spy samples it; CPU ms per image by component."""
    asyncio.run(load(server.url, images, concurrency, 3.0, 2.0))  # warm
    raw = work / f"{server.name}.raw"
    spy = [str(Path(sys.executable).parent / "py-spy"), "record", "--pid", str(server.process.pid)]
    spy += ["--subprocesses", "--rate", "100", "--format", "raw"]
    spy += ["--duration", str(int(seconds)), "--output", str(raw)]
    recorder = subprocess.Popen(spy, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    cpu_before = _tree_cpu_seconds(server.process.pid)
    row = asyncio.run(load(server.url, images, concurrency, seconds - 2.0, 0.0))
    cpu = _tree_cpu_seconds(server.process.pid) - cpu_before
    _, errors = recorder.communicate(
        timeout=seconds + 600
    )  # py-spy is slow to finish on a busy host
    if recorder.returncode != 0:
        raise RuntimeError(f"py-spy failed: {errors.decode()[-2000:]}")
    counts, frames = read_samples(raw)
    total = sum(counts.values()) or 1
    served = max(1, row["requests"])
    cpu_ms = 1000 * cpu / served
    return {
        "images_per_second": row["images_per_second"],
        "cpu_ms_per_image": cpu_ms,
        "samples": total,
        "ms_per_image": {name: cpu_ms * n / total for name, n in counts.most_common()},
        "top_frames": {
            name: {frame: n / total for frame, n in frames[name].most_common(4)} for name in counts
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    started = time.perf_counter()
    os.sched_setaffinity(0, CLIENT_CPUS)
    images = make_images()
    result = {"concurrency": args.concurrency, "seconds": args.seconds, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as work:
        work = Path(work)
        tag, folder = store_model("deit-tiny", work)
        servers = make_servers(tag, folder, "cpu", "fp32", work)
        base = servers["service"]
        runs = {
            name: type(base)(name, base.command, {**base.env, **extra}, work / f"{name}.log")
            for name, extra in CONFIGURATIONS.items()
        }
        runs["bentoml_floor"] = servers["bentoml_floor"]
        for name, server in runs.items():
            server.start()
            try:
                server.wait_ready()
                result["runs"][name] = profile(server, images, args.concurrency, args.seconds, work)
            finally:
                server.stop()
            print(name, result["runs"][name], flush=True)
    write_result("serve_profile", result, args, started)
    return 0


def _arguments(argv):
    args = parser(__doc__)
    args.add_argument("--concurrency", type=int, default=32)
    args.add_argument("--seconds", type=float, default=20.0, help="sampled seconds per server")
    parsed = args.parse_args(argv)
    if parsed.quick:
        parsed.seconds = 8.0
    return parsed


if __name__ == "__main__":
    raise SystemExit(main())
