"""A progress bar on stderr (images done, rate, ETA); plain lines now and then when stderr is a file or a pipe."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

_BAR_WIDTH = 30
_LINE_INTERVAL = 10.0
"""Seconds between plain lines, so a log file is not flooded."""


class ProgressBar:
    def __init__(
        self,
        total: int,
        done: int = 0,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.done = done
        self._resumed_at = done  # images an earlier run finished do not count toward this run's rate
        self._stream = stream or sys.stderr
        self._clock = clock
        self._started = clock()
        self._last_line = -_LINE_INTERVAL
        self._interactive = self._stream.isatty()

    def advance(self) -> None:
        self.done += 1
        now = self._clock() - self._started
        if self._interactive:
            self._stream.write(f"\r{self.status(now)}")
            self._stream.flush()
        elif now - self._last_line >= _LINE_INTERVAL or self.done == self.total:
            self._stream.write(f"{self.status(now)}\n")
            self._stream.flush()
            self._last_line = now

    def finish(self) -> None:
        if self._interactive:
            self._stream.write("\n")
            self._stream.flush()

    def status(self, elapsed: float) -> str:
        filled = _BAR_WIDTH * self.done // max(self.total, 1)
        bar = "#" * filled + "." * (_BAR_WIDTH - filled)
        rate = (self.done - self._resumed_at) / elapsed if elapsed > 0 else 0.0
        remaining = self.total - self.done
        eta = _clock_time(remaining / rate) if rate > 0 else "--:--"
        return f"[{bar}] {self.done}/{self.total} images  {rate:.1f} img/s  ETA {eta}"


def _clock_time(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes:02d}:{seconds:02d}"
