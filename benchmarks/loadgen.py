"""Closed-loop load on a running server, and what it did to the server's memory.

Each client posts one image to ``/classify``, waits for the answer, and posts
again; a client answered 503 waits the ``Retry-After`` it was given. Every
request is recorded (``Outcome``), so a run can be summarised as a whole or by
time window. ``Phase`` runs a number of clients for some seconds; ``run_phases``
runs phases back to back (a burst is one phase with many clients) while
``MemorySampler`` reads the server's memory (its process tree's unique set size)
and ``/livez`` is polled to show the server stays alive. ``python -m benchmarks.load``
and the tests of tests/service/test_load.py share it.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import psutil

LIVEZ_INTERVAL_S = 0.25


@dataclass
class Outcome:
    started: float  # seconds since the run began
    seconds: float
    status: int | None  # None: no HTTP answer (connection refused, reset or timed out)
    phase: str
    error: str = ""
    retry_after: str | None = None


@dataclass
class Phase:
    name: str
    clients: int
    seconds: float


@dataclass
class Run:
    outcomes: list[Outcome]
    livez: list[tuple[float, float, int | None]]  # (started, seconds, status)
    memory: list[tuple[float, int]] = field(default_factory=list)  # (time, bytes)
    phases: dict[str, tuple[float, float]] = field(default_factory=dict)  # name: (start, end)

    def of(self, phase: str, skip_s: float = 0.0) -> list[Outcome]:
        start = self.phases[phase][0] + skip_s
        return [o for o in self.outcomes if o.phase == phase and o.started >= start]


def summarize(outcomes: list[Outcome]) -> dict:
    """Counts by status and latency percentiles (ms) of the answered requests (status 200)."""
    latencies = sorted(o.seconds * 1000 for o in outcomes if o.status == 200)
    statuses = Counter("connection error" if o.status is None else str(o.status) for o in outcomes)
    summary = {"requests": len(outcomes), "statuses": dict(sorted(statuses.items()))}
    if len(latencies) >= 2:
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        summary.update(p50_ms=cuts[49], p95_ms=cuts[94], p99_ms=cuts[98], max_ms=latencies[-1])
    return summary


def windows(outcomes: list[Outcome], start: float, width: float) -> list[dict]:
    """``summarize`` per window of ``width`` seconds of start time, from ``start``."""
    by_window: dict[int, list[Outcome]] = {}
    for outcome in outcomes:
        by_window.setdefault(int((outcome.started - start) // width), []).append(outcome)
    return [{"from_s": index * width, **summarize(by_window[index])} for index in sorted(by_window)]


class MemorySampler:
    """Samples the unique set size of a process and its descendants in a thread."""

    def __init__(self, pid: int, interval: float = 0.5):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._origin = time.monotonic()

    def __enter__(self) -> MemorySampler:
        self._origin = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> int:
        total = 0
        for process in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                total += process.memory_full_info().uss
        return total

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.monotonic() - self._origin, self.now()))
            self._stop.wait(self.interval)


def growth(samples: list[tuple[float, int]], start: float, end: float, part: float) -> dict:
    """Mean memory in the first and the last ``part`` seconds of [start, end]; their ratio - 1."""
    first = [v for t, v in samples if start <= t < start + part]
    last = [v for t, v in samples if end - part <= t <= end]
    first_mb, last_mb = statistics.mean(first) / 2**20, statistics.mean(last) / 2**20
    return {"first_mb": first_mb, "last_mb": last_mb, "growth": last_mb / first_mb - 1}


def run_phases(
    url: str,
    payloads: list[bytes],
    phases: list[Phase],
    *,
    timeout_s: float = 60,
    server_pid: int | None = None,
    during=None,
) -> Run:
    """Run ``phases`` back to back; ``during(run_started)`` is called in a thread as they begin."""
    sampler = MemorySampler(server_pid) if server_pid else None
    if sampler:
        sampler.__enter__()
    try:
        run = asyncio.run(_run(url, payloads, phases, timeout_s, during))
    finally:
        if sampler:
            sampler.__exit__(None, None, None)
    if sampler:
        run.memory = sampler.samples
    return run


async def _run(url, payloads, phases, timeout_s, during) -> Run:
    run = Run(outcomes=[], livez=[])
    origin = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    # one connection per client, kept from phase to phase, as a real client would
    sessions = [
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), timeout=timeout)
        for _ in range(max(phase.clients for phase in phases) + 1)
    ]
    try:
        stop_livez = asyncio.Event()
        livez = asyncio.create_task(_poll_livez(sessions[-1], url, origin, run, stop_livez))
        if during is not None:
            asyncio.get_running_loop().run_in_executor(None, during, origin)
        for phase in phases:
            started = time.monotonic() - origin
            deadline = time.monotonic() + phase.seconds
            clients = [
                _client(sessions[i], url, payloads, i, deadline, origin, phase.name, run.outcomes)
                for i in range(phase.clients)
            ]
            await asyncio.gather(*clients)
            run.phases[phase.name] = (started, time.monotonic() - origin)
        stop_livez.set()
        await livez
    finally:
        await asyncio.gather(*(session.close() for session in sessions))
    return run


async def _client(session, url, payloads, index, deadline, origin, phase, outcomes) -> None:
    turn = index
    while time.monotonic() < deadline:
        data = payloads[turn % len(payloads)]
        turn += 1
        form = aiohttp.FormData()
        form.add_field("images", data, filename="image.png", content_type="image/png")
        started = time.monotonic()
        outcome = Outcome(started - origin, 0.0, None, phase)
        try:
            async with session.post(f"{url}/classify", data=form) as response:
                await response.read()
                outcome.status = response.status
                outcome.retry_after = response.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as err:
            outcome.error = f"{type(err).__name__}: {err}"
        outcome.seconds = time.monotonic() - started
        outcomes.append(outcome)
        if outcome.status == 503:
            await asyncio.sleep(float(outcome.retry_after or 1))
        elif outcome.status is None:
            await asyncio.sleep(0.1)


async def _poll_livez(session, url, origin, run, stop) -> None:
    while not stop.is_set():
        started = time.monotonic()
        status = None
        try:
            async with session.get(f"{url}/livez", timeout=aiohttp.ClientTimeout(total=5)) as r:
                status = r.status
        except (aiohttp.ClientError, TimeoutError):
            pass
        run.livez.append((started - origin, time.monotonic() - started, status))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), LIVEZ_INTERVAL_S)
