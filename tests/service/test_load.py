"""The service under load (closed-loop clients posting digits, benchmarks/loadgen.py):
sustained, a burst past its in-flight limit, and a worker killed mid-load.

Bounded for `make test` (about two minutes); ``python -m benchmarks.load`` runs
the same scenarios at full length and reports the figures in BENCHMARKS.md.
"""

from __future__ import annotations

import shutil
import signal
import time

import psutil
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
    kills: list[dict] = []

    def kill_a_busy_worker(origin: float) -> None:
        """Kill a worker with requests in flight. Its requests may all end between the look
        and the kill: then it left no gauge to clean up, and its replacement is killed."""
        time.sleep(5)
        for _ in range(3):
            worker = busiest_worker(server)
            kills.append({"pid": worker.pid, "at": time.monotonic() - origin})
            worker.send_signal(signal.SIGKILL)
            psutil.wait_procs([worker], timeout=5)
            print("KILL", kills, in_progress_files_say(server, f"*_{worker.pid}.db"), flush=True)
            if in_progress_files_say(server, f"*_{worker.pid}.db") > 0:
                return
            wait_for_replacement(server, {kill["pid"] for kill in kills})

    phases = [Phase("load", 16, 30)]
    run = run_phases(server.url, payloads, phases, timeout_s=60, during=kill_a_busy_worker)
    assert kills, "no worker was killed"

    lost = [o for o in run.outcomes if o.status != 200]
    assert all(o.status is None for o in lost), summarize(lost)
    assert all(any(k["at"] - 1 <= o.started <= k["at"] + 5 for k in kills) for o in lost), lost
    assert max(o.seconds for o in run.outcomes) <= TIMEOUT_S + 5, "a request hung"
    last = summarize([o for o in run.outcomes if o.started >= run.phases["load"][1] - 5])
    assert last["statuses"] == {"200": last["requests"]}

    assert in_progress_files_say(server) > 0, f"nothing was in flight when killed: {kills}"
    assert total(server.metrics(), "bentoml_service_request_in_progress") == 0
    for kill in kills:
        assert not list(server.prometheus_dir.glob(f"gauge_live*_{kill['pid']}.db"))


def wait_for_replacement(server, killed: set[int], timeout_s: float = 60) -> None:
    """Until BentoML has started workers in place of the ``killed`` ones and they serve."""
    deadline = time.monotonic() + timeout_s
    while {w.pid for w in server.workers()} & killed or len(server.workers()) < 2:
        if time.monotonic() > deadline:
            return
        time.sleep(0.25)
    time.sleep(2)


def busiest_worker(server, within_s: float = 5.0):
    """The worker with the most requests in flight, as its own gauge file says: on a busy
    host the kernel may hand one worker every connection for a while, and a worker with
    nothing in flight would leave no gauge to clean up. The first worker if none has any
    within ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        workers = server.workers()
        in_flight = {w.pid: in_progress_files_say(server, f"*_{w.pid}.db") for w in workers}
        busiest = max(workers, key=lambda w: in_flight[w.pid])
        if in_flight[busiest.pid] > 0 or time.monotonic() > deadline:
            return busiest
        time.sleep(0.1)


def in_progress_files_say(server, files: str = "*.db") -> float:
    """What a scrape would report in progress now if dead workers' files were kept (of the
    gauge files matching ``files``)."""
    copy = server.prometheus_dir.parent / "prometheus-copy"
    copy.mkdir()
    for path in server.prometheus_dir.glob(files):
        shutil.copy(path, copy)
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
