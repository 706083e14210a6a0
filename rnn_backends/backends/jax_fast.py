"""JAX's fused training step: :mod:`rnn_backends.fastpath` traced into one XLA program.

Both time loops are ``lax.scan`` with the backend's ``unroll``; the hand-written backward replaces
autodiff through the scan (whose transpose keeps more residuals and runs more ops per step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..fastpath import FusedOps
from .jax_backend import JaxOps


class JaxFusedOps(JaxOps, FusedOps):
    exp = staticmethod(jnp.exp)
    stack = staticmethod(jnp.stack)

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
