"""Real servers for the tests: ``visiontune.localserver`` with a BentoML home of their own.

Each server gets its own BENTOML_HOME (sharing the test store's models) because
``bentoml serve`` empties the Prometheus folder under BENTOML_HOME when it starts.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from visiontune.client import ClientError
from visiontune.localserver import SERVICE, START_TIMEOUT_S, LocalServer, ready, total
from visiontune.ports import free_port

__all__ = [
    "API_TOKEN",
    "LIMITS",
    "START_TIMEOUT_S",
    "Server",
    "free_port",
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
