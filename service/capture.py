"""Capture: a share of the live traffic, images and answers, written off the request path.

``VISIONTUNE_CAPTURE`` (a folder or an fsspec URL) turns it on. What is kept
(``Sampler``): every image of a share ``VISIONTUNE_CAPTURE_RATE`` of requests
(records of reason ``sampled``: a fair sample of the traffic), and every other
answer whose score is below ``VISIONTUNE_LOW_CONFIDENCE`` (``low_confidence``,
with ``VISIONTUNE_CAPTURE_LOW_CONFIDENCE``, on by default). The layout and the
record are ``contract.capture``'s.

A request never waits for capture and never fails because of it: the answer
path only puts what it keeps on a bounded queue (``CaptureWriter.offer``); a
writer thread writes the images, then one JSON Lines file per batch of records.
A full queue (a slow store), a failing store and a full budget
(``VISIONTUNE_CAPTURE_MAX_GB``, or a disk nearly full) drop captures, counted by
reason (``visiontune_capture_dropped_total``). Low-confidence answers may fill
the whole queue, sampled ones only half of it: under pressure the captures
worth labelling come first. On a local folder every file is written under a
temporary name and renamed (an object store's put is atomic already), so a
reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import count

from contract.capture import CaptureError, CaptureRecord, open_location, partition

logger = logging.getLogger("bentoml.visiontune")

CAPTURE_ENV = "VISIONTUNE_CAPTURE"
MIN_FREE_BYTES = 512 * 2**20  # a local disk with less free space than this takes no capture
REMEASURE_S = 60.0  # how often the capture's size is measured again (other writers add to it)
BATCH_RECORDS = 256  # most records in one JSON Lines file


@dataclass
class Capture:
    """One image to keep: its record (which names the image's path) and its bytes;
    ``priority`` (a low-confidence answer) may use the whole queue."""

    record: CaptureRecord
    image: bytes
    priority: bool = False


class Sampler:
    """Which answers are kept: a sampled request's images, and every low-confidence one."""

    def __init__(self, rate: float, low_confidence: float | None, rng: random.Random | None = None):
        self.rate = rate
        self.low_confidence = low_confidence
        self.random = rng or random.Random()

    def sample_request(self) -> bool:
        return self.rate > 0 and self.random.random() < self.rate

    def is_low(self, score: float) -> bool:
        return self.low_confidence is not None and score < self.low_confidence

    def reason(self, score: float, sampled: bool) -> str | None:
        """Why an answer with ``score`` in a request (``sampled`` or not) is kept, or None.

        ``sampled`` first: the images of sampled requests are a fair sample of the traffic
        (``visiontune shadow report`` counts only those); the rest are low-confidence extras.
        """
        if sampled:
            return "sampled"
        return "low_confidence" if self.is_low(score) else None


@dataclass
class CaptureCounters:
    """What the writer reports, per capture, by the tag of the model that answered; the
    service passes its Prometheus counters."""

    written: Callable[[str, int], None] = lambda model, size: None
    dropped: Callable[[str, str], None] = lambda model, reason: None
    full: Callable[[bool], None] = lambda full: None


class CaptureWriter:
    """A bounded queue and one thread writing what is offered to the capture's store."""

    def __init__(
        self,
        url: str,
        max_bytes: int,
        queue_size: int = 1024,
        counters: CaptureCounters | None = None,
        remeasure_s: float = REMEASURE_S,
    ):
        self.url = url
        self.fs, self.root = open_location(url, CAPTURE_ENV)
        self.local = "file" in _protocols(self.fs)
        self.max_bytes = max_bytes
        self.counters = counters or CaptureCounters()
        self.queue: queue.Queue[Capture | None] = queue.Queue(queue_size)
        self.remeasure_s = remeasure_s
        self.used = 0
        self.measured_at = 0.0
        self.full = False
        self.prefix = f"{socket.gethostname()}-{os.getpid()}"
        self.sequence = count()
        self.thread: threading.Thread | None = None

    def check(self) -> None:
        """Create the root and write and delete a file there: a store that can't be written
        stops the server at start, with the variable named."""
        probe = f"{self.root}/.visiontune-probe-{self.prefix}"
        try:
            self.fs.makedirs(self.root, exist_ok=True)
            self.fs.pipe_file(probe, b"visiontune")
            self.fs.rm_file(probe)
        except Exception as err:  # any store's error: the user needs it named
            raise CaptureError(f"{CAPTURE_ENV}={self.url}: can't write there ({err})") from None

    def start(self) -> CaptureWriter:
        self.check()
        self._measure()
        self.thread = threading.Thread(target=self._run, name="visiontune-capture", daemon=True)
        self.thread.start()
        return self

    def offer(self, capture: Capture) -> bool:
        """Queue one capture without waiting; False (and counted) when it is dropped."""
        if not capture.priority and self.queue.qsize() >= self.half:
            self.counters.dropped(capture.record.answer.model, "queue_full")
            return False
        try:
            self.queue.put_nowait(capture)
        except queue.Full:
            self.counters.dropped(capture.record.answer.model, "queue_full")
            return False
        return True

    @property
    def half(self) -> int:
        return max(1, self.queue.maxsize // 2)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds) and stop the thread."""
        if self.thread is None:
            return
        try:
            self.queue.put(None, timeout=timeout)
        except queue.Full:
            logger.warning(
                "capture: the queue did not drain in %.0fs; its captures are lost", timeout
            )
            return
        self.thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < BATCH_RECORDS:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._write(batch)
                    return
                batch.append(item)
            self._write(batch)

    def _write(self, batch: list[Capture]) -> None:
        if time.monotonic() - self.measured_at > self.remeasure_s:
            self._measure()
        by_hour: dict[str, list[tuple[Capture, bytes]]] = {}
        for capture in batch:
            line = (capture.record.model_dump_json() + "\n").encode()
            reason = self._no_room(len(capture.image) + len(line))
            if reason is None:
                by_hour.setdefault(partition(capture.record.time), []).append((capture, line))
                self.used += len(capture.image) + len(line)
            else:
                self._set_full(True)
                self.counters.dropped(capture.record.answer.model, reason)
        for hour, captures in by_hour.items():
            size = sum(len(capture.image) + len(line) for capture, line in captures)
            try:
                self._write_hour(hour, captures)
            except Exception as err:  # any store's error drops the batch, never the server
                logger.warning(
                    "capture: writing %d records to %s failed: %s", len(captures), hour, err
                )
                self.used -= size
                for capture, _ in captures:
                    self.counters.dropped(capture.record.answer.model, "write_error")
                continue
            for capture, line in captures:
                self.counters.written(capture.record.answer.model, len(capture.image) + len(line))

    def _no_room(self, size: int) -> str | None:
        """Why ``size`` more bytes can't be written (None: they can)."""
        if self.used + size > self.max_bytes:
            return "budget_full"
        if self.local and shutil.disk_usage(self.root).free - size < MIN_FREE_BYTES:
            return "disk_full"
        return None

    def _write_hour(self, hour: str, captures: list[tuple[Capture, bytes]]) -> None:
        """The images, then their records in one file: a record never names a missing image."""
        for capture, _ in captures:
            self._put(f"{self.root}/{capture.record.image}", capture.image)
        name = f"{self.prefix}-{time.time_ns()}-{next(self.sequence)}.jsonl"
        self._put(f"{self.root}/{hour}/{name}", b"".join(line for _, line in captures))

    def _put(self, path: str, data: bytes) -> None:
        """Write a whole file: under a hidden name and renamed on a local disk."""
        parent = path.rsplit("/", 1)[0]
        if not self.local:
            self.fs.pipe_file(path, data)
            return
        os.makedirs(parent, exist_ok=True)
        temporary = f"{parent}/.{path.rsplit('/', 1)[1]}.tmp"
        with open(temporary, "wb") as file:
            file.write(data)
        os.replace(temporary, path)

    def _measure(self) -> None:
        """The capture's size as its store says (other workers and pods write there too)."""
        try:
            self.used = int(self.fs.du(self.root, total=True)) if self.fs.exists(self.root) else 0
        except Exception as err:  # keep counting our own writes if the store won't say
            logger.warning("capture: can't measure %s: %s", self.url, err)
        self.measured_at = time.monotonic()
        self._set_full(self._no_room(0) is not None)

    def _set_full(self, full: bool) -> None:
        if full == self.full:
            return
        self.full = full
        self.counters.full(full)
        if full:
            logger.warning(
                "capture: %s holds %.3g GB, at its budget (VISIONTUNE_CAPTURE_MAX_GB=%.3g) or "
                "its disk is nearly full: capture stops until there is room",
                self.url,
                self.used / 1e9,
                self.max_bytes / 1e9,
            )
        else:
            logger.info("capture: %s has room again: capture resumes", self.url)


def _protocols(fs) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)
