"""The local release's front door: an nginx process on the published port.

podman cannot publish one host port from two pods, so the published port
belongs to nginx, which forwards to the pod serving (a loopback port of its
own). Switching pods rewrites the upstream and sends nginx a graceful reload:
new connections go to the new pod at once, and the workers started before the
reload finish the requests they hold, on the old pod, before they exit. The
old pod is removed only after that (``wait_drained``), so no request fails.

nginx runs as a daemon from a prefix folder of its own (config, pid file,
logs, temp files) and outlives the `visiontune deploy` that started it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import psutil

from visiontune.errors import CommandError

CONFIG = """\
# Written by `visiontune deploy` (visiontune/lifecycle/proxy.py); rewritten on each release.
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_shutdown_timeout {drain_seconds}s;
events {{
    worker_connections 512;
}}
http {{
    access_log off;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    # The service enforces its own body limit and answers 413 itself.
    client_max_body_size 0;
    proxy_read_timeout 300s;
    upstream visiontune {{
        server 127.0.0.1:{upstream};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://visiontune;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
        }}
    }}
}}
"""
SHUTTING_DOWN = "worker process is shutting down"


class Proxy:
    """nginx on ``127.0.0.1:port``, forwarding to one upstream port at a time."""

    def __init__(self, prefix: Path, port: int, drain_seconds: int = 120):
        self.prefix = prefix
        self.port = port
        self.drain_seconds = drain_seconds
        self.config = prefix / "nginx.conf"

    def switch(self, upstream: int) -> None:
        """Send new connections to ``127.0.0.1:upstream``; start nginx if it isn't running."""
        binary = shutil.which("nginx")
        if binary is None:
            raise CommandError("nginx is not installed: run `make podman` (docs/operations.md)")
        for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.prefix / "tmp" / folder).mkdir(parents=True, exist_ok=True)
        candidate = self.prefix / "nginx.conf.new"
        candidate.write_text(
            CONFIG.format(
                prefix=self.prefix,
                port=self.port,
                upstream=upstream,
                drain_seconds=self.drain_seconds,
            )  # fmt: skip
        )
        _nginx(binary, "-t", "-q", "-c", candidate)
        os.replace(candidate, self.config)
        if self.master() is None:
            _nginx(binary, "-c", self.config)
        else:
            _nginx(binary, "-c", self.config, "-s", "reload")

    def master(self) -> psutil.Process | None:
        """The running nginx master of this prefix, if any."""
        try:
            process = psutil.Process(int((self.prefix / "nginx.pid").read_text()))
        except (FileNotFoundError, ValueError, psutil.NoSuchProcess):
            return None
        return process if "nginx: master" in " ".join(process.cmdline()) else None

    def wait_drained(self) -> None:
        """Until the workers of configurations before the last reload have exited."""
        deadline = time.monotonic() + self.drain_seconds + 10
        while (master := self.master()) is not None and time.monotonic() < deadline:
            old = [p for p in master.children() if SHUTTING_DOWN in " ".join(_cmdline(p))]
            if not old:
                return
            time.sleep(0.2)

    def stop(self) -> None:
        """Stop nginx gracefully (requests in flight finish) and wait for it to exit."""
        master = self.master()
        if master is None:
            return
        master.send_signal(3)  # SIGQUIT: nginx's graceful shutdown
        try:
            master.wait(timeout=self.drain_seconds + 10)
        except psutil.TimeoutExpired:
            master.kill()


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.NoSuchProcess:
        return []


def _nginx(binary: str, *args) -> None:
    result = subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit {result.returncode}"]
        raise CommandError(f"nginx {' '.join(map(str, args))}: {lines[-1]}")
