"""Progress of a long scoring run: a bar on a terminal, a plain line every few seconds in a log."""

from __future__ import annotations

import sys
import time

LINE_EVERY_S = 10.0


class Progress:
    """``update(n)`` as images finish; a tqdm bar when stderr is a terminal, else plain lines."""

    def __init__(self, total: int, description: str = "scoring"):
        self.total, self.description = total, description
        self.done = 0
        self.started = self.last_line = time.monotonic()
        self.bar = None
        if sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=description, unit="img")

    def update(self, count: int) -> None:
        self.done += count
        if self.bar is not None:
            self.bar.update(count)
        elif time.monotonic() - self.last_line >= LINE_EVERY_S:
            self._line()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        else:
            self._line()

    def _line(self) -> None:
        self.last_line = time.monotonic()
        rate = self.done / max(self.last_line - self.started, 1e-9)
        print(
            f"{self.description}: {self.done}/{self.total} images ({rate:.1f}/s)",
            file=sys.stderr,
            flush=True,
        )
