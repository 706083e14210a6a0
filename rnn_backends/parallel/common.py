"""Data-parallel training: the math every engine shares, written once.

A step on a global batch of B rows with N workers:

1. the batch is split by rows: worker r takes rows ``r * B / N`` up to ``(r + 1) * B / N``
   (:func:`shard_rows`; B must be a multiple of N);
2. every worker computes the mean cross-entropy of its rows and its gradient with the backend's
   own step (the fast step or autodiff, :meth:`Backend._grads`);
3. the framework's own collective averages the losses and the gradients. Every worker holds the
   same number of tokens (B / N rows of T), so the mean of the workers' means is the mean over the
   global batch, and the mean of their gradients is its gradient: the single-process gradient;
4. :func:`rnn_backends.optim.update` runs on the *averaged* gradient, identically on every worker:
   clipping by the global norm of the averaged gradient (never per worker), then the optimizer.

With sequential batching every worker carries the state of its own rows from batch to batch. The
step's result holds the state of all B rows (gathered), so that a checkpoint written by rank 0
alone can hold it and a resumed run with any worker count can split it again.

An engine (``torch_engine``, ``jax_engine``, ``tensorflow_engine``, ``mxnet_engine``) supplies
only :meth:`DataParallelBackend._spmd`: run a per-worker ``body`` on every worker's rows and
return what the workers agree on plus the gathered carry.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .. import optim
from ..backends.base import Backend, StepResult, Tensors, clip_threshold
from ..errors import ConfigError
from .rows import check_workers, shard_rows

Mean = Callable[[Any], Any]
"""The engine's collective: a tree of per-worker tensors -> the same tree averaged over workers."""


# --- the per-worker bodies: the math of one worker, written once --------------------------------


@dataclass(frozen=True)
class Body:
    """What one worker computes, in two halves around the collective.

    ``local(replicated, X, Y, h0) -> (loss, carry, grads)`` on the worker's rows; the engine's
    ``mean`` averages ``(loss, grads)`` over the workers; ``finish(replicated, averaged)`` gives
    what every worker then agrees on. SPMD engines (torch, JAX, TensorFlow) call the whole body on
    every worker; MXNet's kvstore runs the halves itself (every ``local``, one reduction, then
    ``finish``).
    """

    local: Callable[[Any, Any, Any, Any], tuple[Any, Any, Any]]
    finish: Callable[[Any, Any], Any]
    mean: Mean | None = None

    def __call__(self, replicated: Any, X: Any, Y: Any, h0: Any) -> tuple[Any, Any]:
        loss, carry, grads = self.local(replicated, X, Y, h0)
        assert self.mean is not None
        return self.finish(replicated, self.mean((loss, grads))), carry


def grads_body(backend: Backend, mean: Mean | None) -> Body:
    """The averaged gradient: ``replicated`` is the parameters; the body returns
    ``((loss, grads), carry)``."""
    return Body(lambda params, X, Y, h0: backend._grads(params, X, Y, h0),
                lambda params, averaged: averaged, mean)  # fmt: skip


def step_body(backend: Backend, mean: Mean | None, optimizer: optim.Optimizer) -> Body:
    """A training step: ``replicated`` is ``(params, slots, rates, max_norm)``; the body returns
    ``((new params, new slots, loss, grad norm), carry)``, the first part equal on every worker.
    The clip sees the averaged gradient, so its norm is the global batch's."""

    def finish(replicated: Any, averaged: Any) -> Any:
        params, slots, rates, max_norm = replicated
        loss, grads = averaged
        with backend._inference():
            new, new_slots, norm = optim.update(
                backend.ops, optimizer, params, grads, slots, rates, max_norm
            )
        return new, new_slots, loss, norm

    return Body(lambda rep, X, Y, h0: backend._grads(rep[0], X, Y, h0), finish, mean)


# --- the wrapper --------------------------------------------------------------------------------


class DataParallelBackend:
    """A :class:`Backend` whose training step runs on ``workers`` workers of one engine.

    It has the backend's interface (everything but the step is the wrapped backend's, run on this
    worker alone: ``loss``, ``forward``, ``prepare``, ``export``...), so :func:`rnn_backends.train`
    trains with it unchanged. ``train_step`` and ``loss_and_grads`` take the *global* batch and
    return what one process would: the averaged loss and gradient, the updated parameters and the
    final state of all rows.

    Arguments:
        inner: the backend of this worker (its dtype, variant and options are the run's).
        workers: N, the number of workers (devices or processes).
        rank: this process's worker number (multi-process engines; 0 otherwise).
    """

    engine: ClassVar[str]

    def __init__(self, inner: Backend, workers: int, rank: int = 0) -> None:
        self.inner, self.workers, self.rank = inner, check_workers(workers), rank
        self._bodies: dict[Any, Any] = {}

    def __getattr__(self, name: str) -> Any:
        # Only reached for names this class does not define: the wrapped backend's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.workers} x {self.inner!r}>"

    @property
    def device(self) -> str:
        return f"{self.inner.device} x {self.workers} ({self.engine})"

    @property
    def is_writer(self) -> bool:
        """Whether this process writes checkpoints and results (rank 0 only)."""
        return self.rank == 0

    # --- the engine's part ------------------------------------------------------------------------

    def _spmd(self, kind: Any, make_body: Callable[[Mean | None], Body], replicated: Any,
              X: np.ndarray, Y: np.ndarray, h0: Any) -> tuple[Any, Any]:  # fmt: skip
        """Run ``make_body(mean)`` on every worker's rows of ``X``, ``Y`` (NumPy (B, T)) and
        ``h0`` (the global carry as a tensor); return (its first output, equal on every worker,
        as tensors of this process; the carries of all rows, joined along the row axis).
        ``kind`` names the body for caching compiled programs."""
        raise NotImplementedError

    def _local(self, tensors: Any) -> Any:
        """Tensors the engine returned, as the wrapped backend's own (e.g. on its one device)."""
        return tensors

    # --- the public API ---------------------------------------------------------------------------

    def _global_inputs(self, params: Any, X: np.ndarray, state: Any) -> tuple[Tensors, Any, int]:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ConfigError(f"X must be (batch, time) token ids, got shape {X.shape}")
        rows = shard_rows(X.shape[0], self.workers)
        tensors = self.inner._as_tensors(params)
        h0 = self.inner._h0(tensors, state, X.shape[0])
        return tensors, h0, rows

    def _local_state(self, state: Any) -> Any:
        if state is None or isinstance(state[0], np.ndarray):
            return state
        return (self._local(state[0]),)

    def loss_and_grads(self, params: Any, X: np.ndarray, Y: np.ndarray,
                       state: Any = None) -> tuple[float, dict[str, np.ndarray]]:  # fmt: skip
        """The global batch's mean loss and its gradient, as the workers' average: NumPy out."""
        inner = self.inner
        with inner._device_scope():
            tensors, h0, _ = self._global_inputs(params, X, state)
            (loss, grads), _ = self._spmd(
                "grads", functools.partial(grads_body, inner), tensors, X, Y, h0
            )
            return float(inner.to_numpy(loss)), {k: inner.to_numpy(v) for k, v in grads.items()}

    def train_step(
        self,
        params: Any,
        X: np.ndarray,
        Y: np.ndarray,
        state: Any = None,
        *,
        lr: float,
        grad_clip: float,
        optimizer: optim.Optimizer | str | None = None,
        opt_state: optim.OptState | None = None,
    ) -> StepResult:
        """:meth:`Backend.train_step` on ``workers`` workers: same arguments, same result."""
        inner = self.inner
        max_norm = clip_threshold(grad_clip)
        opt = optim.as_optimizer(optimizer)
        with inner._device_scope():
            tensors, h0, _ = self._global_inputs(params, X, state)
            if opt_state is None:
                opt_state = inner.init_opt_state(opt, tensors)
            opt_state.check(opt, {k: tuple(v.shape) for k, v in tensors.items()})
            slots = inner.prepare_opt_state(opt_state).slots
            rates = optim.Rates(*map(inner._scalar, optim.step_rates(opt, opt_state.step, lr)))
            replicated = (tensors, slots, rates, inner._scalar(max_norm))
            (new, new_slots, loss, norm), carry = self._spmd(
                ("step", opt), lambda mean: step_body(inner, mean, opt), replicated,
                np.asarray(X), np.asarray(Y), h0,
            )
            return StepResult(
                params=new,
                loss=float(inner.to_numpy(loss)),
                grad_norm=float(inner.to_numpy(norm)),
                state=(inner._detach(carry),),
                opt_state=optim.OptState(opt_state.step + 1, new_slots),
            )

    def loss(self, params: Any, X: np.ndarray, Y: np.ndarray, state: Any = None) -> Any:
        """The wrapped backend's ``loss`` on this worker alone (evaluation is not split)."""
        return self.inner.loss(self._local(params), X, Y, self._local_state(state))

    def export(self, tensors: Tensors) -> dict[str, np.ndarray]:
        return self.inner.export(self._local(tensors))


# --- helpers for engines whose collective takes one flat buffer ---------------------------------


def flatten(tree: Any) -> tuple[list[Any], Callable[[list[Any]], Any]]:
    """The leaves of a tree of tuples and dicts (dicts in key order), and the function that puts
    a list of as many leaves back into the same tree."""
    if isinstance(tree, dict):
        keys = list(tree)
        parts = [flatten(tree[k]) for k in keys]
    elif isinstance(tree, (tuple, list)):
        keys = None
        parts = [flatten(t) for t in tree]
    else:
        return [tree], lambda leaves: leaves[0]
    sizes = [len(leaves) for leaves, _ in parts]

    def rebuild(leaves: list[Any]) -> Any:
        out, at = [], 0
        for (_, build), n in zip(parts, sizes, strict=True):
            out.append(build(leaves[at : at + n]))
            at += n
        if keys is not None:
            return dict(zip(keys, out, strict=True))
        return type(tree)(*out) if hasattr(tree, "_fields") else type(tree)(out)  # NamedTuple

    return [leaf for leaves, _ in parts for leaf in leaves], rebuild
