"""What data-parallel workers run: module-level functions, so that fresh processes can import them
by name. Each takes the worker's :class:`DataParallelBackend` first and returns plain NumPy and
Python values (rank 0's reach the caller of :func:`launch.run`)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

from ..config import ModelConfig, TrainConfig
from ..data.corpus import Corpus
from ..optim import Optimizer


def trajectory(
    backend: Any,
    params: dict[str, np.ndarray],
    batches: list[tuple[np.ndarray, np.ndarray]],
    lr: float,
    grad_clip: float,
    optimizer: Optimizer | str | None = None,
    carry_state: bool = False,
) -> dict[str, Any]:
    """The averaged gradient at the start, then one training step per batch.

    Returns ``loss0`` and ``grads0`` (the first batch's loss and gradient before any update),
    ``losses`` and ``norms`` per step, the final ``params`` and the final ``state`` (the public
    tuple of (L * D, B, H) arrays; None unless ``carry_state``)."""
    X0, Y0 = batches[0]
    loss0, grads0 = backend.loss_and_grads(params, X0, Y0)
    tensors, opt_state = backend.prepare(params), None
    state: Any = None
    losses, norms = [], []
    for X, Y in batches:
        res = backend.train_step(tensors, X, Y, state if carry_state else None, lr=lr,
                                 grad_clip=grad_clip, optimizer=optimizer, opt_state=opt_state)
        tensors, state, opt_state = res.params, res.state, res.opt_state
        losses.append(res.loss)
        norms.append(res.grad_norm)
    final_state = None
    if carry_state:
        carry = backend._local(state[0])
        final_state = backend.inner._public_state(backend.inner._as_tensors(
            backend._local(tensors)), carry)
    return {"loss0": loss0, "grads0": grads0, "losses": losses, "norms": norms,
            "params": backend.export(tensors), "state": final_state,
            "allreduce_bytes": getattr(backend, "allreduce_bytes", None)}  # fmt: skip


def loss_and_grads(backend: Any, params: dict[str, np.ndarray], X: np.ndarray,
                   Y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:  # fmt: skip
    """The averaged loss and gradient of one batch (the workers' mean)."""
    return backend.loss_and_grads(params, X, Y)


def _kill_at(rank: int, step: int, backend: Any) -> Any:
    """An ``on_step`` callback that kills this process with SIGKILL after update ``step`` when it
    is worker ``rank`` (a crash, for the tests of failure and resume)."""

    def on_step(done: int, loss: float, seconds: float) -> None:
        if backend.rank == rank and done == step:
            os.kill(os.getpid(), signal.SIGKILL)

    return on_step


def train_task(
    backend: Any,
    corpus: Corpus,
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: str | Path | None = None,
    kill: tuple[int, int] | None = None,
    overwrite: bool = False,
    record: tuple[list[int], str, int] | None = None,
) -> dict[str, Any]:
    """:func:`rnn_backends.train` on the data-parallel backend; rank 0 alone writes ``out_dir``
    (the others read ``resume`` only). ``kill``: (rank, step) at which a worker kills itself.
    ``record``: (steps, folder, states) of :class:`rnn_backends.shadow.Recorder`: rank 0 saves
    those steps of the global batch (what one process would have started from and ended with)
    for the compare job's replays."""
    from ..shadow import Recorder
    from ..train import train

    recorder = None
    if record is not None and backend.is_writer:
        steps, folder, states = record
        backend = recorder = Recorder(backend, steps, Path(folder), states)
    result = train(
        backend, corpus, model_config, train_config,
        out_dir=out_dir if backend.is_writer else None, progress=False,
        on_step=_kill_at(*kill, backend) if kill else None,
        checkpoint_every=checkpoint_every, resume=resume, overwrite=overwrite,
    )  # fmt: skip
    if recorder is not None:
        recorder.save_index()
    return {"params": result.params, "history": result.history,
            "checkpoint": str(result.checkpoint) if result.checkpoint else None}  # fmt: skip


def timed_steps(backend: Any, params: dict[str, np.ndarray],
                batches: list[tuple[np.ndarray, np.ndarray]], lr: float,
                grad_clip: float) -> dict[str, Any]:  # fmt: skip
    """Seconds per training step (the first, which compiles, apart), the bytes one step sends
    into the all-reduce, and the final weights."""
    import time

    tensors, seconds = backend.prepare(params), []
    for X, Y in batches:
        t0 = time.perf_counter()
        res = backend.train_step(tensors, X, Y, lr=lr, grad_clip=grad_clip)
        tensors = res.params
        seconds.append(time.perf_counter() - t0)  # res.loss is a float: the step has finished
    return {"seconds": seconds, "allreduce_bytes": getattr(backend, "allreduce_bytes", 0),
            "params": backend.export(tensors)}  # fmt: skip
