"""Real servers: ``bentoml serve service:ImageClassifier`` in a subprocess on a free port.

Each server gets its own BENTOML_HOME (sharing the test store's models) because
``bentoml serve`` empties the Prometheus folder under BENTOML_HOME when it starts.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import REPO
from visiontune.client import ClientError, wait_until_ready

START_TIMEOUT_S = 120
SERVICE = "service:ImageClassifier"
WORKER_MODULE = "_bentoml_impl.worker.service"
STARTED = re.compile(r"\[entry_service:ImageClassifier:(\d+)\] Service ImageClassifier initialized")

# the bearer token of the servers started with auth on
API_TOKEN = "test-token-0123456789"
# small limits, so the bad-input tests stay cheap
LIMITS = {
    "VISIONTUNE_MAX_IMAGES": "8",
    "VISIONTUNE_MAX_BODY_MB": "1",
    "VISIONTUNE_MAX_PIXELS": "1000000",
    "VISIONTUNE_DRIFT_WINDOW": "12",
    "VISIONTUNE_TOP_K": "3",
}


class Server:
    """A running ``bentoml serve``; ``url``, ``log`` and a few helpers."""

    def __init__(self, home: Path, env: dict[str, str], service: str = SERVICE):
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = home / "serve.log"
        self.prometheus_dir = home / "prometheus_multiproc_dir"
        (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models")
        command = [sys.executable, "-m", "bentoml", "serve", service]
        command += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**os.environ, "BENTOML_HOME": str(home), **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self) -> None:
        try:
            wait_until_ready(self.url, START_TIMEOUT_S, server=self.process, interval=0.25)
        except ClientError as err:
            pytest.fail(f"bentoml serve: {err}:\n{self.tail()}")

    def stop(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def workers(self) -> list[psutil.Process]:
        """The worker processes serving requests (BentoML restarts one that dies)."""
        children = psutil.Process(self.process.pid).children(recursive=True)
        return [p for p in children if WORKER_MODULE in " ".join(p.cmdline())]

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def classify(self, paths: list[Path], **data) -> httpx.Response:
        files = [("images", (path.name, path.read_bytes(), "image/png")) for path in paths]
        return self.client.post("/classify", files=files, data=data)

    def metrics(self) -> dict[str, dict[tuple, float]]:
        """Samples by name, then by sorted label pairs."""
        text = self.client.get("/metrics").text
        samples: dict[str, dict[tuple, float]] = defaultdict(dict)
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
        return samples


@contextmanager
def serving(home: Path, env: dict[str, str], service: str = SERVICE) -> Iterator[Server]:
    """A ready server with ``env`` (running ``service``), stopped on the way out."""
    running = Server(home, env, service)
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


def wait_for_workers(server: Server, count: int) -> None:
    """/readyz answers once any worker is ready; some tests need every worker accepting."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(set(STARTED.findall(server.log.read_text()))) < count:
        assert time.monotonic() < deadline, f"workers did not all start:\n{server.tail()}"
        time.sleep(0.25)


def total(samples: dict[str, dict[tuple, float]], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for key, v in samples.get(name, {}).items() if wanted <= set(key))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tree_rss(pid: int) -> int:
    """Resident memory in bytes of a process and all its descendants (from /proc)."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children[int(fields[1])].append(int(stat.parent.name))
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        pending += children.get(current, [])
        try:
            status = Path(f"/proc/{current}/status").read_text()
        except OSError:
            continue
        total += next(
            (
                int(line.split()[1]) * 1024
                for line in status.splitlines()
                if line.startswith("VmRSS:")
            ),
            0,
        )
    return total
