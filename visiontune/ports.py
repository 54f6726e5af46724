"""A free TCP port on 127.0.0.1, for the servers visiontune starts (the demo, a local
release's pods, a port-forward) and for those the tests and benchmarks start."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A port nothing listens on now (the OS's choice; another process may take it first)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
