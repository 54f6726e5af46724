"""Live traffic: what capture and a shadow model cost in served images/s, and what each extra
model in one server costs in memory.

The model is serve_throughput's (a ViT of DeiT-tiny size at 224 px, random weights),
stored three times (three versions). Measured side by side in one run, servers
running at once, visited in a rotating order each round, the same client as
``benchmarks.serve_throughput`` (one 640x480 JPEG per ``POST /classify``,
``--concurrency`` in flight), figures the medians over rounds:

- ``off``: ``bentoml serve service:ImageClassifier``, capture and shadow off;
- ``capture``: ``VISIONTUNE_CAPTURE`` a local folder at the default rate (and the
  default low-confidence captures: with random weights nearly every answer is
  below 0.5, so this captures far more than the 5% a trained model would);
- ``shadow``: ``VISIONTUNE_SHADOW`` another version, at the default
  ``VISIONTUNE_SHADOW_RATE`` (auto: 0.1 of the images on a CPU);
- ``shadow_all``: the same with ``VISIONTUNE_SHADOW_RATE=1`` (the full price).

Memory: servers with 1, 2 and 3 of the versions (``VISIONTUNE_MODELS``), one at a
time, each ready and having answered a request per model; the resident memory of
its process tree. Per extra model: (three models - one model) / 2.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from benchmarks.common import machine_facts, median, parser, rotations, write_result
from benchmarks.serve_throughput import (
    CLIENT_CPUS,
    SERVER_CPUS,
    Server,
    load,
    make_images,
    store_model,
)
from visiontune.localserver import resident_bytes

CONCURRENCY = [8, 32]
TARGET_CAPTURE = 0.97  # served images/s with capture on over off


def server_command() -> list[str]:
    bentoml = str(Path(sys.executable).parent / "bentoml")
    return [bentoml, "serve", "service:ImageClassifier", "--host", "127.0.0.1", "--port", "{port}"]


def make_servers(tags: list[str], work: Path) -> dict[str, Server]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "VISIONTUNE_MODEL": tags[0],
        "VISIONTUNE_PRECISION": "fp32",
    }
    variants = {
        "off": {},
        "capture": {"VISIONTUNE_CAPTURE": str(work / "capture")},
        "shadow": {"VISIONTUNE_SHADOW": tags[1]},
        "shadow_all": {"VISIONTUNE_SHADOW": tags[1], "VISIONTUNE_SHADOW_RATE": "1"},
    }
    return {
        name: Server(name, server_command(), {**env, **extra}, work / f"{name}.log")
        for name, extra in variants.items()
    }


def measure_memory(tags: list[str], work: Path, images: list[bytes]) -> dict[str, float]:
    """Resident MiB of a server holding the first 1, 2 and 3 versions."""

    env = {**os.environ, "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("VISIONTUNE_MODEL", None)
    mib = {}
    for count in (1, 2, 3):
        names = [f"m{i}" for i in range(count)]
        models = ",".join(f"{n}={tag}" for n, tag in zip(names, tags, strict=False))
        server = Server(
            f"models-{count}",
            server_command(),
            {**env, "VISIONTUNE_MODELS": models},
            work / f"models-{count}.log",
        )
        server.start()
        try:
            server.wait_ready()
            for name in names:
                files = [("images", ("a.jpg", images[0], "image/jpeg"))]
                answer = httpx.post(f"{server.url}/models/{name}/classify", files=files, timeout=60)
                answer.raise_for_status()
            time.sleep(2)
            mib[str(count)] = resident_bytes(server.process.pid) / 2**20
            print(f"  {count} model(s): {mib[str(count)]:.0f} MiB", flush=True)
        finally:
            server.stop()
    return mib


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], threads=False)
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--seconds", type=float, default=15.0, help="measured seconds per row")
    args.add_argument("--warmup", type=float, default=3.0)
    args = args.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.warmup = 1, 3.0, 1.0
    started = time.perf_counter()
    facts = machine_facts()
    os.sched_setaffinity(0, CLIENT_CPUS)
    images = make_images()
    with tempfile.TemporaryDirectory(prefix="bench-live-") as work, ExitStack() as stack:
        work = Path(work)
        tags = [store_model("deit-tiny", work)[0] for _ in range(3)]
        memory = measure_memory(tags, work, images)
        servers = make_servers(tags, work)
        for server in servers.values():
            stack.callback(server.stop)
            server.start()
        for server in servers.values():
            server.wait_ready()
        rows = {name: {c: [] for c in CONCURRENCY} for name in servers}
        for round_index, order in enumerate(rotations(list(servers), args.rounds)):
            for name in order:
                for c in CONCURRENCY:
                    server = servers[name]
                    row = asyncio.run(load(server.url, images, c, args.seconds, args.warmup))
                    rows[name][c].append(row)
                    print(
                        f"  round {round_index + 1} {name:10s} c={c:2d}: "
                        f"{row['images_per_second']:6.1f} images/s  p99 {row['p99_ms']:6.1f} ms  "
                        f"failures {row['failures'] or 0}",
                        flush=True,
                    )
        captured = sum(1 for _ in (work / "capture").rglob("*.jpg"))
    result = summarise(rows, memory, captured, args)
    result["machine"] = {**facts, "server_cpus": sorted(SERVER_CPUS)}
    write_result("live_traffic", result, args, started)
    return 0


def summarise(rows: dict, memory: dict, captured: int, args) -> dict:
    table = {
        name: {
            str(c): {
                "images_per_second": median([run["images_per_second"] for run in runs]),
                "p99_ms": median([run["p99_ms"] for run in runs]),
                "requests": sum(run["requests"] for run in runs),
                "failures": sum(sum(run["failures"].values()) for run in runs),
            }
            for c, runs in levels.items()
        }
        for name, levels in rows.items()
    }
    ratios = {
        name: {
            str(c): median(
                [
                    run["images_per_second"] / off["images_per_second"]
                    for run, off in zip(rows[name][c], rows["off"][c], strict=True)
                ]
            )
            for c in CONCURRENCY
        }
        for name in rows
        if name != "off"
    }
    worst_capture = min(ratios["capture"].values())
    print(f"capture on / off: {ratios['capture']} (target >= {TARGET_CAPTURE})")
    print(f"shadow (default rate) / off: {ratios['shadow']}; at rate 1: {ratios['shadow_all']}")
    per_extra = (memory["3"] - memory["1"]) / 2
    print(f"memory per extra model: {per_extra:.0f} MiB")
    return {
        "rounds": args.rounds,
        "seconds_per_level": args.seconds,
        "concurrency": CONCURRENCY,
        "servers": table,
        "ratios_to_off": ratios,
        "captured_images": captured,
        "targets": {
            "capture_over_off": {
                "value": worst_capture,
                "target": TARGET_CAPTURE,
                "met": worst_capture >= TARGET_CAPTURE,
            },
        },
        "shadow_share_of_throughput": {c: 1 - r for c, r in ratios["shadow"].items()},
        "memory_mib": memory,
        "memory_per_extra_model_mib": per_extra,
    }


if __name__ == "__main__":
    raise SystemExit(main())
