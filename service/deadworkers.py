"""Gauges of workers that died without cleaning up are dropped before /metrics answers.

In multiprocess mode each worker writes its gauges to files named with its pid
under ``PROMETHEUS_MULTIPROC_DIR``, and ``/metrics`` merges every file there. A
``livesum``/``livemax`` gauge (BentoML's ``bentoml_service_request_in_progress``,
our ``visiontune_label_drift``) only counts live processes because a worker's
files are removed by ``prometheus_client.multiprocess.mark_process_dead``, which
BentoML calls when a worker exits cleanly. A worker killed by SIGKILL or the
OOM killer never does, and its last values would stay in every scrape: requests
"in progress" for ever, feeding the HPA and the alerts. ``ForgetDeadWorkers``
marks such workers dead (their process is gone, or a zombie) before each scrape.
Counters and histograms are kept: what a dead worker served still happened.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import psutil
from prometheus_client import multiprocess

LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


def forget_dead_workers(directory: str | Path) -> list[int]:
    """Remove the live-gauge files of processes that no longer run; their pids."""
    pids = {
        int(match.group(1))
        for name in os.listdir(directory)
        if (match := LIVE_GAUGE_FILE.match(name))
    }
    dead = sorted(pid for pid in pids if not _running(pid))
    for pid in dead:
        multiprocess.mark_process_dead(pid, str(directory))
    return dead


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


class ForgetDeadWorkers:
    """ASGI middleware: sweep dead workers' gauges before ``GET /metrics`` is answered."""

    def __init__(self, app, path: str = "/metrics"):
        self.app = app
        self.path = path

    async def __call__(self, scope, receive, send):
        directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if scope["type"] == "http" and scope["path"] == self.path and directory:
            forget_dead_workers(directory)
        await self.app(scope, receive, send)
