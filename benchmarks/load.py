"""The service under load: sustained, a burst past its in-flight limit, a worker killed.

``python -m benchmarks.load [--seconds 300] [--quick]`` trains a tiny digits
model like the one the service tests use (a ResNet at 16 px, one epoch, into the
benchmark's own model store), serves it with ``bentoml serve`` as configured by default, and runs
closed-loop clients on it (``benchmarks.loadgen``, the load client
tests/service/test_load.py also runs, for 30 s):

- sustained: 64 clients for ``--seconds`` (after 5 s of warm-up): status counts,
  latency percentiles, memory (unique set size of the server's processes) in the
  first and the last minute, and the slowest ``/livez``;
- burst: 8 clients, then 256 (four times ``VISIONTUNE_MAX_CONCURRENCY``), then 8
  again for 30 s: how the burst was answered, and how long until the median
  latency is back within 1.5x of what it was before;
- worker killed: two workers, 16 clients, one worker SIGKILLed after 10 s: the
  requests lost, the slowest answer, and whether ``/metrics`` still reports
  requests in progress once the load has stopped.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

from benchmarks.common import parser, write_result
from benchmarks.loadgen import Phase, growth, run_phases, summarize, windows
from visiontune.localserver import serving, total

SUSTAINED_CLIENTS = 64
BURST_CLIENTS = 256
KILL_CLIENTS = 16
WINDOW_S = 5


def train_digits_model(work: Path) -> str:
    from training.backbones import save_random_backbone
    from training.config import TrainConfig
    from training.train import train

    backbone = save_random_backbone(work / "backbone", "resnet", 16)
    config = TrainConfig(
        data="digits",
        backbone=str(backbone),
        image_size=16,
        strategy="full",
        lr=3e-3,
        epochs=1,
        name="bench-load-digits",
        output_dir=work / "run",
    )
    return str(train(config).tag)


def digit_payloads(per_digit: int = 4) -> list[bytes]:
    """The first ``per_digit`` images of each digit, as PNG files."""
    import io

    from training.embedded import read_digits

    splits, *_ = read_digits()
    payloads, taken = [], dict.fromkeys(range(10), 0)
    for image, digit in splits["train"]:
        if taken[digit] < per_digit:
            taken[digit] += 1
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            payloads.append(buffer.getvalue())
    return payloads


def sustained(server, payloads, seconds: float) -> dict:
    phases = [Phase("warm-up", 8, 5), Phase("load", SUSTAINED_CLIENTS, seconds)]
    run = run_phases(server.url, payloads, phases, server_pid=server.process.pid)
    start, end = run.phases["load"]
    part = min(60.0, seconds / 5)
    return {
        "clients": SUSTAINED_CLIENTS,
        "seconds": seconds,
        **summarize(run.of("load", skip_s=WINDOW_S)),
        "memory": {**growth(run.memory, start, end, part), "part_seconds": part},
        "livez_max_ms": max(seconds * 1000 for _, seconds, _ in run.livez),
        "livez_failures": sum(status != 200 for _, _, status in run.livez),
        "windows": windows(run.of("load"), start, WINDOW_S),
        "server_503": total(
            server.metrics(), "bentoml_service_request_total", http_response_code="503"
        ),
    }


def burst(server, payloads, after_s: float) -> dict:
    phases = [Phase("before", 8, 10), Phase("burst", BURST_CLIENTS, 10), Phase("after", 8, after_s)]
    run = run_phases(server.url, payloads, phases)
    normal = summarize(run.of("before", skip_s=2))
    after = windows(run.of("after"), run.phases["after"][0], WINDOW_S)
    recovered = next(
        (w["from_s"] + WINDOW_S for w in after if w.get("p50_ms", 1e9) <= 1.5 * normal["p50_ms"]),
        None,
    )
    return {
        "clients": BURST_CLIENTS,
        "before": normal,
        "burst": summarize(run.of("burst")),
        "after": summarize(run.of("after")),
        "after_windows": after,
        "recovered_within_s": recovered,
        "livez_max_ms": max(seconds * 1000 for _, seconds, _ in run.livez),
        "livez_failures": sum(status != 200 for _, _, status in run.livez),
        "retry_after_on_every_503": all(o.retry_after for o in run.outcomes if o.status == 503),
    }


def worker_killed(server, payloads, seconds: float) -> dict:
    killed: dict = {}

    def kill_one(origin: float) -> None:
        time.sleep(10)
        worker = server.workers()[0]
        killed.update(pid=worker.pid, at_s=time.monotonic() - origin)
        worker.send_signal(signal.SIGKILL)

    run = run_phases(server.url, payloads, [Phase("load", KILL_CLIENTS, seconds)], during=kill_one)
    end = run.phases["load"][1]
    return {
        "clients": KILL_CLIENTS,
        "seconds": seconds,
        "killed_at_s": killed.get("at_s"),
        **summarize(run.outcomes),
        "slowest_ms": max(o.seconds for o in run.outcomes) * 1000,
        "lost_after_kill_s": [
            round(o.started - killed["at_s"], 2) for o in run.outcomes if o.status != 200
        ],
        "last_5s": summarize([o for o in run.outcomes if o.started >= end - 5]),
        "in_progress_after": total(server.metrics(), "bentoml_service_request_in_progress"),
    }


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0], threads=False)
    args.add_argument("--seconds", type=float, default=300, help="length of the sustained run")
    args = args.parse_args(argv)
    seconds = 20 if args.quick else args.seconds
    started = time.perf_counter()
    load_at_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="visiontune-bench-load-") as folder:
        work = Path(folder)
        tag = train_digits_model(work)
        payloads = digit_payloads()
        env = {"VISIONTUNE_MODEL": tag}
        with serving(env, work / "serve-one.log") as server:
            result_sustained = sustained(server, payloads, seconds)
            result_burst = burst(server, payloads, after_s=10 if args.quick else 30)
            max_concurrency = server.client.get("/model").json()["serving"]["max_concurrency"]
        with serving({**env, "VISIONTUNE_WORKERS": "2"}, work / "serve-two.log") as server:
            server.wait_for_workers(2)
            result_killed = worker_killed(server, payloads, 20 if args.quick else 40)
    result = {
        "model": "a ResNet trained on the digits at 16 px for one epoch",
        "max_concurrency": max_concurrency,
        "load_average": {"start": list(load_at_start), "end": list(os.getloadavg())},
        "sustained": result_sustained,
        "burst": result_burst,
        "worker_killed": result_killed,
    }
    write_result("load", result, args, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
