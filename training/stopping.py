"""Ctrl-C and SIGTERM during training: a checkpoint and a one-line exit, never a half-written file.

A signal means something different depending on where training is:

- outside the training loop (loading the data, building the model, calibrating)
  it stops at once with :class:`Interrupted`, which names the last checkpoint if
  there is one;
- inside the loop the first signal is only a request: the loop completes its
  optimizer step, writes a checkpoint and stops (on every process at the same
  step, see ``training.train``); a second signal stops at once, leaving the last
  complete checkpoint as it was;
- inside :meth:`StopRequests.critical` (writing a checkpoint, copying the model
  into the store) signals are only recorded, so the write always completes.

This module imports nothing heavy, so the CLI can install the handlers before it
imports torch: a signal during those first seconds ends with the same one line.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal; ``path`` is the checkpoint ``--resume`` continues from.

    A ``KeyboardInterrupt`` like Ctrl-C's own, so no ``except Exception`` on the way
    (a library wrapping its errors) turns it into another error.
    """

    def __init__(self, path: Path | None):
        if path is None:
            message = "interrupted before a checkpoint was saved; nothing to resume, start again"
        else:
            message = f"interrupted; checkpoint saved in {path}, continue with --resume"
        super().__init__(message)
        self.path = path


class StopRequests:
    """SIGINT/SIGTERM handlers for the duration of a ``with`` block (main thread only)."""

    def __init__(self):
        self.requested = False
        self.checkpoint: Path | None = None  # the last complete checkpoint
        self._in_loop = False
        self._critical = 0
        self._previous: dict[int, object] = {}
        self._pid = os.getpid()

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
        return False

    @contextmanager
    def loop(self):
        """The training loop: a first signal is a request the loop acts on at a step boundary."""
        self._in_loop = True
        try:
            yield self
        finally:
            self._in_loop = False

    @contextmanager
    def critical(self):
        """Signals are recorded but not acted on until the block (a file write) completes."""
        self._critical += 1
        try:
            yield self
        finally:
            self._critical -= 1

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker: Python's own behaviour
            if signum == signal.SIGINT:
                raise KeyboardInterrupt  # which the worker loop ignores: the main process decides
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        first = not self.requested
        self.requested = True
        if self._critical or (self._in_loop and first):
            return
        raise Interrupted(self.checkpoint)
