"""MXNet 1.9.1 as a reader of the textbook would write it (its NumPy interface, as the book's
MXNet tab): the scratch model as a Gluon block trained eagerly under ``autograd.record``, the
same block hybridized, and Gluon's ``rnn.RNN`` with a ``Dense`` output layer, hybridized.

Each ``make`` function takes the canonical weights and returns a step ``(X, Y) -> loss``
(:data:`rnn_backends.stock.StepFn`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, npx
from mxnet import np as mnp
from mxnet.gluon import nn, rnn


def _context(gpu: bool) -> mx.Context:
    npx.set_np()  # the book's MXNet code runs with NumPy semantics
    return mx.gpu(0) if gpu else mx.cpu()


def clip_gradients(params: list[gluon.Parameter], grad_clip: float, ctx: mx.Context) -> None:
    """The book's clipping: the global norm read on the host, every gradient scaled by
    ``grad_clip / norm`` when it exceeds ``grad_clip``."""
    grads = [p.grad(ctx) for p in params if p.grad_req != "null"]
    norm = math.sqrt(sum(float((g**2).sum()) for g in grads))
    if norm > grad_clip:
        for g in grads:
            g[:] *= grad_clip / norm


class _Scratch(gluon.HybridBlock):
    """The book's scratch RNN language model as one Gluon block (hybridizable: the time loop is
    unrolled into the graph when it is)."""

    def __init__(self, V: int, H: int, T: int, dtype: str) -> None:
        super().__init__()
        self.V, self.H, self.T, self.float = V, H, T, dtype
        with self.name_scope():
            for name, shape in (("W_xh", (V, H)), ("W_hh", (H, H)), ("b_h", (H,)),
                                ("W_hq", (H, V)), ("b_q", (V,))):
                setattr(self, name, self.params.get(name, shape=shape, dtype=dtype))

    def hybrid_forward(self, F, X, W_xh, W_hh, b_h, W_hq, b_q):
        """Logits (B, T, V) for int ids X (B, T)."""
        inputs = F.npx.one_hot(X.T, self.V, dtype=self.float)  # (T, B, V)
        state = F.np.zeros_like(F.np.dot(inputs[0], W_xh))
        outputs = []
        for t in range(self.T):
            state = F.np.tanh(F.np.dot(inputs[t], W_xh) + F.np.dot(state, W_hh) + b_h)
            outputs.append(F.np.dot(state, W_hq) + b_q)
        return F.np.stack(outputs, axis=1)


class _Concise(gluon.HybridBlock):
    """The book's concise model: Gluon ``rnn.RNN`` (time-major, tanh) and ``nn.Dense``."""

    def __init__(self, V: int, H: int, dtype: str) -> None:
        super().__init__()
        self.V, self.H, self.float = V, H, dtype
        with self.name_scope():
            # activation must be given: Gluon's rnn.RNN defaults to relu.
            self.rnn = rnn.RNN(H, activation="tanh", input_size=V, dtype=dtype)
            self.dense = nn.Dense(V, flatten=False, in_units=H, dtype=dtype)

    def hybrid_forward(self, F, X, h0):
        inputs = F.npx.one_hot(X.T, self.V, dtype=self.float)
        outputs, _ = self.rnn(inputs, [h0])  # a hybridized layer needs its begin state
        return F.np.swapaxes(self.dense(outputs), 0, 1)


def _trainer(
    net: gluon.HybridBlock, forward: Callable, ctx: mx.Context, lr: float, grad_clip: float
) -> Callable[[np.ndarray, np.ndarray], float]:
    """The book's step: record, loss, backward, clip, ``gluon.Trainer`` SGD."""
    params = list(net.collect_params().values())
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()

    def step(X: np.ndarray, Y: np.ndarray) -> float:
        X_, Y_ = mnp.array(X, dtype=np.int64, ctx=ctx), mnp.array(Y, dtype=np.int64, ctx=ctx)
        with autograd.record():
            loss = loss_fn(forward(X_), Y_).mean()
        loss.backward()
        clip_gradients(params, grad_clip, ctx)
        trainer.step(1)
        return float(loss)

    return step


def _scratch(params, dtype: str, gpu: bool, lr: float, grad_clip: float, hybrid: bool,
             T: int = 32):
    ctx = _context(gpu)
    V, H = params["W_xh"].shape
    net = _Scratch(V, H, T, dtype)
    net.initialize(mx.init.Zero(), ctx=ctx)  # Gluon's default initializer fails for float64
    for name, value in params.items():
        getattr(net, name).set_data(mnp.array(value, dtype=dtype, ctx=ctx))
    if hybrid:
        net.hybridize(static_alloc=True, static_shape=True)
    return _trainer(net, net, ctx, lr, grad_clip)


def book(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """The book's eager training step (the block not hybridized: one op at a time)."""
    return _lazy_T(params, dtype, gpu, lr, grad_clip, hybrid=False)


def compiled(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """The same block hybridized: one cached graph per input shape."""
    return _lazy_T(params, dtype, gpu, lr, grad_clip, hybrid=True)


def _lazy_T(params, dtype, gpu, lr, grad_clip, hybrid):
    """The scratch block unrolls a fixed number of steps, so it is built at the first batch."""
    made: dict[int, Callable] = {}

    def step(X: np.ndarray, Y: np.ndarray) -> float:
        if not made:
            made[X.shape[1]] = _scratch(params, dtype, gpu, lr, grad_clip, hybrid, X.shape[1])
        (fn,) = made.values()
        return fn(X, Y)

    return step


def layer(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """Gluon ``rnn.RNN`` and ``nn.Dense``, hybridized."""
    ctx = _context(gpu)
    V, H = params["W_xh"].shape
    net = _Concise(V, H, dtype)
    net.initialize(mx.init.Zero(), ctx=ctx)
    # Gluon computes x W_i2h^T + b_i2h + h W_h2h^T + b_h2h: transposed weights, and a second
    # bias the book's model lacks, held at zero and left out of training.
    for param, value in ((net.rnn.l0_i2h_weight, params["W_xh"].T),
                         (net.rnn.l0_h2h_weight, params["W_hh"].T),
                         (net.rnn.l0_i2h_bias, params["b_h"]),
                         (net.dense.weight, params["W_hq"].T), (net.dense.bias, params["b_q"])):
        param.set_data(mnp.array(np.ascontiguousarray(value), dtype=dtype, ctx=ctx))
    net.rnn.l0_h2h_bias.grad_req = "null"
    net.hybridize(static_alloc=True, static_shape=True)

    def forward(X):
        return net(X, mnp.zeros((1, X.shape[0], H), dtype=dtype, ctx=ctx))

    return _trainer(net, forward, ctx, lr, grad_clip)
