"""TensorFlow, imported quietly, and the filter for its C++ log lines.

The TensorFlow modules of this package take ``tf`` from here, so that the first import of
TensorFlow, wherever it happens, runs inside :func:`quiet_cpp_logs`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["quiet_cpp_logs", "tf"]

# TensorFlow 2.21 logs from C++ through absl before absl is initialised, and those lines ignore
# TF_CPP_MIN_LOG_LEVEL: the oneDNN notice ("I0000 ... port.cc:153] oneDNN custom operations are
# on") reaches stderr at import whatever the variable says, and graph optimisation adds more on a
# compiled step's first run (e.g. "W0000 ... util.cc:163] Not handling type DT_DOUBLE"). So the
# variable is set to 2 (INFO and WARNING hidden, errors shown) only when the user has not chosen a
# level, and those two moments run with file descriptor 2 captured: the captured text is written
# back without the C++ log lines the variable asks to hide. Anything else (errors, Python warnings,
# tracebacks) is written back untouched, and nothing is done to Python's warning filters.
_SEVERITY = "IWEF"  # TF_CPP_MIN_LOG_LEVEL n hides the first n of these
_CPP_LOG_LINE = re.compile(
    # absl, before its initialisation: "I0000 00:00:1795795186.053316    7539 port.cc:153] ..."
    r"^(?:(?P<absl>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"
    # TensorFlow's own: "2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ..."
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<tf>[IWEF]) \S+:\d+\])"
)
_ABSL_BANNER = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
)


def _log_level() -> int:
    """The user's (or our default) TF_CPP_MIN_LOG_LEVEL as 0..3; unset or unreadable is 0."""
    try:
        return min(max(int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")), 0), 3)
    except ValueError:
        return 0  # a value TensorFlow cannot read either: hide nothing


# The CUDA build of TensorFlow probes the driver when it first lists GPUs and logs this at ERROR
# level on a machine without one. It only means "no GPU here", which the backend already reports
# (and turns into a clear error when a GPU was asked for), so it is dropped like an INFO line.
_NO_GPU_PROBE = "failed call to cuInit"


def _keep_line(line: str, level: int) -> bool:
    if line.rstrip("\r\n") == _ABSL_BANNER:
        return level == 0
    if _NO_GPU_PROBE in line and _CPP_LOG_LINE.match(line):
        return level == 0
    match = _CPP_LOG_LINE.match(line)
    if match is None:
        return True  # not a C++ log line (a Python warning, a traceback): always shown
    return _SEVERITY.index(match["absl"] or match["tf"]) >= level


@contextlib.contextmanager
def quiet_cpp_logs() -> Iterator[None]:
    """Capture file descriptor 2 (where C++ writes) and replay it without the hidden log lines."""
    level = _log_level()
    if level == 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    # A file, not a pipe: a pipe would block the writer once its buffer filled.
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = "".join(ln for ln in text.splitlines(keepends=True) if _keep_line(ln, level))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


if "tensorflow" in sys.modules:  # imported by the user already: their logging, their choice
    import tensorflow as tf
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with quiet_cpp_logs():
        import tensorflow as tf
