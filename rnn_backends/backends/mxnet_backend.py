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
from ..params import layer_prefix
from .base import Backend

# Gluon stacks a layer's gates along the rows in this order (the book's letters; Gluon's GRU "n"
# is "h" and its LSTM "g"/"c" is "c").
GLUON_GATES = {"rnn": ("h",), "gru": ("r", "z", "h"), "lstm": ("i", "f", "c", "o")}


class MxnetOps(cells.Ops):
    def __init__(self, dtype: str) -> None:
        self.dtype = dtype

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
        self._rnn: gluon.HybridBlock | None = None
        self._rnn_key: tuple[Any, ...] | None = None
        # canonical name -> (Gluon parameter, gate row block, number of gates); see native_logits
        self._routed: dict[str, tuple[gluon.Parameter, int, int]] = {}
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
        # in Gluon's parameters, in Gluon's layout (the gates stacked along the rows, weights
        # transposed), and are mapped back to canonical names here. Adding (rather than
        # replacing) keeps any use of the weight outside the layer, and makes a new array, so
        # Gluon's grad buffer can be overwritten by the next backward.
        for k, (param, gate, n_gates) in self._routed.items():
            g = param.grad(self._ctx)
            rows = g.shape[0] // n_gates
            part = g[gate * rows : (gate + 1) * rows]
            grads[k] = grads[k] + (part.T if part.ndim == 2 else part)
        self._routed = {}
        return value.detach(), self._detach(aux), grads

    def _detach(self, x):
        return x.detach()

    def _inference(self):
        return autograd.pause(train_mode=False)

    # --- 5. native layer: gluon.rnn.RNN / GRU / LSTM ---------------------------------------------

    def _native_layer(self, model: Any) -> gluon.HybridBlock:
        key = (model.cell, model.vocab_size, model.hidden_size, model.num_layers,
               model.num_directions)
        if self._rnn_key != key:
            options = {
                "num_layers": model.num_layers,
                "bidirectional": model.num_directions == 2,
                "layout": "NTC",
                "input_size": model.vocab_size,
                "dtype": self.dtype,
            }
            if model.cell == "rnn":
                # activation must be explicit: Gluon's rnn.RNN defaults to relu.
                layer = gluon.rnn.RNN(model.hidden_size, activation="tanh", **options)
            elif model.cell == "gru":
                layer = gluon.rnn.GRU(model.hidden_size, **options)
            else:
                layer = gluon.rnn.LSTM(model.hidden_size, **options)
            # Gluon's default uniform initializer fails for float64 under set_np(); the values
            # are overwritten before every use anyway.
            layer.initialize(mx.init.Zero(), ctx=self._ctx)
            # Gluon computes x W_i2h^T + b_i2h + h W_h2h^T + b_h2h per gate. The canonical model
            # has one bias per gate, so every b_h2h stays at its zero initial value and is never
            # trained (for the GRU that is the bias inside r * (h W_hn^T + b_hn)).
            for name, param in layer.collect_params().items():
                if name.endswith("h2h_bias"):
                    param.grad_req = "null"
            layer.hybridize()
            self._rnn, self._rnn_key = layer, key
        assert self._rnn is not None
        return self._rnn

    def native_logits(self, params: dict[str, Any], X: Any, h0: Any) -> tuple[Any, Any]:
        model = self.model(params)
        if model.cell == "gru" and not model.gru_reset_after:
            raise self._reset_before_unsupported("Gluon's rnn.GRU")
        layer = self._native_layer(model)
        gates = GLUON_GATES[model.cell]
        D, LD = model.num_directions, model.num_layers * model.num_directions
        # Gluon 1.x parameters own their storage, so autodiff cannot flow from our arrays into the
        # layer. Copy the canonical weights in (off the graph), transposed with the gates stacked
        # along the rows, and remember where each went, so value_and_grad can read the gradients
        # back from the layer under canonical names. Gluon names the backward direction "r<k>".
        routes: dict[str, tuple[gluon.Parameter, int, int]] = {}
        with autograd.pause():
            for layer_index in range(model.num_layers):
                for d in range(D):
                    pre = layer_prefix(layer_index, d)
                    gluon_pre = f"{'r' if d else 'l'}{layer_index}_"
                    for gluon_name, kind in (("i2h_weight", "W_x"), ("h2h_weight", "W_h"),
                                             ("i2h_bias", "b_")):
                        param = getattr(layer, gluon_pre + gluon_name)
                        names = [pre + kind + g for g in gates]
                        parts = [params[n].T if kind != "b_" else params[n] for n in names]
                        param.set_data(mnp.concatenate(parts, axis=0))
                        for k, n in enumerate(names):
                            routes[n] = (param, k, len(gates))
        self._routed = routes
        # Always pass the state, (L * D, B, H) each, [h] or [h, c]: it carries across batches,
        # and a hybridized layer inside another hybridized block cannot build its own zero state.
        parts = self._carry_parts(model, h0)
        begin = [mnp.stack(parts[s * LD : (s + 1) * LD]) for s in range(len(parts) // LD)]
        x = self.ops.one_hot(X, model.vocab_size)
        if autograd.is_recording():
            # MXNet 1.9.1's fused RNN operator (CPU) gets every layer's weight gradients but the
            # last one's wrong, silently, when no gradient is asked of its input: it then skips the
            # data gradient that the layers below need. Asking for it (and ignoring it) fixes that.
            x.attach_grad()
        out, states = layer(x, begin)
        final = [s[k] for s in states for k in range(LD)]
        return cells.output_logits(self.ops, params, out), self._join_carry(final)

    # --- 6. training step: the fused step (fast variant), else the generic one -------------------
    # Outside ``autograd.record()`` MXNet records nothing, so the base ``_step``'s clip and SGD
    # update already run off the graph; the new parameters stay MXNet arrays between steps. The
    # fast variant runs rnn_backends.fastpath's hand-written backward with nothing recorded.

    def _step(self, params, X, Y, h0, lr, max_norm):
        if self.variant == "fast":
            from .. import fastpath
            from .mxnet_fast import MxnetFusedOps

            try:
                return fastpath.train_step(
                    MxnetFusedOps(self.dtype), params, X, Y, h0, lr, max_norm
                )
            except NotImplementedError:
                pass  # not a one-layer tanh RNN: the generic step
        return super()._step(params, X, Y, h0, lr, max_norm)

    def version(self) -> str:
        return str(mx.__version__)
