"""Progress of long work: a tqdm bar on a terminal, plain lines in a log.

A bar redraws itself with cursor escapes, which a log file or CI output keeps as
noise; off a terminal the same progress is a plain line every ``LINE_EVERY_S``
seconds and one when the work ends. ``visiontune`` commands, training and
``lr-find`` all report through ``Progress``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

LINE_EVERY_S = 10.0

T = TypeVar("T")


class Progress:
    """``update(n)`` as work finishes; ``close()`` when it ends.

    ``show=False`` (another process than the main one, a quiet caller) reports
    nothing; ``lines=False`` keeps the bar on a terminal but writes no plain
    lines (for an outer loop whose steps already print their own line).
    """

    def __init__(
        self,
        total: int | None,
        description: str,
        unit: str = "it",
        *,
        initial: int = 0,
        show: bool = True,
        lines: bool = True,
        leave: bool = True,
    ):
        self.total, self.description, self.unit = total, description, unit
        self.done = self.initial = self.done_at_line = initial
        self.started = self.last_line = time.monotonic()
        self.bar = None
        self.lines = show and lines
        if show and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=description, unit=unit, initial=initial, leave=leave)
            self.lines = False

    def update(self, count: int = 1) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        elif self.lines and time.monotonic() - self.last_line >= LINE_EVERY_S:
            self.line()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        elif self.lines and self.done != self.done_at_line:  # not the line just written again
            self.line()

    def line(self, extra: str = "") -> None:
        """One plain line: how far, how fast (and ``extra``)."""
        self.last_line, self.done_at_line = time.monotonic(), self.done
        rate = (self.done - self.initial) / max(self.last_line - self.started, 1e-9)
        total = f"/{self.total}" if self.total is not None else ""
        print(
            f"{self.description}: {self.done}{total} ({rate:.1f} {self.unit}/s){extra}",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(iterable: Iterable[T], total: int | None, description: str, **options) -> Iterator[T]:
    """Iterate ``iterable``, reporting one ``Progress`` step per item (options as ``Progress``)."""
    with Progress(total, description, **options) as progress:
        for item in iterable:
            yield item
            progress.update()
