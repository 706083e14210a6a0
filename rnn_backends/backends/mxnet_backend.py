"""MXNet adapter: imperative autograd over the shared cell math, plus Gluon's ``rnn.RNN``.

MXNet 1.9.1 is the last release (the project is retired). This adapter uses its NumPy-compatible
interface (``mxnet.np`` / ``mxnet.npx`` after ``npx.set_np()``), not the legacy ``mx.nd``.
Quirks handled here, each next to the code it affects:

* creation functions and ``npx.one_hot`` default to float32, so every one gets an explicit dtype;
* Gluon's ``rnn.RNN`` defaults to **relu** (the textbook's concise MXNet RNN is a relu RNN);
* the state always goes into ``rnn.RNN`` explicitly (a hybridized layer needs a begin state);
* Gluon's default (uniform) initializer fails for float64 parameters under ``set_np()``;
* Gluon's ``clip_global_norm`` fails under ``set_np()``: clipping is ``cells.clip_and_sgd``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, npx
from mxnet import np as mnp

from .. import cells
from .base import Backend


class MxnetOps(cells.Ops):
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype

    matmul = staticmethod(mnp.matmul)
    tanh = staticmethod(mnp.tanh)
    sqrt = staticmethod(mnp.sqrt)

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


class MxnetBackend(Backend):
    name = "mxnet"
    framework = "mxnet"

    # --- 1. arrays, device and precision ----------------------------------------------------------

    def _place(self, device: str | None) -> str:
        # NumPy semantics (zero-size shapes, np-style broadcasting and indexing) are thread-local
        # global state in MXNet; set them whenever a backend is made so that no caller has to.
        npx.set_np()
        n_gpus = mx.context.num_gpus()
        want_gpu = device in ("gpu", "cuda") or (device is None and n_gpus > 0)
        if want_gpu and n_gpus == 0:
            from ..errors import BackendUnavailableError

            raise BackendUnavailableError(
                "device 'gpu' asked for, but MXNet sees no GPU (the PyPI 'mxnet' wheel is "
                "CPU-only; a CUDA build is 'mxnet-cuXXX')"
            )
        # MXNet 1.9 has no float32 matmul-precision switch to set: its CPU kernels are full
        # precision, and the tests compare on the CPU.
        self._ctx = mx.gpu(0) if want_gpu else mx.cpu()
        self._rnn: gluon.rnn.RNN | None = None
        self._rnn_key: tuple[int, int] | None = None
        self._routed: dict[str, tuple[gluon.Parameter, bool]] = {}
        return str(self._ctx)

    def asarray(self, x: np.ndarray) -> mnp.ndarray:
        x = np.asarray(x)
        dtype = "int64" if x.dtype.kind in "iub" else self.dtype
        return mnp.array(x, dtype=dtype, ctx=self._ctx)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.asnumpy()

    # --- 2. ops -----------------------------------------------------------------------------------

    def _make_ops(self) -> cells.Ops:
        return MxnetOps(self.dtype)

    # --- 3. time loop: a Python loop (the base class's), stacking with mx.np.stack ---------------

    def _stack(self, ys):
        return mnp.stack(ys)

    # --- 4. autodiff ------------------------------------------------------------------------------

    def value_and_grad(
        self, fn: Callable[[dict[str, Any]], tuple[Any, Any]], params: dict[str, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        # detach() gives fresh handles on the same memory, so attach_grad does not touch the
        # caller's arrays.
        leaves = {k: v.detach() for k, v in params.items()}
        for v in leaves.values():
            v.attach_grad()
        self._routed = {}
        with autograd.record():
            value, aux = fn(leaves)
        value.backward()
        grads = {k: v.grad for k, v in leaves.items()}
        # The native layer reads copies of some weights (see native_logits); their gradients land
        # in Gluon's parameters, in Gluon's layout, and are mapped back to canonical names here.
        # Adding (rather than replacing) keeps any use of the weight outside the layer, and makes
        # a new array, so Gluon's grad buffer can be overwritten by the next backward.
        for k, (param, transposed) in self._routed.items():
            g = param.grad(self._ctx)
            grads[k] = grads[k] + (g.T if transposed else g)
        self._routed = {}
        return value.detach(), self._detach(aux), grads

    def _detach(self, x):
        return x.detach()

    def _inference(self):
        return autograd.pause(train_mode=False)

    # --- 5. native layer: gluon.rnn.RNN -----------------------------------------------------------

    def _native_layer(self, V: int, H: int) -> gluon.rnn.RNN:
        if self._rnn_key != (V, H):
            # activation must be explicit: Gluon's rnn.RNN defaults to relu.
            layer = gluon.rnn.RNN(
                H, activation="tanh", layout="NTC", input_size=V, dtype=self.dtype
            )
            # Gluon's default uniform initializer fails for float64 under set_np(); the values
            # are overwritten before every use anyway.
            layer.initialize(mx.init.Zero(), ctx=self._ctx)
            # Gluon computes x W_i2h^T + b_i2h + h W_h2h^T + b_h2h. The canonical model has one
            # bias, so b_h2h stays at its zero initial value and is never trained.
            layer.l0_h2h_bias.grad_req = "null"
            layer.hybridize()
            self._rnn, self._rnn_key = layer, (V, H)
        assert self._rnn is not None
        return self._rnn

    def native_logits(self, params: dict[str, Any], X: Any, h0: Any) -> tuple[Any, Any]:
        V, H = params["W_xh"].shape
        layer = self._native_layer(V, H)
        # Gluon 1.x parameters own their storage, so autodiff cannot flow from our arrays into the
        # layer. Copy the canonical weights in (off the graph) and remember where they went, so
        # value_and_grad can read the gradients back from the layer under canonical names.
        routes = {
            "W_xh": (layer.l0_i2h_weight, True),  # (H, V) = W_xh^T
            "W_hh": (layer.l0_h2h_weight, True),  # (H, H) = W_hh^T
            "b_h": (layer.l0_i2h_bias, False),
        }
        with autograd.pause():
            for k, (param, transposed) in routes.items():
                param.set_data(params[k].T if transposed else params[k])
        self._routed = routes
        # Always pass the state, (1, B, H): it carries across batches, and a hybridized rnn.RNN
        # inside another hybridized block cannot build its own zero state.
        out, (h_n,) = layer(self.ops.one_hot(X, V), [mnp.expand_dims(h0, 0)])
        return cells.output_logits(self.ops, params, out), h_n[0]

    # --- 6. training step: the generic one --------------------------------------------------------
    # Outside ``autograd.record()`` MXNet records nothing, so the base ``_step``'s clip and SGD
    # update already run off the graph; the new parameters stay MXNet arrays between steps.

    def version(self) -> str:
        return str(mx.__version__)
