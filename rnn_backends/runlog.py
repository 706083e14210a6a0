"""What a training run reports while it runs: progress on standard error (:mod:`.progress`),
``metrics.csv`` in the run directory and, when the ``tensorboard`` package is installed, a
TensorBoard events file beside it. Every byte goes through :mod:`.checkpointing`.

``metrics.csv`` has the columns :data:`COLUMNS` and two kinds of rows (as PyTorch Lightning's CSV
logger has), columns that do not apply left empty:

* one row per update: ``step`` (0 for the first update), ``epoch`` (1 for the first), ``loss``,
  ``grad_norm`` (before clipping), ``lr``, ``wall_time`` (Unix time when the update ended);
* one row per finished epoch: ``step`` (the epoch's last update), ``epoch``, ``train_ppl``,
  ``val_ppl`` (token-weighted, as in the history) and ``wall_time``.

Rows wait in memory and are appended at the end of every epoch and before every checkpoint is
written, so the file on disk always holds every row before the checkpoint on disk. A resumed run
rewrites it keeping exactly those rows (update rows before its step, epoch rows of the epochs its
history has) and appends from there: it ends with the file an uninterrupted run writes, wall
times aside. The events file holds the same rows as TensorBoard scalars (tags ``loss``,
``grad_norm``, ``lr``, ``train_ppl``, ``val_ppl``) and is rewritten and appended the same way.
"""

from __future__ import annotations

import importlib.util
import io
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from .checkpointing import EVENTS_FILE, METRICS_FILE, append_durable, write_atomic
from .progress import Progress

COLUMNS = ("step", "epoch", "loss", "grad_norm", "lr", "train_ppl", "val_ppl", "wall_time")
HEADER = ",".join(COLUMNS) + "\n"
STEP_FIELDS = ("loss", "grad_norm", "lr")  # what an update row holds besides step, epoch, time
EPOCH_FIELDS = ("train_ppl", "val_ppl")  # what an epoch row holds

Row = dict[str, Any]  # a column name -> int, float or None (empty)


def _cell(value: Any) -> str:
    # repr of a float round-trips exactly, so equal runs write equal files.
    return "" if value is None else repr(float(value)) if isinstance(value, float) else str(value)


def format_row(row: Row) -> str:
    """The CSV line (with its newline) of ``row``."""
    return ",".join(_cell(row.get(c)) for c in COLUMNS) + "\n"


def parse_row(line: str) -> Row | None:
    """The row a line of metrics.csv holds, or None for a line that is not a whole row (a torn
    tail left by a machine that failed mid-write)."""
    if not line.endswith("\n"):
        return None
    cells = line[:-1].split(",")
    if len(cells) != len(COLUMNS):
        return None
    try:
        row: Row = {c: (None if v == "" else float(v)) for c, v in zip(COLUMNS, cells, strict=True)}
        row["step"], row["epoch"] = int(cells[0]), int(cells[1])
    except ValueError:
        return None
    return row


def is_epoch_row(row: Row) -> bool:
    return row.get("val_ppl") is not None


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package is installed (checked without importing it)."""
    return importlib.util.find_spec("tensorboard") is not None


def events_bytes(rows: list[Row], header: bool) -> bytes:
    """TensorBoard records for ``rows`` (one event per row, its scalars tagged by column),
    after the file-version record that opens an events file when ``header``.

    Built with tensorboard's own protobufs and record framing: no deep-learning framework.
    """
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    buf = io.BytesIO()
    writer = RecordWriter(buf)
    if header:
        writer.write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
                     .SerializeToString())  # fmt: skip
    for row in rows:
        tags = EPOCH_FIELDS if is_epoch_row(row) else STEP_FIELDS
        values = [
            summary_pb2.Summary.Value(tag=tag, simple_value=float(row[tag]))
            for tag in tags
            if row.get(tag) is not None
        ]
        event = event_pb2.Event(
            wall_time=row.get("wall_time") or 0.0,
            step=int(row["step"]),
            summary=summary_pb2.Summary(value=values),
        )
        writer.write(event.SerializeToString())
    return buf.getvalue()


def _kept_lines(out: Path, steps: int, epochs: int) -> list[str] | None:
    """The lines of ``out/metrics.csv`` for the first ``steps`` updates and ``epochs`` epochs,
    or None when the file does not hold all of them (missing, foreign or cut short)."""
    try:
        lines = (out / METRICS_FILE).read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or lines[0] != HEADER:
        return None
    kept = []
    for line in lines[1:]:
        row = parse_row(line)
        if row is None:
            break  # a torn tail: nothing after it is vouched for
        if (row["epoch"] <= epochs) if is_epoch_row(row) else (row["step"] < steps):
            kept.append(line)
    n_epoch_rows = sum(1 for line in kept if is_epoch_row(parse_row(line) or {}))
    return kept if (len(kept) - n_epoch_rows, n_epoch_rows) == (steps, epochs) else None


def rows_from_history(history: dict[str, Any], steps_per_epoch: int,
                      lr: Callable[[int], float]) -> list[Row]:  # fmt: skip
    """The rows a run's history implies (no wall times: the history does not keep them); for a
    resumed run whose metrics.csv is missing or was written by an older version."""
    rows: list[Row] = []
    epochs = {e["epoch"]: e for e in history.get("epochs", [])}
    for step, (loss, norm) in enumerate(
        zip(history.get("step_loss", []), history.get("step_grad_norm", []), strict=True)
    ):
        epoch = step // steps_per_epoch + 1
        rows.append({"step": step, "epoch": epoch, "loss": loss, "grad_norm": norm,
                     "lr": lr(step)})  # fmt: skip
        if (step + 1) % steps_per_epoch == 0 and epoch in epochs:
            rows.append(_epoch_row(step, epochs[epoch], None))
    return rows


def _epoch_row(step: int, record: dict[str, Any], wall_time: float | None) -> Row:
    return {"step": step, "epoch": record["epoch"], "train_ppl": record["train_ppl"],
            "val_ppl": record["val_ppl"], "wall_time": wall_time}  # fmt: skip


class RunLog:
    """The progress display and the metric files of one training run (see the module docstring).

    Arguments:
        out: the run directory, or None to write no file (progress only).
        label: the name first on every progress line (the backend's).
        steps_per_epoch, epochs: the run's shape (the bar's total and the lines' ``epoch k/N``).
        progress: ``None`` (a bar on a terminal, one line per epoch elsewhere), True or False.
        history: the run's history so far; ``history["step_loss"]`` counts the updates done.
        lr: the learning rate of an update, by step (for rows rebuilt from the history).
        source: the run directory a resumed run continues (default ``out``): its metrics.csv
            gives the rows before the checkpoint.
    """

    def __init__(self, out: Path | None, label: str, steps_per_epoch: int, epochs: int,
                 progress: bool | None, history: dict[str, Any], lr: Callable[[int], float],
                 source: Path | None = None) -> None:  # fmt: skip
        self.out = out
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.tensorboard = out is not None and tensorboard_available()
        self.pending: list[Row] = []
        self.last_val_ppl: float | None = None
        self.shown: dict[str, float | str] = {}  # the bar's fields
        done = len(history.get("step_loss", []))
        if history.get("epochs"):
            self.last_val_ppl = history["epochs"][-1]["val_ppl"]
        if out is not None:
            self._begin(source or out, history, done, lr)
        self.progress = Progress(steps_per_epoch * epochs, label, enabled=progress, initial=done)

    def _begin(self, source: Path, history: dict[str, Any], done: int,
               lr: Callable[[int], float]) -> None:  # fmt: skip
        """Write the files anew with the rows of the ``done`` updates and the epochs recorded
        (none for a new run), taken from ``source``'s metrics.csv or else rebuilt from
        ``history``."""
        assert self.out is not None
        epochs = len(history.get("epochs", []))
        lines = _kept_lines(source, done, epochs) if done else []
        if lines is None:
            lines = [format_row(r) for r in rows_from_history(history, self.steps_per_epoch, lr)]
        write_atomic(self.out / METRICS_FILE, (HEADER + "".join(lines)).encode("utf-8"))
        if self.tensorboard:
            rows = [row for row in map(parse_row, lines) if row is not None]
            write_atomic(self.out / EVENTS_FILE, events_bytes(rows, header=True))

    def step(self, step: int, epoch: int, loss: float, grad_norm: float, lr: float) -> None:
        """Update ``step`` (0-based) of ``epoch`` (0-based) is done."""
        row = {"step": step, "epoch": epoch + 1, "loss": loss, "grad_norm": grad_norm, "lr": lr}
        self.pending.append({**row, "wall_time": time.time()})
        self.shown = {"epoch": f"{epoch + 1}/{self.epochs}", "loss": loss}
        if self.last_val_ppl is not None:
            self.shown["val_ppl"] = self.last_val_ppl
        self.progress.update(1, **self.shown)

    def epoch(self, step: int, record: dict[str, Any]) -> None:
        """The epoch ``record`` of the history (1-based ``epoch``, perplexities) ended at update
        ``step``: its row, the files brought up to date and one progress line."""
        self.pending.append(_epoch_row(step, record, time.time()))
        self.flush()
        self.last_val_ppl = record["val_ppl"]
        self.shown["val_ppl"] = self.last_val_ppl
        self.progress.update(0, **self.shown)  # the bar shows the new perplexity at once
        self.progress.report(
            f"epoch {record['epoch']}/{self.epochs}: train ppl {record['train_ppl']:.4f}, "
            f"val ppl {record['val_ppl']:.4f}"
        )

    def flush(self) -> None:
        """Append the waiting rows to the files (call before writing a checkpoint)."""
        if self.out is None or not self.pending:
            self.pending.clear()
            return
        rows, self.pending = self.pending, []
        append_durable(self.out / METRICS_FILE, "".join(map(format_row, rows)).encode("utf-8"))
        if self.tensorboard:
            append_durable(self.out / EVENTS_FILE, events_bytes(rows, header=False))

    def close(self) -> None:
        self.progress.close()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
