"""Output folders: which ones this package may write into, and one writer at a time.

* **Ownership.** A folder this package writes into (a training run's ``--out``, a compare
  report) carries a marker file, :data:`MARKER`. The package writes into a folder only if it does
  not exist yet, is empty, or carries the marker; a folder of someone's own files is refused
  whole, before anything is written, so none of them can be overwritten or deleted.
* **One writer.** The marker is also the folder's lock file: a writer holds an advisory lock on
  it (``fcntl.flock``, exclusive, not waiting) for as long as it writes there, and records its
  process id, host and start time in it. A second writer is refused with those, so two
  processes can never interleave their checkpoints. The lock goes with the process (the kernel
  drops it at exit, even after SIGKILL), so a killed run never leaves a folder locked.

On a platform without ``fcntl`` (Windows) the ownership check remains and the lock is skipped.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import FolderInUseError, UserError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

MARKER = ".rnn-backends-run"


def _holder(fd: int) -> str:
    """Who holds the lock, from what it wrote into the lock file."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"process {int(info['pid'])} on {info['host']}, started {info['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def _foreign_files(folder: Path) -> list[str]:
    """The entries of an existing ``folder`` that mark it as someone else's: any entry at all,
    unless the folder carries :data:`MARKER`."""
    if (folder / MARKER).is_file() and not (folder / MARKER).is_symlink():
        return []
    return sorted(p.name for p in folder.iterdir())


def check_ownership(folder: Path, what: str = "output directory") -> None:
    """Refuse ``folder`` unless it is missing, empty, or marked as this package's (nothing is
    created here)."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot create {what} {str(folder)!r}: a file of that name exists")
    if not folder.is_dir():
        return
    foreign = _foreign_files(folder)
    if foreign:
        shown = ", ".join(foreign[:4]) + (", ..." if len(foreign) > 4 else "")
        raise UserError(
            f"{what} {str(folder)!r} holds files rnn-backends did not write ({shown}); pass an "
            "empty or new folder, so that none of them is overwritten"
        )


@contextlib.contextmanager
def own_folder(
    folder: Path, what: str = "output directory", check: Callable[[], None] | None = None
) -> Iterator[Path]:
    """Hold ``folder`` for writing while the ``with`` block runs: checked (see
    :func:`check_ownership`), created if missing, marked, and locked against other writers.
    ``check`` runs once the lock is held and before this process records itself as the holder
    (e.g. whether the folder holds another run), so a refused writer leaves no trace.

    Raises:
        UserError: the folder holds someone's files or cannot be created.
        FolderInUseError: another process holds it (its pid, host and start time are named).
    """
    check_ownership(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / MARKER, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0),
                     0o666)  # fmt: skip
    except OSError as exc:
        raise UserError(f"cannot create {what} {str(folder)!r}: {exc.strerror}") from None
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise FolderInUseError(
                    f"{what} {str(folder)!r} is in use by {_holder(fd)}; wait for that run to "
                    "end, or pass another folder"
                ) from None
        if check is not None:
            check()
        started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": started}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode("utf-8"), 0)
        yield folder
    finally:
        os.close(fd)  # releases the lock
