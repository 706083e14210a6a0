"""How a global batch is split by rows across data-parallel workers (no framework imported: the
configuration checks it too)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError


def shard_rows(batch: int, workers: int) -> int:
    """Rows per worker for a global batch of ``batch`` rows, or :class:`ConfigError` naming the
    worker counts and batch sizes that fit."""
    if batch % workers:
        fits = [n for n in range(1, batch + 1) if batch % n == 0]
        raise ConfigError(
            f"batch size {batch} cannot be split evenly across {workers} data-parallel workers; "
            f"use a worker count that divides it ({', '.join(map(str, fits[:12]))}"
            f"{', ...' if len(fits) > 12 else ''}) or a batch size that is a multiple of "
            f"{workers} (e.g. {(batch // workers + 1) * workers})"
        )
    return batch // workers


def check_workers(workers: Any) -> int:
    """``workers`` as a positive int, or :class:`ConfigError`."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"the data-parallel worker count must be an integer >= 1, got "
                          f"{workers!r}")  # fmt: skip
    return workers


def row_slice(x: Any, rank: int, rows: int) -> Any:
    """Rows ``rank * rows`` up to ``(rank + 1) * rows`` of ids (B, T) or of a carry, whose row
    axis is the one before last ((B, H) or (S * L * D, B, H))."""
    return x[..., rank * rows : (rank + 1) * rows, :]
