"""The service under load (closed-loop clients posting digits, benchmarks/loadgen.py):
sustained, a burst past its in-flight limit, and a worker killed mid-load.

Bounded for `make test` (about two minutes); ``python -m benchmarks.load`` runs
the same scenarios at full length and reports the figures in BENCHMARKS.md.
"""

from __future__ import annotations

import shutil
import signal
import time

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from benchmarks.loadgen import Phase, growth, run_phases, summarize, windows
from tests.support.servers import LIMITS, serving, total, wait_for_workers

SUSTAINED_CLIENTS, SUSTAINED_S = 64, 30
MAX_CONCURRENCY = 64
BURST_CLIENTS = 256
TIMEOUT_S = 10


@pytest.fixture(scope="module")
def payloads(digit_files) -> list[bytes]:
    return [path.read_bytes() for paths in digit_files.values() for path in paths[:4]]


@pytest.fixture(scope="module")
def loaded_server(digits_model, tmp_path_factory):
    env = {
        "VISIONTUNE_MODEL": digits_model,
        "VISIONTUNE_MAX_CONCURRENCY": str(MAX_CONCURRENCY),
        **LIMITS,
    }
    with serving(tmp_path_factory.mktemp("home-load"), env) as running:
        yield running


def assert_no_errors_but_counted_503s(run, server) -> None:
    """Every request answered 200 or 503; each 503 says when to retry, and /metrics counts them."""
    statuses = summarize(run.outcomes)["statuses"]
    assert set(statuses) <= {"200", "503"}, statuses
    assert all(o.retry_after for o in run.outcomes if o.status == 503)
    counted = total(server.metrics(), "bentoml_service_request_total", http_response_code="503")
    assert counted == statuses.get("503", 0)
    assert all(status == 200 for _, _, status in run.livez), "/livez failed under load"


def test_sustained_load_keeps_latency_even_and_memory_flat(loaded_server, payloads):
    phases = [Phase("warm-up", 8, 3), Phase("load", SUSTAINED_CLIENTS, SUSTAINED_S)]
    run = run_phases(loaded_server.url, payloads, phases, server_pid=loaded_server.process.pid)
    assert_no_errors_but_counted_503s(run, loaded_server)
    steady = summarize(run.of("load", skip_s=5))
    assert steady["p99_ms"] <= 2 * steady["p50_ms"], steady
    start, end = run.phases["load"]
    memory = growth(run.memory, start + 5, end, part=5)
    assert memory["growth"] < 0.10, memory


def test_a_burst_is_refused_with_503_and_latency_recovers(loaded_server, payloads):
    phases = [Phase("before", 8, 8), Phase("burst", BURST_CLIENTS, 8), Phase("after", 8, 20)]
    run = run_phases(loaded_server.url, payloads, phases)
    assert_no_errors_but_counted_503s(run, loaded_server)
    burst = summarize(run.of("burst"))
    assert burst["statuses"]["503"] > 0, "the burst never reached the in-flight limit"
    normal = summarize(run.of("before", skip_s=2))["p50_ms"]
    recovered = [
        w["from_s"]
        for w in windows(run.of("after"), run.phases["after"][0], width=4)
        if w["p50_ms"] <= max(1.5 * normal, normal + 50)
    ]
    assert recovered and recovered[0] <= 16, (normal, windows(run.of("after"), 0, 4))


@pytest.fixture(scope="module")
def two_loaded_workers(digits_model, tmp_path_factory):
    env = {
        "VISIONTUNE_MODEL": digits_model,
        "VISIONTUNE_WORKERS": "2",
        "VISIONTUNE_TIMEOUT_S": str(TIMEOUT_S),
        **LIMITS,
    }
    with serving(tmp_path_factory.mktemp("home-kill"), env) as running:
        wait_for_workers(running, 2)
        yield running


def test_a_killed_worker_costs_only_its_requests_and_leaves_no_gauge(two_loaded_workers, payloads):
    server = two_loaded_workers
    killed: dict[str, float] = {}

    def kill_one_worker(origin: float) -> None:
        time.sleep(5)
        worker = server.workers()[0]
        killed.update(pid=worker.pid, at=time.monotonic() - origin)
        worker.send_signal(signal.SIGKILL)

    phases = [Phase("load", 16, 20)]
    run = run_phases(server.url, payloads, phases, timeout_s=60, during=kill_one_worker)
    assert killed, "no worker was killed"

    lost = [o for o in run.outcomes if o.status != 200]
    assert all(o.status is None for o in lost), summarize(lost)
    assert all(killed["at"] - 1 <= o.started <= killed["at"] + 5 for o in lost), lost
    assert max(o.seconds for o in run.outcomes) <= TIMEOUT_S + 5, "a request hung"
    last = summarize([o for o in run.outcomes if o.started >= run.phases["load"][1] - 5])
    assert last["statuses"] == {"200": last["requests"]}

    assert in_progress_files_say(server) > 0, "nothing was in flight when killed"
    assert total(server.metrics(), "bentoml_service_request_in_progress") == 0
    assert not list(server.prometheus_dir.glob(f"gauge_live*_{killed['pid']}.db"))


def in_progress_files_say(server) -> float:
    """What a scrape would report in progress now if dead workers' files were kept."""
    copy = server.prometheus_dir.parent / "prometheus-copy"
    shutil.copytree(server.prometheus_dir, copy)
    try:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(copy))
        return sum(
            sample.value
            for metric in registry.collect()
            for sample in metric.samples
            if sample.name == "bentoml_service_request_in_progress"
        )
    finally:
        shutil.rmtree(copy)
