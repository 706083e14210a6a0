"""Starting data-parallel workers, watching them, and failing loudly (never hanging).

:func:`run` runs ``task(backend, *args)`` with a :class:`DataParallelBackend` of N workers and
returns rank 0's result:

* ``torch``: N processes (``torch.multiprocessing``, spawned), one rank each, joined through the
  torchrun environment variables. Started by torchrun already (``RANK`` and ``WORLD_SIZE`` set),
  this process is one rank and runs the task itself;
* ``jax``, ``tensorflow``, ``mxnet``: one fresh process that exposes N CPU devices before the
  framework starts (XLA's host device count, TF's logical devices, MXNet's ``cpu(i)`` contexts)
  and runs the task over them. Started with ``JAX_COORDINATOR_ADDRESS`` (JAX) or ``TF_CONFIG``
  (TensorFlow's MultiWorkerMirroredStrategy) set, this process is one host of several and runs
  the task itself.

A worker that dies (a signal, an exit status) or raises stops the whole job: the others are
terminated and :class:`WorkerError` names the worker. A job that outlives ``timeout`` seconds is
stopped the same way. Errors meant for the user (:class:`UserError`) cross back as themselves.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, cast

from ..errors import NonFiniteError, UserError, WorkerError
from . import tf_config
from .common import check_workers

ENGINES = {
    "torch": "torch.distributed (gloo on CPU)",
    "jax": "shard_map over a mesh of host devices",
    "tensorflow": "MirroredStrategy over logical CPU devices",
    "mxnet": "kvstore over cpu(i) contexts",
}
GRACE_S = 3.0  # after a first failure, how long to wait for a worker's death that explains it


def free_port() -> int:
    """A TCP port free on this machine now (for MASTER_PORT)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_engine(framework: str, workers: int, rank: int, backend_kwargs: dict[str, Any],
                timeout_s: float) -> Any:  # fmt: skip
    """The :class:`DataParallelBackend` of ``framework`` in this (fresh) process."""
    from ..backends.registry import get_backend

    if framework == "torch":
        from . import torch_engine

        rank, world = torch_engine.init_process_group(timeout_s)
        if world != workers:
            raise UserError(
                f"the torch.distributed job has {world} processes (WORLD_SIZE) but "
                f"{workers} data-parallel workers were asked for; make them equal"
            )
        return torch_engine.TorchDataParallel(get_backend("torch", **backend_kwargs), world, rank)
    if framework == "jax":
        from . import jax_engine

        jax_engine.join_processes(timeout_s)  # with JAX_COORDINATOR_ADDRESS set: several hosts
        from ..backends.jax_backend import JaxBackend

        inner = cast(JaxBackend, get_backend("jax", **backend_kwargs))
        return jax_engine.JaxDataParallel(inner, workers)
    if framework == "tensorflow":
        from . import tensorflow_engine

        if tf_config.is_set():  # one process of a TF_CONFIG cluster
            strategy, rank = tensorflow_engine.join_cluster(workers, timeout_s)
            return tensorflow_engine.TensorflowMultiWorker(
                get_backend("tensorflow", **backend_kwargs), workers, strategy, rank
            )
        tensorflow_engine.expose_cpus(workers)  # before anything else starts TensorFlow
        return tensorflow_engine.TensorflowDataParallel(
            get_backend("tensorflow", **backend_kwargs), workers
        )
    if framework == "mxnet":
        from . import mxnet_engine

        return mxnet_engine.MxnetDataParallel(backend_kwargs, workers)
    raise UserError(f"no data-parallel engine for {framework!r}; choose one of "
                    f"{', '.join(ENGINES)}")  # fmt: skip


def _child(framework: str, workers: int, rank: int, env: dict[str, str],
           backend_kwargs: dict[str, Any], task: Callable[..., Any], args: tuple[Any, ...],
           results: Any, timeout_s: float) -> None:  # fmt: skip
    """A worker process: set its environment, build the engine, run the task, report."""
    os.environ.update(env)
    try:
        backend = make_engine(framework, workers, rank, backend_kwargs, timeout_s)
        result = task(backend, *args)
        results.put((rank, "ok", result if rank == 0 else None))
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent
        keep = isinstance(exc, (UserError, NonFiniteError))
        detail = exc if keep else WorkerError(
            f"data-parallel worker {rank} of {workers} ({framework}) failed: "
            f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"
        )
        results.put((rank, "error", detail))
        sys.exit(1)
    finally:
        if framework == "torch":
            from . import torch_engine

            torch_engine.close()


def _describe(exitcode: int) -> str:
    if exitcode >= 0:
        return f"exited with status {exitcode}"
    try:
        return f"was killed by {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"was killed by signal {-exitcode}"


def _plan(framework: str, workers: int) -> list[dict[str, str]]:
    """The environment of every process to start (one per rank for torch, else one)."""
    if framework == "torch":
        common = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                  "WORLD_SIZE": str(workers)}  # fmt: skip
        return [{**common, "RANK": str(r), "LOCAL_RANK": str(r)} for r in range(workers)]
    if framework == "jax":
        flags = os.environ.get("XLA_FLAGS", "")
        flag = f"--xla_force_host_platform_device_count={workers}"
        return [{"XLA_FLAGS": f"{flags} {flag}".strip()}]
    return [{}]


def run(
    framework: str,
    workers: int,
    task: Callable[..., Any],
    args: tuple[Any, ...] = (),
    *,
    backend_kwargs: dict[str, Any] | None = None,
    timeout: float = 600.0,
) -> Any:
    """``task(backend, *args)`` on ``workers`` data-parallel workers of ``framework``; rank 0's
    result.

    Arguments:
        task: a module-level function (it is pickled by name into fresh processes).
        backend_kwargs: ``get_backend``'s keywords for every worker's backend (dtype, variant...).
        timeout: seconds for the whole job, and for every collective of the torch engine and of
            TensorFlow's multi-worker engine.
    Raises:
        WorkerError: a worker died, failed or the job timed out (the worker is named).
        UserError, NonFiniteError: raised by a worker, passed on as they are.
    """
    check_workers(workers)
    kwargs = dict(backend_kwargs or {})
    if framework == "jax" and "JAX_COORDINATOR_ADDRESS" in os.environ:
        return task(make_engine(framework, workers, 0, kwargs, timeout), *args)  # one host of N
    if framework == "tensorflow" and tf_config.is_set():
        tf_config.read(workers)  # refused before TensorFlow starts
        return task(make_engine(framework, workers, 0, kwargs, timeout), *args)  # one host of N
    if framework == "torch" and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        from . import torch_engine  # started by torchrun: this process is one rank

        try:
            return task(make_engine(framework, workers, 0, kwargs, timeout), *args)
        finally:
            torch_engine.close()
    if framework == "torch":
        import torch.multiprocessing as mp_module
    else:
        mp_module = multiprocessing
    ctx = mp_module.get_context("spawn")
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_child, name=f"dp-{framework}-{rank}", daemon=True,
                    args=(framework, workers, rank, env, kwargs, task, args, results, timeout))
        for rank, env in enumerate(_plan(framework, workers))
    ]  # fmt: skip
    for p in procs:
        p.start()
    try:
        return _watch(framework, workers, procs, results, timeout)
    finally:
        _stop(procs)
        results.close()


def _name(framework: str, workers: int, procs: list[Any], rank: int) -> str:
    """How a message names the process ``rank``."""
    p = procs[rank]
    if len(procs) == 1:
        return f"the {framework} data-parallel worker process (pid {p.pid}, all {workers} devices)"
    return f"data-parallel worker {rank} of {len(procs)} ({framework}, pid {p.pid})"


def _watch(framework: str, workers: int, procs: list[Any], results: Any, timeout: float) -> Any:
    """Rank 0's result once every worker ended well; else the first failure, as an exception."""
    deadline = time.monotonic() + timeout
    done: dict[int, Any] = {}
    failure: tuple[float, BaseException] | None = None
    exited: dict[int, float] = {}  # rank -> when it was first seen dead without a signal
    n = len(procs)
    while True:
        try:
            rank, status, value = results.get(timeout=0.1)
            if status == "ok":
                done[rank] = value
            elif failure is None:
                failure = (time.monotonic(), value)
        except queue_module.Empty:
            pass
        now = time.monotonic()
        for r, p in enumerate(procs):
            code = p.exitcode
            if code is not None and code < 0:  # a signal: the clearest cause, reported first
                raise WorkerError(
                    f"{_name(framework, workers, procs, r)} {_describe(code)}; the job was stopped"
                )
            if code not in (None, 0) and r not in done:
                exited.setdefault(r, now)
        if failure is not None and now - failure[0] > GRACE_S:
            raise failure[1]
        late = [r for r, t in exited.items() if now - t > GRACE_S]
        if late and failure is None:  # died without saying why (e.g. os._exit)
            r = late[0]
            raise WorkerError(
                f"{_name(framework, workers, procs, r)} {_describe(procs[r].exitcode)} without "
                "a report; the job was stopped"
            )
        if len(done) == n:
            return done.get(0)
        if time.monotonic() > deadline:
            alive = [str(r) for r, p in enumerate(procs) if p.is_alive()]
            raise WorkerError(
                f"data-parallel {framework} job timed out after {timeout:g} s; worker(s) "
                f"{', '.join(alive) or 'none'} still running were stopped; raise the timeout or "
                "look for a worker stuck in a collective"
            )


def _stop(procs: list[Any]) -> None:
    """Terminate the workers still running, then kill those that ignore it."""
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
