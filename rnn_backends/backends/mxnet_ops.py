"""MXNet's array functions (``mx.np`` after ``npx.set_np()``): :class:`MxnetOps` for the shared
cell math and :class:`MxnetFastOps` for the fast step (:mod:`rnn_backends.fastpath`)."""

from __future__ import annotations

import mxnet as mx
from mxnet import autograd, npx
from mxnet import np as mnp

from .. import cells
from ..fastpath import FastOps


class MxnetOps(cells.Ops):
    """The shared cell math's array functions in ``mx.np``; ``self.dtype`` is the float dtype."""

    matmul = staticmethod(mnp.matmul)
    tanh = staticmethod(mnp.tanh)
    sqrt = staticmethod(mnp.sqrt)
    stack = staticmethod(mnp.stack)

    def sigmoid(self, x):
        return npx.sigmoid(x)

    def flip(self, x):
        return mnp.flip(x, axis=0)

    def take_rows(self, w, ids):
        return mnp.take(w, ids, axis=0)

    def one_hot(self, ids, depth):
        # npx.one_hot returns float32 unless told otherwise, which would silently demote float64.
        return npx.one_hot(ids, depth, dtype=self.dtype)

    def concat(self, xs, axis):
        return mnp.concatenate(xs, axis=axis)

    def swap_bt(self, x):
        return mnp.swapaxes(x, 0, 1)

    def logsumexp(self, x):
        # mx.np has no logsumexp. Shift by the row maximum so exp cannot overflow; the shift is a
        # constant for the derivative (its gradient cancels exactly), so keep it off the graph.
        m = x.max(axis=-1, keepdims=True).detach()
        return m + mnp.log(mnp.exp(x - m).sum(axis=-1, keepdims=True))

    def pick(self, x, ids):
        return npx.pick(x, ids, axis=-1)

    def mean(self, x):
        return x.mean()

    def sum(self, x):
        return x.sum()

    def minimum(self, x, y):
        return mnp.minimum(x, y)


class MxnetFastOps(MxnetOps, FastOps):
    """The fast step run imperatively, nothing recorded.

    Outside ``autograd.record()`` MXNet builds no graph, so the hand-written backward costs only
    its own ops. Three of MXNet's NumPy-interface kernels are an order of magnitude slower than
    their oneDNN-backed legacy twins on the CPU, so the hot ones are swapped (measured at B=1024,
    H=32): ``np.tanh`` (~500 us) for ``npx.activation`` (~40 us), ``np.matmul`` (~100-200 us) for
    ``npx.fully_connected`` (~60 us), and a one-hot matmul for the scatter-add (~5 ms) for the
    backward of ``take``; reductions over the N tokens run as matrix products.
    """

    exp = staticmethod(mnp.exp)

    def tanh(self, x):
        return npx.activation(x, act_type="tanh")

    def transpose(self, w):
        return w.T

    def mm_tn(self, a, b):
        # A sum over zero rows is the zero matrix. MXNet 1.9.1's legacy dot kills the process
        # with SIGFPE (an integer division by zero inside the kernel) when the contracted length
        # is 0, as the fast step's W_hh term is at num_steps=1, so that case never reaches it.
        if a.shape[0] == 0:
            return mnp.zeros((a.shape[1], b.shape[1]), dtype=a.dtype, ctx=a.ctx)
        # The legacy dot reads a transposed in place; mx.np would copy a.T first.
        return mx.nd.dot(a.as_nd_ndarray(), b.as_nd_ndarray(), transpose_a=True).as_np_ndarray()

    def sum_rows(self, x):
        # A reduction over the long axis as a matrix-vector product: several times faster here.
        ones = mnp.ones((x.shape[0], 1), dtype=x.dtype, ctx=x.ctx)
        return self.mm_tn(x, ones).reshape((x.shape[1],))

    def output_head(self, hf, W_hq, b_q, Yf):
        N, V = hf.shape[0], W_hq.shape[1]
        logits = npx.fully_connected(hf, W_hq.T, b_q, num_hidden=V, flatten=False)
        logp = npx.log_softmax(logits, axis=-1)
        loss = -npx.pick(logp, Yf, axis=-1).mean()
        d_logits = (mnp.exp(logp) - npx.one_hot(Yf, V, dtype=self.dtype)) * (1.0 / N)
        dH = npx.fully_connected(d_logits, W_hq, no_bias=True, num_hidden=W_hq.shape[0])
        return loss, self.mm_tn(hf, d_logits), self.sum_rows(d_logits), dH

    def _mm_t(self, a, w_t):
        """``a @ w_t.T`` through fully_connected, whose weight is laid out (out, in)."""
        return npx.fully_connected(a, w_t, no_bias=True, num_hidden=w_t.shape[0], flatten=False)

    def scatter_rows(self, ids, rows, n):
        # The gradient of a row gather is exactly this scatter-add, and MXNet's take backward
        # accumulates rows without materialising a one-hot matrix.
        w = mnp.zeros((n, rows.shape[1]), dtype=rows.dtype, ctx=rows.ctx)
        w.attach_grad()
        with autograd.record():
            out = mnp.take(w, ids, axis=0)
        out.backward(rows)
        return w.grad

    def forward_loop(self, xw, h0, W_hh):
        W_hh_T = W_hh.T  # transposed once, not per step
        h, hs = h0, []
        for t in range(xw.shape[0]):
            h = self.tanh(xw[t] + self._mm_t(h, W_hh_T))
            hs.append(h)
        return self.stack(hs)

    def backward_loop(self, dH, G, W_hh):
        T = dH.shape[0]
        dzs = [None] * T
        a = dH[T - 1]
        for t in range(T - 1, -1, -1):
            dzs[t] = a * G[t]
            if t:
                a = dH[t - 1] + self._mm_t(dzs[t], W_hh)  # dz W_hh^T
        return self.stack(dzs)
