"""JAX's array functions: :class:`JaxOps` for the shared cell math and :class:`JaxFastOps` for
the fast step (:mod:`rnn_backends.fastpath`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .. import cells
from ..fastpath import FastOps


class JaxOps(cells.Ops):
    """The shared cell math's array functions in JAX; ``self.dtype`` is the float dtype."""

    matmul = staticmethod(jnp.matmul)
    tanh = staticmethod(jnp.tanh)
    sigmoid = staticmethod(jax.nn.sigmoid)
    sqrt = staticmethod(jnp.sqrt)
    stack = staticmethod(jnp.stack)

    def flip(self, x):
        return jnp.flip(x, axis=0)

    def take_rows(self, w, ids):
        return jnp.take(w, ids, axis=0)

    def one_hot(self, ids, depth):
        return jax.nn.one_hot(ids, depth, dtype=self.dtype)

    def concat(self, xs, axis):
        return jnp.concatenate(xs, axis=axis)

    def swap_bt(self, x):
        return jnp.swapaxes(x, 0, 1)

    def logsumexp(self, x):
        return jax.nn.logsumexp(x, axis=-1, keepdims=True)

    def pick(self, x, ids):
        return jnp.take_along_axis(x, ids[..., None], axis=-1)[..., 0]

    def mean(self, x):
        return jnp.mean(x)

    def sum(self, x):
        return jnp.sum(x)

    def minimum(self, x, y):
        return jnp.minimum(x, y)


class JaxFastOps(JaxOps, FastOps):
    """The fast step, traced into one XLA program with the rest of the step.

    Both time loops are ``lax.scan`` with the backend's ``unroll``; the hand-written backward
    replaces autodiff through the scan (whose transpose keeps more residuals and runs more ops per
    step).
    """

    exp = staticmethod(jnp.exp)

    def __init__(self, dtype, unroll: int = 1) -> None:
        super().__init__(dtype)
        self.unroll = unroll

    def transpose(self, w):
        return w.T

    def sum_rows(self, x):
        return jnp.sum(x, axis=0)

    def scatter_rows(self, ids, rows, n):
        return jax.ops.segment_sum(rows, ids, num_segments=n)

    def forward_loop(self, xw, h0, W_hh):
        def step(h, x):
            h = jnp.tanh(x + h @ W_hh)
            return h, h

        return jax.lax.scan(step, h0, xw, unroll=self.unroll)[1]

    def backward_loop(self, dH, G, W_hh):
        W_hh_T = W_hh.T

        def step(a, xs):
            d_out, g = xs
            dz = (a + d_out) * g
            return dz @ W_hh_T, dz

        zero = jnp.zeros_like(dH[0])
        return jax.lax.scan(step, zero, (dH, G), reverse=True, unroll=self.unroll)[1]
