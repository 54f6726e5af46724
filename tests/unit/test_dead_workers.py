"""A worker killed without cleaning up leaves no live gauge behind; live workers' stay."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from service.deadworkers import forget_dead_workers

WORKER = """
import sys, time
from prometheus_client import Counter, Gauge
Gauge("in_progress", "", multiprocess_mode="livesum").set(float(sys.argv[1]))
Counter("served", "").inc()
print("ready", flush=True)
time.sleep(600)
"""


def start_worker(directory, value: int) -> subprocess.Popen:
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(value)],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout.readline().strip() == "ready"
    return worker


def scrape(directory) -> dict[str, float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(directory))
    return {s.name: s.value for m in registry.collect() for s in m.samples}


def test_gauges_of_a_killed_worker_are_dropped_and_counters_kept(tmp_path):
    killed, alive = start_worker(tmp_path, 5), start_worker(tmp_path, 2)
    try:
        assert scrape(tmp_path)["in_progress"] == 7
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=10)
        assert scrape(tmp_path)["in_progress"] == 7, "the dead worker's value lingers"
        assert forget_dead_workers(tmp_path) == [killed.pid]
        samples = scrape(tmp_path)
        assert samples["in_progress"] == 2
        assert samples["served_total"] == 2
        assert forget_dead_workers(tmp_path) == []
    finally:
        for worker in (killed, alive):
            worker.kill()
            worker.wait(timeout=10)
