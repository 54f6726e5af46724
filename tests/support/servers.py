"""Real servers for the tests: ``visiontune.localserver`` with a BentoML home of their own.

Each server gets its own BENTOML_HOME (sharing the test store's models) because
``bentoml serve`` empties the Prometheus folder under BENTOML_HOME when it starts.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from visiontune.client import ClientError
from visiontune.localserver import SERVICE, START_TIMEOUT_S, LocalServer, ready, total
from visiontune.ports import free_port

__all__ = [
    "API_TOKEN",
    "LIMITS",
    "START_TIMEOUT_S",
    "Burst",
    "Server",
    "burst_until_batched",
    "free_port",
    "post_together",
    "released_together",
    "serving",
    "total",
    "wait_for_workers",
]

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


class Server(LocalServer):
    """A ``LocalServer`` in ``home`` (its BENTOML_HOME, its log ``serve.log``)."""

    def __init__(self, home: Path, env: dict[str, str], service: str = SERVICE):
        self.prometheus_dir = home / "prometheus_multiproc_dir"
        (home / "models").symlink_to(Path(os.environ["BENTOML_HOME"]) / "models")
        super().__init__({"BENTOML_HOME": str(home), **env}, home / "serve.log", service)
        self.env = env

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        try:
            super().wait_ready(timeout)
        except ClientError as err:
            pytest.fail(f"bentoml serve: {err}:\n{self.tail()}")

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> str:
        """The server's log once ``pattern`` (a regular expression) is in it: a line about a
        request may be written just after the request is answered."""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, log := self.log.read_text(errors="replace")):
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern!r} in the log within {timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.2)
        return log

    def classify(self, paths: list[Path], **data):
        files = [("images", (path.name, path.read_bytes(), "image/png")) for path in paths]
        return self.client.post("/classify", files=files, data=data)


def serving(home: Path, env: dict[str, str], service: str = SERVICE):
    """A ready server with ``env`` (running ``service``), stopped on the way out."""
    return ready(Server(home, env, service))


def wait_for_workers(server: Server, count: int) -> None:
    """/readyz answers once any worker is ready; some tests need every worker accepting."""
    try:
        server.wait_for_workers(count)
    except TimeoutError as err:
        pytest.fail(str(err))


# BentoML's histogram of how many requests each adaptive batch held
BATCH_SIZE = "bentoml_service_adaptive_batch_size"


@dataclass
class Burst:
    """One burst of requests: what ``send`` returned and the server's metrics around it."""

    results: list
    before: dict
    after: dict

    def grew(self, name: str, **labels: str) -> float:
        return total(self.after, name, **labels) - total(self.before, name, **labels)

    def requests_and_batches(self, method_name: str) -> tuple[float, float]:
        return (
            self.grew(f"{BATCH_SIZE}_sum", method_name=method_name),
            self.grew(f"{BATCH_SIZE}_count", method_name=method_name),
        )


def burst_until_batched(
    server: Server, method_name: str, send: Callable[[], list], attempts: int = 4
) -> Burst:
    """Run ``send`` (concurrent requests of one image each) until a batch of ``method_name``
    held more than one request, at most ``attempts`` times; the last burst.

    Requests share a batch only when some arrive while another batch runs: on a busy
    host the scheduler may serve a whole burst one by one, so one burst without a shared
    batch is chance; a server that never batches fails every attempt.
    """
    for _ in range(attempts):
        before = server.metrics()
        results = send()
        burst = Burst(results, before, server.metrics())
        requests, batches = burst.requests_and_batches(method_name)
        if batches < requests:
            return burst
    return burst


def released_together(
    items: list, connect: Callable[[], AbstractContextManager], send: Callable
) -> list:
    """``send(connection, item)`` for each item, from a thread of its own over a connection
    that ``connect()`` opened beforehand, all released at once so that the requests reach
    the server together (one thread sending them one after another may let the server
    finish each before the next arrives); the results, in order."""
    barrier = threading.Barrier(len(items))

    def run(item):
        with connect() as connection:
            barrier.wait()
            return send(connection, item)

    with ThreadPoolExecutor(len(items)) as pool:
        return list(pool.map(run, items))


def post_together(url: str, route: str, paths: list[Path]) -> list[int]:
    """POST each file to ``route``, all at once (:func:`released_together`); the statuses."""

    @contextmanager
    def connect():
        with httpx.Client(base_url=url, timeout=60) as client:
            client.get("/livez")
            yield client

    def post(client: httpx.Client, path: Path) -> int:
        files = [("images", (path.name, path.read_bytes(), "image/png"))]
        return client.post(route, files=files).status_code

    return released_together(paths, connect, post)
