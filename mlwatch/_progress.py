"""A minimal terminal progress bar for long CLI runs (drawn only on a terminal, 10 times a second)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``with Progress("profiling x.csv") as bar: bar.update(0.5, "1,000 rows")``."""

    def __init__(self, label: str, *, enabled: bool = True, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled and self.stream.isatty()
        self.label = label
        self.width = width
        self._last = 0.0
        self._start = time.monotonic()

    def update(self, fraction: float, detail: str = "", *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        fraction = min(max(fraction, 0.0), 1.0)
        filled = round(fraction * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        elapsed = now - self._start
        self.stream.write(f"\r{self.label} [{bar}] {fraction:6.1%} {detail} {elapsed:5.1f}s ")
        self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.enabled:
            if exc_type is None:
                self.update(1.0, force=True)
            self.stream.write("\n")
            self.stream.flush()
