"""A dependency-free progress bar on stderr (quiet when stderr is not a terminal)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import TextIO


class Progress:
    """``with Progress(total, label) as bar: bar.update(n, **fields)``; leaving the block, by any
    exit, ends the bar's line (or call ``close()``, which only acts once)."""

    def __init__(
        self, total: int, label: str = "", enabled: bool | None = None, stream: TextIO | None = None
    ) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.total = max(total, 1)
        self.label = label
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self.closed = False

    def update(self, n: int = 1, **fields: float | str) -> None:
        self.done += n
        now = time.perf_counter()
        if not self.enabled or (now - self._last < 0.1 and self.done < self.total):
            return
        self._last = now
        width = 24
        filled = int(width * min(self.done, self.total) / self.total)
        bar = "#" * filled + "-" * (width - filled)
        info = " ".join(
            f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items()
        )
        elapsed = now - self.start
        self.stream.write(
            f"\r{self.label:<12} [{bar}] {self.done}/{self.total} {elapsed:5.1f}s {info}\x1b[K"
        )
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and not self.closed:
            self.stream.write("\n")
            self.stream.flush()
        self.closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
