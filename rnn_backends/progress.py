"""Progress on standard error for train, compare and bench.

Three modes, chosen once per :class:`Progress`:

* ``"bar"``: a tqdm bar (position, rate, ETA and the caller's fields such as the loss and the
  last validation perplexity); the default when standard error is a terminal;
* ``"lines"``: no bar and nothing per step; one plain line per finished unit of work (an epoch, a
  measurement) with the position, the elapsed time and the ETA; the default otherwise (a pipe, a
  log file, a CI job, a compare worker whose standard error is not a terminal);
* ``"off"``: nothing.

Callers see only :class:`Progress`: tqdm is imported here and nowhere else, so the library
behind the bar can change without touching train, compare or bench.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Literal, TextIO

from tqdm import tqdm

Mode = Literal["bar", "lines", "off"]


def choose_mode(enabled: bool | None, stream: TextIO) -> Mode:
    """``enabled=False``: off; ``True``: a bar even when ``stream`` is not a terminal; ``None``:
    a bar on a terminal, plain lines elsewhere."""
    if enabled is False:
        return "off"
    if enabled:
        return "bar"
    try:
        return "bar" if stream.isatty() else "lines"
    except (AttributeError, ValueError):  # a closed or file-like stream without isatty
        return "lines"


def format_seconds(seconds: float) -> str:
    """``"7.2s"``, ``"3m05s"``, ``"2h01m"``: short and unambiguous in a log line."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _format_field(value: float | int | str) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


class Progress:
    """``with Progress(total, label) as p: p.update(1, loss=...); p.report("epoch 1/3: ...")``.

    Arguments:
        total: units of ``update`` in the whole task (e.g. training steps).
        label: the task's name, first on every line (e.g. the backend's name).
        enabled: see :func:`choose_mode`.
        stream: default ``sys.stderr`` (standard output stays for results).
        unit: what ``update`` counts, shown by the bar.
        initial: units already done (a resumed run); the ETA counts only what this process does.

    Leaving the ``with`` block by any exit ends the bar's line (``close()`` acts once).
    """

    def __init__(
        self,
        total: int,
        label: str = "",
        enabled: bool | None = None,
        stream: TextIO | None = None,
        unit: str = "step",
        initial: int = 0,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.mode: Mode = choose_mode(enabled, self.stream)
        self.total = max(int(total), 1)
        self.label = label
        self.done = initial
        self._initial = initial
        self._start = time.perf_counter()
        self._bar: tqdm | None = None
        if self.mode == "bar":
            self._bar = tqdm(
                total=self.total, initial=initial, desc=label, unit=unit, file=self.stream,
                dynamic_ncols=True, mininterval=0.1, leave=True,
            )  # fmt: skip
        self.closed = False

    def update(self, n: int = 1, **fields: float | int | str) -> None:
        """``n`` more units done; a bar shows ``fields`` (the latest value of each) after it."""
        self.done += n
        if self._bar is not None:
            if fields:  # shown at once when nothing else moves the bar
                self._bar.set_postfix(
                    {k: _format_field(v) for k, v in fields.items()}, refresh=n == 0
                )
            if n:
                self._bar.update(n)

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def eta(self) -> float | None:
        """Seconds left at this process's rate so far (None before the first unit)."""
        done_here = self.done - self._initial
        if done_here <= 0:
            return None
        return self.elapsed() / done_here * max(self.total - self.done, 0)

    def report(self, text: str, *, on_bar: bool = False) -> None:
        """One line for a finished unit of work (an epoch, a measurement).

        Without a bar it is printed as ``LABEL TEXT (done/total, elapsed, ETA)``. Under a bar it
        is printed above the bar when ``on_bar`` (results worth keeping on screen), else left out:
        the bar's fields already show the latest values.
        """
        if self.mode == "off" or (self.mode == "bar" and not on_bar):
            return
        if self._bar is not None:
            self._bar.write(f"{self.label} {text}".strip(), file=self.stream)
            return
        eta = self.eta()
        where = f"{self.done}/{self.total}, {format_seconds(self.elapsed())}"
        if eta is not None and self.done < self.total:
            where += f", ETA {format_seconds(eta)}"
        self.stream.write(f"{self.label} {text} ({where})\n".lstrip())
        self.stream.flush()

    def close(self) -> None:
        if not self.closed and self._bar is not None:
            self._bar.close()
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
