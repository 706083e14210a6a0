"""Worker processes: one framework's part of a job, run by another Python interpreter.

The compare job and the benchmark both run each framework in its own environment (MXNet 1.9.1
needs numpy < 1.24, JAX and TensorFlow need numpy 2), so both start workers the same way:
``--python NAME=PATH`` names the interpreter per framework (:func:`parse_pythons`), the worker
sees this source tree but never this environment's site-packages (:func:`worker_env`), and its
outcome is an exit status or the signal that killed it (:class:`WorkerOutcome`).
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .backends.registry import canonical_name
from .errors import UserError

# The folder that holds the package: a source checkout (it has pyproject.toml beside the
# package) or this environment's site-packages.
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]


def parse_pythons(items: Iterable[str]) -> dict[str, str]:
    """``["torch=/venvs/torch/bin/python", ...]`` -> ``{"torch": "/venvs/torch/bin/python"}``.

    Names are canonical backend names (``pytorch`` and ``torch`` are one); a malformed item, an
    unknown name or a path that is not a file raises :class:`UserError`.
    """
    pythons: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--python takes NAME=PATH (e.g. torch=/venvs/torch/bin/python), "
                            f"got {item!r}")
        if not Path(path).is_file():
            raise UserError(f"--python {name}: interpreter {path!r} does not exist")
        pythons[canonical_name(name)] = path
    return pythons


def thread_env(threads: int | None) -> dict[str, str]:
    """Environment variables that hold every framework (and NumPy's BLAS) to ``threads``;
    none for ``None`` or 0 (each framework keeps its own default)."""
    if not threads:
        return {}
    n = str(threads)
    env = {
        "OMP_NUM_THREADS": n,
        "MKL_NUM_THREADS": n,
        "OPENBLAS_NUM_THREADS": n,
        "TF_NUM_INTRAOP_THREADS": n,
        "TF_NUM_INTEROP_THREADS": n,
        # MXNet's engine threads each run OpenMP kernels; with 2 engine threads and 2 OpenMP
        # threads MXNet 1.9.1 spins forever (seen here), so ops run one at a time, each using
        # OMP_NUM_THREADS threads.
        "MXNET_CPU_WORKER_NTHREADS": "1",
    }
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def worker_env(threads: int | None = None) -> dict[str, str]:
    """This process's environment for a worker, plus :func:`thread_env`.

    Run from a source checkout, the worker imports this same tree (its folder goes first on
    ``PYTHONPATH``). Run from an installed package, the folder is this environment's
    site-packages, which must never leak into another framework's environment (MXNet's needs
    numpy 1.23), so nothing is added: the worker imports its own installed copy.
    """
    env = {**os.environ, **thread_env(threads)}
    if (_PACKAGE_ROOT / "pyproject.toml").is_file():
        parts = [str(_PACKAGE_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    return env


@dataclass(frozen=True)
class WorkerOutcome:
    """How a worker process ended: ``returncode`` as :mod:`subprocess` gives it (negative: the
    number of the signal that killed it)."""

    command: tuple[str, ...]
    returncode: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def describe(self) -> str:
        """``"exited with status 0"``, ``"was killed by SIGKILL"``, ..."""
        if self.returncode >= 0:
            return f"exited with status {self.returncode}"
        try:
            name = signal.Signals(-self.returncode).name
        except ValueError:
            name = f"signal {-self.returncode}"
        return f"was killed by {name}"


def launch(python: str, args: Sequence[str], *, threads: int | None = None) -> WorkerOutcome:
    """Run ``python *args`` to the end with :func:`worker_env`.

    The worker's standard output goes to this process's standard error (file descriptor 2), so
    this process's standard output carries only its own results; standard error is shared.
    """
    command = (python, *args)
    proc = subprocess.run(command, env=worker_env(threads), stdout=2, check=False)
    return WorkerOutcome(command, proc.returncode)


__all__ = ["WorkerOutcome", "launch", "parse_pythons", "thread_env", "worker_env"]
