"""The model's equations, written once over a small ``ops`` namespace.

Each framework adapter supplies an :class:`Ops` (its array functions) and a ``scan`` (its time
loop), and differentiates these functions with its own autodiff. The NumPy oracle in
``reference.py`` does *not* use this module: it is the independent check.

Variants of the same RNN (identical numbers, different cost):

* ``textbook``: one-hot inputs times ``W_xh`` at every step, as the book writes it.
* ``concat``: the concatenation trick, one matmul of ``[x_t, h_{t-1}]`` with ``[W_xh; W_hh]``.
* ``fast``: the input projection for all steps at once as a row gather of ``W_xh`` (a one-hot
  matmul picks rows), hoisted out of the loop; the output projection batched after it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

CELL_VARIANTS = ("textbook", "concat", "fast")

Array = Any
Scan = Callable[[Callable[[Array, Array], tuple[Array, Array]], Array, Array], tuple[Array, Array]]


class Ops:
    """The array functions the shared math needs; every adapter implements all of them.

    Shapes use B batch, T time, V vocabulary, H hidden.
    """

    def matmul(self, a: Array, b: Array) -> Array: ...
    def tanh(self, x: Array) -> Array: ...
    def take_rows(self, w: Array, ids: Array) -> Array:
        """``w[ids]`` for an int array ``ids`` of any shape."""

    def one_hot(self, ids: Array, depth: int) -> Array:
        """Float one-hot of ``ids`` in the backend's dtype."""

    def concat(self, xs: list[Array], axis: int) -> Array: ...
    def swap_bt(self, x: Array) -> Array:
        """Swap the first two axes (batch-major <-> time-major)."""

    def logsumexp(self, x: Array) -> Array:
        """Over the last axis, keeping it."""

    def pick(self, x: Array, ids: Array) -> Array:
        """``x[..., ids]`` elementwise: x (..., V), ids (...) -> (...)."""

    def mean(self, x: Array) -> Array: ...
    def sum(self, x: Array) -> Array: ...
    def sqrt(self, x: Array) -> Array: ...
    def minimum(self, x: Array, y: float) -> Array: ...


def rnn_step(ops: Ops, W_hh: Array, xw: Array, h: Array) -> Array:
    """h_t = tanh(x_t W_xh + b_h + h_{t-1} W_hh), with the input part ``xw`` precomputed."""
    return ops.tanh(xw + ops.matmul(h, W_hh))


def rnn_logits(
    ops: Ops, scan: Scan, params: dict[str, Array], X: Array, h0: Array, variant: str = "fast"
) -> tuple[Array, Array]:
    """Logits (B, T, V) and the final state (B, H) for int ids ``X`` (B, T) from state ``h0``."""
    W_xh, W_hh, b_h = params["W_xh"], params["W_hh"], params["b_h"]
    Xt = ops.swap_bt(X)  # (T, B): the loop runs over time
    if variant == "textbook":
        xs = ops.one_hot(Xt, W_xh.shape[0])

        def step(h, x):
            h = ops.tanh(ops.matmul(x, W_xh) + ops.matmul(h, W_hh) + b_h)
            return h, h

    elif variant == "concat":
        xs = ops.one_hot(Xt, W_xh.shape[0])
        W = ops.concat([W_xh, W_hh], axis=0)  # (V + H, H)

        def step(h, x):
            h = ops.tanh(ops.matmul(ops.concat([x, h], axis=-1), W) + b_h)
            return h, h

    elif variant == "fast":
        xs = ops.take_rows(W_xh, Xt) + b_h  # (T, B, H), hoisted out of the loop

        def step(h, xw):
            h = rnn_step(ops, W_hh, xw, h)
            return h, h

    else:
        raise ValueError(f"unknown cell variant {variant!r}; expected one of {CELL_VARIANTS}")
    h_last, hs = scan(step, h0, xs)
    return ops.swap_bt(output_logits(ops, params, hs)), h_last


def output_logits(ops: Ops, params: dict[str, Array], hs: Array) -> Array:
    """o_t = h_t W_hq + b_q for all steps at once."""
    return ops.matmul(hs, params["W_hq"]) + params["b_q"]


def cross_entropy(ops: Ops, logits: Array, Y: Array) -> Array:
    """Mean softmax cross-entropy over every token."""
    logp = logits - ops.logsumexp(logits)
    return -ops.mean(ops.pick(logp, Y))


def global_norm(ops: Ops, grads: dict[str, Array]) -> Array:
    return ops.sqrt(sum(ops.sum(g * g) for g in grads.values()))


def clip_and_sgd(
    ops: Ops, params: dict[str, Array], grads: dict[str, Array], lr: float, max_norm: float
) -> tuple[dict[str, Array], Array]:
    """SGD on gradients scaled by ``min(1, max_norm / ||g||)``; returns (new params, ||g||)."""
    norm = global_norm(ops, grads)
    if max_norm > 0:
        step = ops.minimum(max_norm / norm, 1.0) * lr
    else:
        step = lr
    return {k: p - step * grads[k] for k, p in params.items()}, norm


def concat_trick(ops: Ops, X: Array, W_xh: Array, H: Array, W_hh: Array) -> tuple[Array, Array]:
    """Both sides of X W_xh + H W_hh == [X, H] [W_xh; W_hh]."""
    left = ops.matmul(X, W_xh) + ops.matmul(H, W_hh)
    right = ops.matmul(ops.concat([X, H], axis=1), ops.concat([W_xh, W_hh], axis=0))
    return left, right
