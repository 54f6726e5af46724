"""``bentoml serve`` of this checkout's service on 127.0.0.1, in a process of its own.

What the demo, the tests and the benchmarks start: the server runs from the
repository root (``service:ImageClassifier`` is resolved there) on a free port, in
its own process group (``stop`` ends its workers too), writing its log to a file.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psutil

from visiontune.client import wait_until_ready
from visiontune.ports import free_port

REPO = Path(__file__).resolve().parents[1]
SERVICE = "service:ImageClassifier"
START_TIMEOUT_S = 120
WORKER_MODULE = "_bentoml_impl.worker.service"
STARTED = re.compile(r"\[entry_service:ImageClassifier:(\d+)\] Service ImageClassifier initialized")


class LocalServer:
    """A running ``bentoml serve SERVICE`` with ``env`` added to this process's environment;
    ``url``, ``client`` (an httpx client for it) and ``log``."""

    def __init__(self, env: dict[str, str], log: Path, service: str = SERVICE):
        self.env = env
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "bentoml", "serve", service]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with log.open("w") as out:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Until ``/readyz`` answers (``ClientError`` if the server exits or takes longer)."""
        wait_until_ready(self.url, timeout, server=self.process, interval=0.25)

    def wait_for_workers(self, count: int, timeout: float = START_TIMEOUT_S) -> None:
        """/readyz answers once any worker is ready; until ``count`` have started."""
        deadline = time.monotonic() + timeout
        while len(set(STARTED.findall(self.log.read_text()))) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers did not all start:\n{self.tail()}")
            time.sleep(0.25)

    def stop(self) -> None:
        self.client.close()
        stop_process_group(self.process)

    def workers(self) -> list[psutil.Process]:
        """The worker processes serving requests (BentoML restarts one that dies); a worker
        that has died but is not yet reaped is left out."""
        found = []
        for child in psutil.Process(self.process.pid).children(recursive=True):
            with suppress(psutil.NoSuchProcess):  # a zombie's too
                if WORKER_MODULE in " ".join(child.cmdline()):
                    found.append(child)
        return found

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> dict[str, dict[tuple, float]]:
        """``/metrics`` samples by name, then by sorted label pairs."""
        from prometheus_client.parser import text_string_to_metric_families

        samples: dict[str, dict[tuple, float]] = defaultdict(dict)
        for family in text_string_to_metric_families(self.client.get("/metrics").text):
            for sample in family.samples:
                samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
        return samples


def resident_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants (a server and its workers)."""
    root = psutil.Process(pid)
    total = 0
    for process in [root, *root.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:  # a worker that ended meanwhile holds nothing
            continue
    return total


def stop_process_group(process: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to a server started in a session of its own (and its workers), then SIGKILL
    if it is still there after ``timeout`` seconds."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout)


@contextmanager
def ready(server: LocalServer) -> Iterator[LocalServer]:
    """``server`` once it is ready, stopped on the way out (also when it never gets ready)."""
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def serving(env: dict[str, str], log: Path, service: str = SERVICE):
    """A ready server with ``env``, stopped on the way out."""
    return ready(LocalServer(env, log, service))


def total(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for key, v in samples.get(name, {}).items() if wanted <= set(key))
