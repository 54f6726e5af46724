"""A real Label Studio on localhost, and the few calls of its HTTP API the tests make.

`make label-studio` installs it in a venv of its own (.venv-label-studio: about
1 GB of Django and friends, kept out of the project's) and migrates an empty
database once into .venv-label-studio/template; each start copies that
template, so a start takes seconds instead of the minutes a fresh migration
takes. The user is created on the command line with a legacy API token and
the organization's legacy tokens switched on (`--user-token`,
`--enable-legacy-api-token`: since 1.23 new organizations have them off), so
the API takes `Authorization: Token ...` with no login flow.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support import REPO
from tests.support.needs import need
from tests.support.servers import free_port

VENV = REPO / ".venv-label-studio"
TEMPLATE = VENV / "template"
USER = "labeller@example.com"
PASSWORD = "visiontune-test-password"
TOKEN = "visiontune0123456789abcdef0123456789abcd"
START_TIMEOUT_S = 300
# No calls home: the version check on PyPI, analytics.
QUIET = {"LABEL_STUDIO_LATEST_VERSION_CHECK": "false", "LABEL_STUDIO_COLLECT_ANALYTICS": "false"}


class LabelStudio:
    """A running Label Studio: ``url``, ``log`` and its API with the user's token."""

    def __init__(self, url: str, log: Path):
        self.url = url
        self.log = log
        self.api = httpx.Client(
            base_url=url, headers={"Authorization": f"Token {TOKEN}"}, timeout=60
        )

    def call(self, method: str, path: str, **kwargs):
        response = self.api.request(method, path, **kwargs)
        assert response.status_code < 300, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json()

    def create_project(self, title: str, label_config: str) -> int:
        return self.call(
            "POST", "/api/projects", json={"title": title, "label_config": label_config}
        )["id"]

    def import_tasks(self, project: int, tasks: list[dict]) -> int:
        return self.call("POST", f"/api/projects/{project}/import", json=tasks)["task_count"]

    def tasks(self, project: int) -> list[dict]:
        answer = self.call("GET", "/api/tasks", params={"project": project, "page_size": 1000})
        return answer["tasks"]

    def annotate(self, task: int, result: list[dict]) -> dict:
        return self.call("POST", f"/api/tasks/{task}/annotations", json={"result": result})

    def export(self, project: int) -> list[dict]:
        return self.call("GET", f"/api/projects/{project}/export", params={"exportType": "JSON"})


@contextmanager
def label_studio(folder: Path) -> Iterator[LabelStudio]:
    """Label Studio on a free loopback port with its data in ``folder``; stopped on the way out."""
    need(
        (VENV / ".installed").exists(),
        "Label Studio (`make label-studio`: its own venv, .venv-label-studio)",
    )
    data = folder / "data"
    shutil.copytree(TEMPLATE, data)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        VENV / "bin" / "label-studio", "start", "--no-browser",
        "--internal-host", "127.0.0.1", "--port", str(port),
        "--username", USER, "--password", PASSWORD,
        "--user-token", TOKEN, "--enable-legacy-api-token",
    ]  # fmt: skip
    env = {**os.environ, **QUIET, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "DJANGO_DB": "sqlite"}
    log = folder / "label-studio.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(part) for part in command],
            cwd=folder,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_healthy(url, process, log)
        yield LabelStudio(url, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _wait_healthy(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        assert process.poll() is None, f"Label Studio exited:\n{tail}"
        assert time.monotonic() < deadline, f"Label Studio not up in {START_TIMEOUT_S}s:\n{tail}"
        time.sleep(0.5)
