"""Serving throughput and latency: the service against the in-process limit and a baseline.

A ViT of DeiT-tiny size (224 px, random weights: speed does not depend on them)
is built from a config and stored with ``training.store.save_model``. Then,
measured side by side in one run:

1. ``limit``: in-process, no HTTP: ``contract.images`` decoding (a thread per
   core, as a server would) + ``Preprocessing`` + one forward per batch, at batch
   sizes 1-64 (in a child process on the servers' CPUs);
2. ``service``: ``bentoml serve service:ImageClassifier`` with its adaptive
   batching (the service's own defaults);
3. ``service_unbatched``: the same with ``VISIONTUNE_MAX_BATCH_SIZE=1``;
4. ``baseline``: ``benchmarks/baseline_app.py``, FastAPI + a transformers
   ``pipeline("image-classification")`` one image at a time (uvicorn, 1 worker);
5. ``bentoml_floor`` (CPU only): ``benchmarks/floor_service.py``, the same model,
   decoding and forward passes behind a bare batchable BentoML API: what BentoML
   itself costs per request, measured on the service's targets beside it.

The servers run at once on 127.0.0.1, idle unless spoken to; one asyncio
client (aiohttp) sends every row the same requests: one JPEG (640x480) per
``POST /classify``, ``--concurrency`` requests in flight, for ``--seconds`` after
a warm-up, then waits for the last answers. Servers and concurrency levels are
visited in a rotating order each round; figures are medians over rounds.

The client runs on a core of its own (the last usable one); the servers and the
limit are pinned to the other cores and size their torch threads from them (the
service does so itself: ``service.settings.available_cpus``). On 2 cores that is
one core and one torch thread for every measured process, which also keeps the
measurements away from the stalls two intra-op threads suffer on a shared machine
(one waits at every barrier for the other to be scheduled again).

``--dtype`` is the precision of every measured process: the limit's, the
baseline's and the service's (``VISIONTUNE_PRECISION``). On a GPU:
``--device cuda --preset vit-base --dtype bf16``; on a CPU with native bf16
(AVX512-BF16 or AMX): ``--dtype bf16``. Runs other than CPU fp32 are written to
their own results file, ``serve_throughput-DEVICE-PRESET-DTYPE.json``.
``--gpu-decode`` decodes the JPEGs on the GPU (nvJPEG) in the limit and in the
service (``VISIONTUNE_GPU_DECODE=1``); its file ends in ``-gpudecode``.
``benchmarks/gpu_check.sh`` runs every GPU configuration in one go.

Each server row also records the CPU it used: cores busy over the window and images
served per CPU-second (images/s per core).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from math import nan
from pathlib import Path

import numpy as np
import yaml

from benchmarks.common import (
    REPO,
    RESULTS,
    machine_facts,
    median,
    parser,
    percentile,
    rotations,
    write_result,
)
from visiontune.localserver import stop_process_group
from visiontune.ports import free_port

CONCURRENCY = [1, 8, 32, 64]
BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64]
IMAGE_SIZE = (640, 480)
N_IMAGES = 32
LABELS = [f"class-{i}" for i in range(10)]
DTYPES = ("fp32", "bf16", "fp16")
READY_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 30
MAX_REQUESTS_PER_LEVEL = 50_000
# Prometheus samples of the service read around each measured window: where its time goes
METRIC_SAMPLES = {
    "visiontune_preprocess_seconds_sum": "decode_seconds",
    "visiontune_preprocess_seconds_count": "decode_calls",
    "visiontune_inference_seconds_sum": "inference_seconds",
    "visiontune_inference_seconds_count": "batches",
}


def make_images(count: int = N_IMAGES, size: tuple[int, int] = IMAGE_SIZE) -> list[bytes]:
    """Photo-like JPEGs: smooth colour fields, shapes and a little noise (fixed seed)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    images = []
    for _ in range(count):
        phases = rng.uniform(0, 2 * np.pi, 3)
        scale = rng.uniform(60, 200)
        channels = [
            127 + 100 * np.sin(x / scale + phases[c]) * np.cos(y / (scale * 1.3) + phases[c])
            for c in range(3)
        ]
        pixels = np.stack(channels, axis=-1) + rng.normal(0, 6, (height, width, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x0, y0 = rng.integers(0, width - 60), rng.integers(0, height - 60)
            box = (
                int(x0),
                int(y0),
                int(x0 + rng.integers(30, 200)),
                int(y0 + rng.integers(30, 160)),
            )
            draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def store_model(preset: str, work: Path) -> tuple[str, Path]:
    """A random ViT, or EfficientNet-Lite0 with its ImageNet weights and a new head, saved
    into the (benchmark's own) model store at 224 px: (tag, folder)."""
    import bentoml

    from contract.savedmodel import Metrics, ModelMetadata
    from training.backbones import save_random_backbone
    from training.model import create_model
    from training.store import save_model

    if preset == "efficientnet-lite0":
        backbone, described = preset, "EfficientNet-Lite0 (ImageNet weights, new head)"
    else:
        backbone = save_random_backbone(work / f"vit-{preset}", "vit", 224, preset, num_labels=10)
        described = f"random ViT ({preset} preset, benchmark only)"
    model, preprocessing = create_model(str(backbone), LABELS, image_size=224)
    unmeasured = Metrics(accuracy=0, macro_f1=0, per_class_f1={}, ece=0, nll=0, n=0)
    metadata = ModelMetadata(
        labels=LABELS,
        backbone=described,
        strategy="none",
        image_size=(preprocessing.height, preprocessing.width),
        temperature=1.0,
        label_counts=dict.fromkeys(LABELS, 1),
        validation=unmeasured,
        dataset_fingerprint="none",
        split={},
        training_config={},
        versions={},
    )
    tag = save_model(model.eval(), preprocessing, metadata, name=f"bench-{preset}")
    return str(tag), Path(bentoml.models.get(tag).path)


# --- 1. the in-process limit -------------------------------------------------------------


class Limit:
    """Decode + preprocess + forward in this process, batch by batch."""

    def __init__(
        self, folder: Path, device: str, dtype: str, images: list[bytes], gpu_decode: bool = False
    ):
        import torch

        from contract.predictor import Predictor
        from contract.savedmodel import ModelMetadata

        # the folder of a BentoML model: its metadata is in BentoML's model.yaml beside it
        stored = yaml.safe_load((folder / "model.yaml").read_text())
        metadata = ModelMetadata.model_validate(stored["metadata"])
        autocast = None if dtype == "fp32" else getattr(torch, _torch_dtype(dtype))
        self.predictor = Predictor.from_folder(
            folder, metadata, device=device, autocast_dtype=autocast
        )
        self.preprocessing = self.predictor.preprocessing
        self.images = images
        self.pool = ThreadPoolExecutor(max_workers=len(os.sched_getaffinity(0)))
        self.next = 0
        self.gpu_jpegs = None
        if gpu_decode:
            from service.gpu_decode import GpuJpegDecoder, nvjpeg

            decoder = nvjpeg(self.predictor.device)
            self.gpu_jpegs = GpuJpegDecoder(
                self.preprocessing, IMAGE_SIZE[0] * IMAGE_SIZE[1], decoder
            )

    def _decode(self, data: bytes) -> np.ndarray:
        from contract.images import decode_image

        image = decode_image(data, draft_size=self.preprocessing.draft_size)
        return self.preprocessing.resize(image)

    def batch(self, size: int) -> None:
        chosen = [self.images[(self.next + i) % len(self.images)] for i in range(size)]
        self.next += size
        if self.gpu_jpegs is not None:
            from service.gpu_decode import stack_pixels

            decoded = self.gpu_jpegs(chosen)
            self.predictor(stack_pixels([decoded[i] for i in range(size)]))
            return
        self.predictor(np.stack(list(self.pool.map(self._decode, chosen))))

    def measure(self, size: int, seconds: float) -> float:
        """Images per second at batch ``size`` (after one warm-up batch)."""
        self.batch(size)
        done, started = 0, time.perf_counter()
        while True:
            self.batch(size)
            done += size
            elapsed = time.perf_counter() - started
            if elapsed >= seconds and done >= 2 * size:
                return done / elapsed

    def close(self) -> None:
        self.pool.shutdown()


def measure_limit(
    folder: Path, device: str, dtype: str, sizes: list[int], seconds: float, gpu_decode: bool
) -> dict:
    """Images/s at each batch size, measured in a child process on the servers' CPUs."""
    command = [sys.executable, "-m", "benchmarks.serve_throughput", "--limit-only", str(folder)]
    command += ["--device", device, "--dtype", dtype, "--limit-seconds", str(seconds)]
    command += ["--gpu-decode"] if gpu_decode else []
    command += ["--batch-sizes", ",".join(map(str, sizes))]
    return run_limit(command, _device_env(device), len(sizes), seconds)


def run_limit(command: list[str], env: dict[str, str], sizes: int, seconds: float) -> dict:
    """Run a ``--limit-only`` child pinned to the servers' CPUs, timing ``sizes`` batch
    sizes ``seconds`` each: its last stdout line is ``{batch size: images/s}``."""
    done = subprocess.run(
        command,
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=READY_TIMEOUT_S + 2 * sizes * (seconds + 30),
        preexec_fn=_pin(SERVER_CPUS),
    )
    if done.returncode != 0:
        raise RuntimeError(f"the in-process limit failed:\n{done.stderr[-3000:]}")
    return {int(size): rate for size, rate in json.loads(done.stdout.splitlines()[-1]).items()}


def _limit_only(args) -> int:
    limit = Limit(Path(args.limit_only), args.device, args.dtype, make_images(), args.gpu_decode)
    rates = {size: limit.measure(size, args.limit_seconds) for size in args.batch_sizes}
    limit.close()
    print(json.dumps(rates))
    return 0


# The client gets a core of its own (the last one) and the servers and the in-process
# limit share the others, so that load generation does not compete with the measured
# code, and every measured process sizes its torch threads from the same CPU set.
_USABLE = sorted(os.sched_getaffinity(0))
SERVER_CPUS = set(_USABLE[:-1]) if len(_USABLE) > 1 else set(_USABLE)
CLIENT_CPUS = {_USABLE[-1]} if len(_USABLE) > 1 else set(_USABLE)


def _pin(cpus: set[int]):
    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin


def _device_env(device: str) -> dict[str, str]:
    # a CPU run stays on the CPU even where a GPU exists
    return {"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {}


# --- the servers ---------------------------------------------------------------------------


class Server:
    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path):
        self.name, self.command, self.env, self.log = name, command, env, log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env=self.env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # stop() ends the server's whole process group
            preexec_fn=_pin(SERVER_CPUS),
        )

    def wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError(f"{self.name} not ready in {READY_TIMEOUT_S}s:\n{self.tail()}")

    def snapshot(self) -> dict[str, float]:
        """Counters to difference over a measured window: the server's CPU seconds (all its
        processes) and, where the server exports them, the service's own timings."""
        counters = {"cpu_seconds": _tree_cpu_seconds(self.process.pid)}
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        try:
            response = httpx.get(f"{self.url}/metrics", timeout=10)
        except httpx.HTTPError:
            return counters
        if response.status_code != 200:
            return counters
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                if sample.name in METRIC_SAMPLES:
                    key = METRIC_SAMPLES[sample.name]
                    counters[key] = counters.get(key, 0.0) + sample.value
        return counters

    def describe(self) -> dict | None:
        """The service's own account of how it serves (``GET /model``), if it has one."""
        import httpx

        try:
            response = httpx.get(f"{self.url}/model", timeout=10)
        except httpx.HTTPError:
            return None
        return response.json().get("serving") if response.status_code == 200 else None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            stop_process_group(self.process)


def make_servers(
    tag: str, folder: Path, device: str, dtype: str, logs: Path, gpu_decode: bool = False
) -> dict[str, Server]:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "VISIONTUNE_MODEL": tag, "PYTHONUNBUFFERED": "1", **_device_env(device)}
    env["VISIONTUNE_PRECISION"] = dtype
    env["VISIONTUNE_GPU_DECODE"] = "1" if gpu_decode else "0"
    bentoml = [str(bin_dir / "bentoml"), "serve", "service:ImageClassifier"]
    bentoml += ["--host", "127.0.0.1", "--port", "{port}"]
    uvicorn = [sys.executable, "-m", "uvicorn", "benchmarks.baseline_app:app"]
    uvicorn += ["--host", "127.0.0.1", "--port", "{port}", "--workers", "1"]
    baseline_env = {
        **env,
        "BASELINE_MODEL": str(folder),
        "BASELINE_DEVICE": device,
        "BASELINE_DTYPE": dtype,
    }
    servers = {
        "service": Server("service", bentoml, env, logs / "service.log"),
        "service_unbatched": Server(
            "service_unbatched",
            bentoml,
            {**env, "VISIONTUNE_MAX_BATCH_SIZE": "1"},
            logs / "service_unbatched.log",
        ),
        "baseline": Server("baseline", uvicorn, baseline_env, logs / "baseline.log"),
    }
    if device == "cpu":
        floor = [*bentoml[:2], "benchmarks.floor_service:BentoMLFloor", *bentoml[3:]]
        servers["bentoml_floor"] = Server("bentoml_floor", floor, env, logs / "floor.log")
    return servers


# --- the client ----------------------------------------------------------------------------


async def load(
    url: str,
    images: list[bytes],
    concurrency: int,
    seconds: float,
    warmup: float,
    snapshot=None,
) -> dict:
    """``concurrency`` requests in flight for ``seconds`` (after ``warmup``): rate and latency."""
    import aiohttp

    latencies: list[float] = []
    failures: dict[str, int] = {}
    counter = iter(range(10**9))
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)

    async def send(session) -> tuple[float, str | None]:
        index = next(counter)
        form = aiohttp.FormData()
        data = images[index % len(images)]
        form.add_field("images", data, filename=f"image-{index}.jpg", content_type="image/jpeg")
        started = time.perf_counter()
        try:
            async with session.post(f"{url}/classify", data=form) as response:
                body = await response.read()
                problem = None if response.status == 200 else f"HTTP {response.status}"
                if problem is None and not json.loads(body):
                    problem = "empty answer"
        except (aiohttp.ClientError, TimeoutError) as err:
            problem = type(err).__name__
        return time.perf_counter() - started, problem

    async def worker(session, until: float, record: bool) -> None:
        sent = 0
        while time.perf_counter() < until and sent < MAX_REQUESTS_PER_LEVEL // concurrency:
            latency, problem = await send(session)
            sent += 1
            if not record:
                continue
            if problem is None:
                latencies.append(latency)
            else:
                failures[problem] = failures.get(problem, 0) + 1

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        until = time.perf_counter() + warmup
        await asyncio.gather(*(worker(session, until, False) for _ in range(concurrency)))
        before = snapshot() if snapshot else {}
        cpu, started = time.process_time(), time.perf_counter()
        until = started + seconds
        await asyncio.gather(*(worker(session, until, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        client_cpu = time.process_time() - cpu
        after = snapshot() if snapshot else {}
    served = len(latencies) or 1
    return {
        "server": _breakdown(before, after, served, elapsed),
        "images_per_second": len(latencies) / elapsed,
        "p50_ms": 1000 * percentile(latencies, 50),
        "p95_ms": 1000 * percentile(latencies, 95),
        "p99_ms": 1000 * percentile(latencies, 99),
        "requests": len(latencies),
        "failures": failures,
        "seconds": elapsed,
        "client_cpu_share": client_cpu / elapsed,
    }


def _breakdown(before: dict, after: dict, images: int, elapsed: float) -> dict:
    """Per image: the server's CPU time and, for the service, what its own metrics account for."""
    delta = {key: after[key] - before.get(key, 0.0) for key in after}
    out = {}
    if "cpu_seconds" in delta:
        out["cpu_ms_per_image"] = 1000 * delta["cpu_seconds"] / images
        out["cpu_busy_share"] = delta["cpu_seconds"] / elapsed / max(1, len(SERVER_CPUS))
        out["cores_used"] = delta["cpu_seconds"] / elapsed
        out["images_per_core_second"] = images / max(delta["cpu_seconds"], 1e-9)
    if delta.get("batches"):
        out["decode_ms_per_image"] = 1000 * delta.get("decode_seconds", 0.0) / images
        out["inference_ms_per_image"] = 1000 * delta["inference_seconds"] / images
        out["mean_batch_size"] = images / delta["batches"]
        if "cpu_ms_per_image" in out:
            out["other_ms_per_image"] = (
                out["cpu_ms_per_image"] - out["decode_ms_per_image"] - out["inference_ms_per_image"]
            )
    return out


def _tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of a live process and all its descendants (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parent, cpu = {}, {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        parent[pid] = int(fields[1])  # fields after the name: state, ppid, ...
        cpu[pid] = int(fields[11]) + int(fields[12])  # utime, stime
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, ppid in parent.items() if ppid in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    return sum(cpu.get(pid, 0) for pid in tree) / ticks


# --- the run -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.limit_only:
        return _limit_only(args)
    started = time.perf_counter()
    facts = machine_facts()  # before this process moves to the client's core
    os.sched_setaffinity(0, CLIENT_CPUS)
    if args.quick:
        args.concurrency, args.batch_sizes = [1, 8], [1, 8]
        args.seconds, args.warmup, args.rounds = 3.0, 1.0, 1
    images = make_images()
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as work, ExitStack() as stack:
        work = Path(work)
        tag, folder = store_model(args.preset, work)
        if args.onnx_provider:  # the service runs the stored ONNX graph on that provider
            from training.optimize import optimize

            optimize(tag)
            os.environ.update(
                VISIONTUNE_RUNTIME="onnxruntime", VISIONTUNE_ONNX_PROVIDER=args.onnx_provider
            )
        servers = make_servers(tag, folder, args.device, args.dtype, work, args.gpu_decode)
        for server in servers.values():
            stack.callback(server.stop)
            server.start()
        for server in servers.values():
            server.wait_ready()
        serving = servers["service"].describe()
        print(f"servers ready; the service reports {serving}", flush=True)

        limit_rates = {size: [] for size in args.batch_sizes}
        rows = {name: {c: [] for c in args.concurrency} for name in servers}
        for round_index, order in enumerate(rotations(list(servers), args.rounds)):
            sizes = rotations(args.batch_sizes, args.rounds)[round_index]
            measured = measure_limit(
                folder, args.device, args.dtype, sizes, args.limit_seconds, args.gpu_decode
            )
            for size, rate in measured.items():
                limit_rates[size].append(rate)
                print(f"  round {round_index + 1} limit batch {size:2d}: {rate:7.1f} images/s")
            for name in order:
                for c in rotations(args.concurrency, args.rounds)[round_index]:
                    server = servers[name]
                    row = asyncio.run(
                        load(server.url, images, c, args.seconds, args.warmup, server.snapshot)
                    )
                    rows[name][c].append(row)
                    print(
                        f"  round {round_index + 1} {name:17s} c={c:2d}: "
                        f"{row['images_per_second']:7.1f} images/s  p50 {row['p50_ms']:7.1f} ms  "
                        f"p99 {row['p99_ms']:7.1f} ms  failures {row['failures'] or 0}",
                        flush=True,
                    )
        logs = {name: server.tail(15) for name, server in servers.items()}
    result = _summarise(args, limit_rates, rows, serving, images)
    result["server_log_tails"] = logs
    result["machine"] = {**facts, "torch_threads_measured": len(SERVER_CPUS)}
    default_run = ("cpu", "fp32", False, "deit-tiny")
    if (
        args.output is None
        and (args.device, args.dtype, args.gpu_decode, args.preset) != default_run
    ):
        suffix = (
            ("-gpudecode" if args.gpu_decode else "")
            + (f"-onnxruntime-{args.onnx_provider}" if args.onnx_provider else "")
            + (".quick.json" if args.quick else ".json")
        )
        args.output = RESULTS / f"serve_throughput-{args.device}-{args.preset}-{args.dtype}{suffix}"
    write_result("serve_throughput", result, args, started)
    return 0


def _summarise(args, limit_rates, rows, serving, images) -> dict:
    limit = {str(size): median(rates) for size, rates in limit_rates.items()}
    best_size = max(limit_rates, key=lambda size: median(limit_rates[size]))
    table = {}
    for name, levels in rows.items():
        table[name] = {}
        for c, runs in levels.items():
            table[name][str(c)] = {
                key: median([run[key] for run in runs])
                for key in ("images_per_second", "p50_ms", "p95_ms", "p99_ms", "client_cpu_share")
            }
            table[name][str(c)]["requests"] = sum(run["requests"] for run in runs)
            keys = {key for run in runs for key in run.get("server", {})}
            table[name][str(c)]["server"] = {
                key: median([run["server"][key] for run in runs if key in run["server"]])
                for key in sorted(keys)
            }
            failures: dict[str, int] = {}
            for run in runs:
                for problem, count in run["failures"].items():
                    failures[problem] = failures.get(problem, 0) + count
            table[name][str(c)]["failures"] = failures
    c = 32 if 32 in args.concurrency else max(args.concurrency)
    service = table["service"][str(c)]["images_per_second"]
    targets = {
        "concurrency": c,
        "service_over_best_limit": {
            "value": service / limit[str(best_size)],
            "target": 0.95 if args.device == "cpu" else 0.8,
        },
        "service_over_unbatched": {
            "value": service / table["service_unbatched"][str(c)]["images_per_second"],
            "target": 1.5,
        },
        "service_over_baseline": {
            "value": service / table["baseline"][str(c)]["images_per_second"],
            "target": 2.0,
        },
    }
    # What the in-process limit allows each ratio at most: the service cannot beat the
    # best limit, and the other two rows do no worse than the limit at batch 1 (the
    # unbatched service) or than the baseline as measured.
    targets["service_over_unbatched"]["ceiling"] = limit[str(best_size)] / limit.get("1", nan)
    targets["service_over_baseline"]["ceiling"] = (
        limit[str(best_size)] / table["baseline"][str(c)]["images_per_second"]
    )
    # at concurrency 1 the wall-clock parts follow each other, so other is CPU time
    # outside decoding and the forward pass (with many in flight they overlap)
    other = table["service"].get("1", {}).get("server", {}).get("other_ms_per_image")
    if other is not None:
        targets["other_ms_per_image"] = {"value": other, "target": 1.0, "at_most": True}
    # The same measures for the BentoML floor: what BentoML's own request path reaches
    if "bentoml_floor" in table:
        floor = table["bentoml_floor"]
        targets["service_over_best_limit"]["floor"] = (
            floor[str(c)]["images_per_second"] / limit[str(best_size)]
        )
        floor_other = floor.get("1", {}).get("server", {}).get("other_ms_per_image")
        if other is not None and floor_other is not None:
            targets["other_ms_per_image"]["floor"] = floor_other
    for target in targets.values():
        if isinstance(target, dict):
            below = target["value"] <= target["target"]
            target["met"] = below if target.get("at_most") else target["value"] >= target["target"]
    for name, target in targets.items():
        if isinstance(target, dict):
            verdict = "met" if target["met"] else "MISSED"
            sign = "<=" if target.get("at_most") else ">="
            print(f"{name} at c={c}: {target['value']:.2f} ({sign} {target['target']}: {verdict})")
    return {
        "device": args.device,
        "preset": args.preset,
        "dtype": args.dtype,
        "gpu_decode": args.gpu_decode,
        "image": {
            "format": "JPEG",
            "size": list(IMAGE_SIZE),
            "distinct": len(images),
            "mean_bytes": int(sum(map(len, images)) / len(images)),
        },
        "server_cpus": sorted(SERVER_CPUS),
        "client_cpus": sorted(CLIENT_CPUS),
        "rounds": args.rounds,
        "seconds_per_level": args.seconds,
        "warmup_seconds": args.warmup,
        "service_serving": serving,
        "limit": {"images_per_second": limit, "best_batch_size": best_size},
        "limit_by_round": {str(size): rates for size, rates in limit_rates.items()},
        "servers": table,
        "servers_by_round": {
            name: {str(c): runs for c, runs in levels.items()} for name, levels in rows.items()
        },
        "targets": targets,
    }


def _arguments(argv):
    args = parser(__doc__.splitlines()[0], threads=False)
    args.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args.add_argument(
        "--preset", choices=["deit-tiny", "vit-base", "efficientnet-lite0"], default="deit-tiny"
    )
    args.add_argument(
        "--dtype",
        choices=DTYPES,
        default="fp32",
        help="precision of the limit, baseline and service",
    )
    args.add_argument("--rounds", type=int, default=3)
    args.add_argument("--seconds", type=float, default=8.0, help="measured seconds per row")
    args.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each")
    args.add_argument("--limit-seconds", type=float, default=3.0, help="seconds per batch size")
    args.add_argument("--concurrency", type=_ints, default=CONCURRENCY)
    args.add_argument("--batch-sizes", type=_ints, default=BATCH_SIZES)
    args.add_argument(
        "--gpu-decode",
        action="store_true",
        help="decode JPEGs on the GPU (nvJPEG), limit and service",
    )
    args.add_argument(
        "--onnx-provider",
        choices=["cpu", "cuda", "tensorrt"],
        help="the service serves the model's ONNX graph on this ONNX Runtime execution provider "
        "(VISIONTUNE_RUNTIME=onnxruntime); the limit and baseline stay torch",
    )
    args.add_argument("--limit-only", metavar="MODEL_FOLDER", help=argparse.SUPPRESS)
    return args.parse_args(argv)


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def _torch_dtype(name: str) -> str:
    return {"bf16": "bfloat16", "fp16": "float16"}[name]


if __name__ == "__main__":
    raise SystemExit(main())
