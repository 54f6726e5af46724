"""The runtime `VISIONTUNE_RUNTIME=auto` picks, served, against the torch-eager service.

For each model (EfficientNet-Lite0 with its ImageNet weights and a new head, and a
random DeiT-tiny, both at 224 px) the benchmark keeps its ONNX graphs in the store
(``visiontune optimize --int8``, timed; calibrated and checked on the benchmark's 32
JPEGs, kept as the model's stored images), then serves it twice side by side on the same CPU:
``torch_eager`` (``VISIONTUNE_RUNTIME=torch``, ``VISIONTUNE_PRECISION=fp32``) and
``auto`` (the defaults: the runtime and precision chosen at warm-up). Clients post one
640x480 JPEG per ``POST /classify`` at concurrency 32 (``serve_throughput``'s load
client, on a core of its own); the in-process limit is the runtime ``auto`` chose, in
this process's own batches of decoded images (decoding on a thread per server core,
the chosen forward pass), at each batch size. Servers and rounds rotate, figures are
medians over rounds. Start-up is the seconds from ``bentoml serve`` to ``/readyz``.

Targets: ``auto`` at least 2.5x ``torch_eager`` on EfficientNet-Lite0 and 2x on
DeiT-tiny, and at least 0.9 of its runtime's in-process limit.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.common import machine_facts, median, parser, rotations, write_result
from benchmarks.serve_throughput import (
    CLIENT_CPUS,
    IMAGE_SIZE,
    SERVER_CPUS,
    Limit,
    Server,
    load,
    make_images,
    run_limit,
    store_model,
)

PRESETS = ["efficientnet-lite0", "deit-tiny"]
TARGETS = {"efficientnet-lite0": 2.5, "deit-tiny": 2.0}
LIMIT_SHARE = 0.9
BATCH_SIZES = [1, 8, 16, 32]
PRECISIONS = {"float32": "fp32", "bfloat16": "bf16", "int8": "int8"}


def servers(tag: str, logs: Path) -> dict[str, Server]:
    bentoml = [str(Path(sys.executable).parent / "bentoml"), "serve", "service:ImageClassifier"]
    bentoml += ["--host", "127.0.0.1", "--port", "{port}"]
    env = {**os.environ, "VISIONTUNE_MODEL": tag, "PYTHONUNBUFFERED": "1"}
    env["CUDA_VISIBLE_DEVICES"] = ""
    torch_env = {**env, "VISIONTUNE_RUNTIME": "torch", "VISIONTUNE_PRECISION": "fp32"}
    auto_env = {**env, "VISIONTUNE_RUNTIME": "auto", "VISIONTUNE_PRECISION": "auto"}
    return {
        "torch_eager": Server("torch_eager", bentoml, torch_env, logs / "torch.log"),
        "auto": Server("auto", bentoml, auto_env, logs / "auto.log"),
    }


def measure_limit(folder: Path, serving: dict, sizes: list[int], seconds: float) -> dict:
    """Images/s of the chosen runtime at each batch size, in a child on the servers' CPUs."""
    command = [sys.executable, "-m", "benchmarks.runtimes", "--limit-only", str(folder)]
    command += ["--runtime", serving["runtime"], "--precision", PRECISIONS[serving["precision"]]]
    command += ["--limit-seconds", str(seconds), "--batch-sizes", ",".join(map(str, sizes))]
    return run_limit(command, {"CUDA_VISIBLE_DEVICES": ""}, len(sizes), seconds)


def _limit_only(args) -> int:
    """The chosen runtime built as the service builds it (``service.runtime``), timed."""
    import yaml

    from contract.savedmodel import ModelMetadata
    from service.runtime import build_runtime
    from service.settings import Settings

    folder = Path(args.limit_only)
    metadata = ModelMetadata.model_validate(
        yaml.safe_load((folder / "model.yaml").read_text())["metadata"]
    )
    settings = Settings.from_env(
        {"VISIONTUNE_RUNTIME": args.runtime, "VISIONTUNE_PRECISION": args.precision}
    )
    limit = Limit(folder, "cpu", "fp32", make_images())
    limit.predictor = build_runtime(folder, metadata, settings).predictor
    rates = {size: limit.measure(size, args.limit_seconds) for size in args.batch_sizes}
    limit.close()
    print(json.dumps(rates))
    return 0


def keep_samples(folder: Path, images: list[bytes]) -> None:
    """The benchmark's JPEGs at the model's size as the stored images (``contract.samples``):
    int8 is calibrated on them and every runtime checked on them. The model's head is new and
    random, so their labels are its own fp32 answers (the int8 accuracy change is then its
    disagreement with fp32, which the warm-up check bounds anyway)."""
    import numpy as np
    import yaml

    from contract.images import Preprocessing, decode_image
    from contract.predictor import Predictor
    from contract.samples import Samples
    from contract.savedmodel import ModelMetadata

    policy = Preprocessing.from_pretrained(folder)
    pixels = np.stack([policy.resize(decode_image(data)) for data in images])
    metadata = ModelMetadata.model_validate(
        yaml.safe_load((folder / "model.yaml").read_text())["metadata"]
    )
    labels = Predictor.from_folder(folder, metadata)(pixels).argmax(axis=1)
    Samples(held_out=pixels, held_out_labels=labels, calibration=pixels).save(folder)


def run_model(preset: str, work: Path, args, images: list[bytes]) -> dict:
    from training.optimize import optimize

    tag, folder = store_model(preset, work)
    keep_samples(folder, images)
    started = time.perf_counter()
    optimize(tag, int8=True, max_loss=1.0)
    optimize_seconds = time.perf_counter() - started
    rows: dict[str, list[dict]] = {}
    with ExitStack() as stack:
        running = servers(tag, work)
        startup = {}
        for name, server in running.items():
            stack.callback(server.stop)
            begun = time.perf_counter()
            server.start()
            server.wait_ready()
            startup[name] = time.perf_counter() - begun
        serving = running["auto"].describe()
        print(f"{preset}: auto serves with {serving['runtime']} {serving['precision']}", flush=True)
        limits: dict[int, list[float]] = {size: [] for size in args.batch_sizes}
        for round_index, order in enumerate(rotations(list(running), args.rounds)):
            sizes = rotations(args.batch_sizes, args.rounds)[round_index]
            for size, rate in measure_limit(folder, serving, sizes, args.limit_seconds).items():
                limits[size].append(rate)
            for name in order:
                server = running[name]
                row = asyncio.run(
                    load(server.url, images, args.concurrency, args.seconds, args.warmup)
                )
                rows.setdefault(name, []).append(row)
                print(
                    f"  {preset} round {round_index + 1} {name:12s}: "
                    f"{row['images_per_second']:6.1f} images/s, failures {row['failures'] or 0}",
                    flush=True,
                )
        torch_serving = running["torch_eager"].describe()
    return _summary(preset, serving, torch_serving, rows, limits, startup, optimize_seconds)


def _summary(preset, serving, torch_serving, rows, limits, startup, optimize_seconds) -> dict:
    rates = {name: median([r["images_per_second"] for r in runs]) for name, runs in rows.items()}
    limit = {str(size): median(values) for size, values in limits.items()}
    best_limit = max(limit.values())
    return {
        "preset": preset,
        "auto": serving,
        "torch_eager": torch_serving,
        "images_per_second": rates,
        "rounds": {name: [r["images_per_second"] for r in runs] for name, runs in rows.items()},
        "latency_ms": {
            name: {q: median([r[f"{q}_ms"] for r in runs]) for q in ("p50", "p99")}
            for name, runs in rows.items()
        },
        "failures": {
            name: sum(sum(r["failures"].values()) for r in runs) for name, runs in rows.items()
        },
        "limit": limit,
        "speedup": rates["auto"] / rates["torch_eager"],
        "speedup_target": TARGETS.get(preset),
        "limit_share": rates["auto"] / best_limit,
        "limit_share_target": LIMIT_SHARE,
        "startup_seconds": startup,
        "optimize_seconds": optimize_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.limit_only:
        return _limit_only(args)
    started = time.perf_counter()
    facts = machine_facts()
    os.sched_setaffinity(0, CLIENT_CPUS)
    if args.quick:
        args.seconds, args.warmup, args.rounds, args.limit_seconds = 3.0, 1.0, 1, 1.0
    images = make_images()
    models = []
    for preset in args.presets:
        with tempfile.TemporaryDirectory(prefix="bench-runtimes-") as work:
            models.append(run_model(preset, Path(work), args, images))
    result = {
        "models": models,
        "concurrency": args.concurrency,
        "request": f"one {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} JPEG per POST /classify",
        "seconds": args.seconds,
        "rounds": args.rounds,
        "machine": {
            **facts,
            "server_cpus": sorted(SERVER_CPUS),
            "client_cpus": sorted(CLIENT_CPUS),
        },
    }
    write_result("runtimes", result, args, started)
    return 0


def _arguments(argv):
    args = parser(__doc__.splitlines()[0], threads=False)
    args.add_argument("--presets", nargs="+", choices=PRESETS, default=PRESETS)
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--concurrency", type=int, default=32)
    args.add_argument("--seconds", type=float, default=8.0, help="measured seconds per row")
    args.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each")
    args.add_argument("--limit-seconds", type=float, default=3.0, help="seconds per batch size")
    args.add_argument(
        "--batch-sizes", type=lambda t: [int(x) for x in t.split(",")], default=BATCH_SIZES
    )
    args.add_argument("--limit-only", metavar="MODEL_FOLDER", help=argparse_suppress())
    args.add_argument("--runtime", help=argparse_suppress())
    args.add_argument("--precision", help=argparse_suppress())
    return args.parse_args(argv)


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    sys.exit(main())
