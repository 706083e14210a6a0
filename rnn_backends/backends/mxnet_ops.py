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
    its own ops, and each op costs a Python call and an engine push besides its kernel. Three of
    MXNet's NumPy-interface kernels are an order of magnitude slower than their oneDNN-backed
    legacy twins on the CPU, so the hot ones are swapped (measured at B=1024, H=32): ``np.tanh``
    (~500 us) for ``npx.activation`` (~40 us), ``np.matmul`` (~100-200 us) for
    ``npx.fully_connected`` (~60 us), ``np.exp`` of the logits for ``npx.softmax``; the scatter-add
    is the backward of ``take``; reductions over the N tokens run as matrix products. Each time
    step is two ops each way: BLAS ``gemm`` computes ``C + A B`` in one op (the legacy
    ``linalg.gemm``), so the sum with the input projection (forward) or the output gradient
    (backward) needs no op of its own. Reshapes are views (``reshape_view``), not copying ops.
    """

    exp = staticmethod(mnp.exp)

    def tanh(self, x):
        return npx.activation(x, act_type="tanh")

    def reshape(self, x, shape):
        return x.reshape_view(shape)  # arrays here are contiguous: a view, no op

    def transpose(self, w):
        return w.T

    def mm_tn(self, a, b):
        # A sum over zero rows is the zero matrix. MXNet 1.9.1's legacy dot kills the process
        # with SIGFPE (an integer division by zero inside the kernel) when the contracted length
        # is 0, as the fast step's W_hh term is at num_steps=1, so that case never reaches it.
        if a.shape[0] == 0:
            return mnp.zeros((a.shape[1], b.shape[1]), dtype=a.dtype, ctx=a.ctx)
        # The legacy dot reads a transposed in place; mx.np would copy a.T first.
        return mx.nd.dot(_nd(a), _nd(b), transpose_a=True).as_np_ndarray()

    def sum_rows(self, x):
        # A reduction over the long axis as a matrix-vector product: several times faster here.
        ones = mnp.ones((x.shape[0], 1), dtype=x.dtype, ctx=x.ctx)
        return self.mm_tn(x, ones).reshape_view((x.shape[1],))

    def output_head(self, hf, W_hq, b_q, Yf):
        N, V = hf.shape[0], W_hq.shape[1]
        logits = npx.fully_connected(hf, W_hq.T, b_q, num_hidden=V, flatten=False)
        probs = npx.softmax(logits, axis=-1)
        loss = _cross_entropy(logits, probs, Yf)
        # softmax - onehot, divided by N: the legacy broadcast ops, one pass.
        onehot = mx.nd.one_hot(_nd(Yf), V, dtype=self.dtype)
        d_logits = ((_nd(probs) - onehot) * (1.0 / N)).as_np_ndarray()
        dH = npx.fully_connected(d_logits, W_hq, no_bias=True, num_hidden=W_hq.shape[0])
        return loss, self.mm_tn(hf, d_logits), self.sum_rows(d_logits), dH

    def output_loss(self, hf, W_hq, b_q, Yf):
        logits = npx.fully_connected(hf, W_hq.T, b_q, num_hidden=W_hq.shape[1], flatten=False)
        return _cross_entropy(logits, npx.softmax(logits, axis=-1), Yf)

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
        W, h, hs = _nd(W_hh), _nd(h0), []
        for t in range(xw.shape[0]):
            pre = mx.nd.linalg.gemm(h, W, _nd(xw[t]), alpha=1.0, beta=1.0)  # xw_t + h W_hh
            h = mx.nd.Activation(pre, act_type="tanh")
            hs.append(h)
        return mx.nd.stack(*hs).as_np_ndarray()

    def backward_loop(self, dH, G, W_hh):
        W, T = _nd(W_hh), dH.shape[0]
        dzs: list = [None] * T
        a = _nd(dH[T - 1])
        for t in range(T - 1, -1, -1):
            dzs[t] = a * _nd(G[t])
            if t:  # dH_{t-1} + dz_t W_hh^T
                a = mx.nd.linalg.gemm(dzs[t], W, _nd(dH[t - 1]), transpose_b=True, alpha=1.0,
                                      beta=1.0)
        return mx.nd.stack(*dzs).as_np_ndarray()


def _cross_entropy(logits: mnp.ndarray, probs: mnp.ndarray, Yf: mnp.ndarray) -> mnp.ndarray:
    """Mean over the rows of -log softmax(logits)[y], from the softmax ``probs`` (N, V).

    MXNet 1.9.1's float32 log_softmax carries a systematic error of about 12 units of roundoff
    at near-uniform logits (a model's first steps), enough to move the mean loss beyond float32's
    rounding band. Here, per row, -log p_y = (max - logit_y) - log p_max: the largest probability
    is exp(0) / sum, so its log is minus the log of the softmax's sum, and it never underflows
    (p_max >= 1/V). Within 0.6 unit of roundoff of float64 in the tests we ran."""
    L, P, Y = _nd(logits), _nd(probs), _nd(Yf)
    rows = (mx.nd.max(L, axis=-1) - mx.nd.pick(L, Y, axis=-1)) - mx.nd.log(mx.nd.max(P, axis=-1))
    return mx.nd.mean(rows).as_np_ndarray()


def _nd(x: mnp.ndarray) -> mx.nd.NDArray:
    """The same array under the legacy interface (no copy), for its oneDNN/BLAS kernels."""
    return x.as_nd_ndarray()
