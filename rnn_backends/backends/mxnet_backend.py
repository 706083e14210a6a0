"""MXNet adapter: imperative autograd over the shared cell math, plus Gluon's ``rnn.RNN``.

MXNet 1.9.1 is the last release (the project is retired). This adapter uses its NumPy-compatible
interface (``mxnet.np`` / ``mxnet.npx`` after ``npx.set_np()``), not the legacy ``mx.nd``.
Quirks handled here, each next to the code it affects:

* creation functions and ``npx.one_hot`` default to float32, so every one gets an explicit dtype;
* Gluon's ``rnn.RNN`` defaults to **relu** (the textbook's concise MXNet RNN is a relu RNN);
* the state always goes into ``rnn.RNN`` explicitly (a hybridized layer needs a begin state);
* Gluon's default (uniform) initializer fails for float64 parameters under ``set_np()``;
* Gluon's ``clip_global_norm`` fails under ``set_np()``: clipping is in ``optim.update``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, npx
from mxnet import np as mnp

from .. import cells
from ..config import CELL_SPECS, ModelConfig
from ..params import layer_prefix
from .base import Backend
from .mxnet_ops import MxnetFastOps, MxnetOps

# Where the native layer put a canonical weight: (Gluon parameter, gate block, number of gates).
Route = tuple[gluon.Parameter, int, int]
# A Gluon parameter's attribute name on the layer, the canonical names in it, and its value.
GluonWeight = tuple[str, list[str], Any]


class MxnetBackend(Backend):
    name = "mxnet"
    framework = "mxnet"
    gpu_hint = "the PyPI 'mxnet' wheel is CPU-only; a CUDA build is 'mxnet-cuXXX'"

    # --- 1. arrays and device ---------------------------------------------------------------------

    def _gpu_count(self) -> int:
        return mx.context.num_gpus()

    def _place(self, gpu: bool) -> str:
        # NumPy semantics (zero-size shapes, np-style broadcasting and indexing) are thread-local
        # global state in MXNet; set them whenever a backend is made so that no caller has to.
        npx.set_np()
        # MXNet 1.9 has no float32 matmul-precision switch to set: its CPU kernels are full
        # precision, and the tests compare on the CPU.
        self._ctx = mx.gpu(self.device_index) if gpu else mx.cpu()
        return str(self._ctx)

    def _to_tensor(self, x: np.ndarray) -> mnp.ndarray:
        return mnp.array(x, dtype=x.dtype, ctx=self._ctx)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.asnumpy()

    # --- 2. ops -----------------------------------------------------------------------------------

    def _make_ops(self) -> MxnetOps:
        return MxnetOps(self.tensor_dtype)

    def _make_fast_ops(self) -> MxnetFastOps:
        return MxnetFastOps(self.tensor_dtype)

    # --- 3. time loop: the base class's Python loop -----------------------------------------------

    # --- 4. autodiff ------------------------------------------------------------------------------

    def value_and_grad(self, fn, params, *args):
        # detach() gives fresh handles on the same memory, so attach_grad does not touch the
        # caller's arrays.
        leaves = {k: v.detach() for k, v in params.items()}
        for v in leaves.values():
            v.attach_grad()
        self._routes: dict[str, Route] = {}
        with autograd.record():
            value, aux = fn(leaves, *args)
        value.backward()
        grads = {k: v.grad for k, v in leaves.items()}
        # The native layer reads copies of some weights (see _load_native); their gradients land
        # in Gluon's parameters, in Gluon's layout (the gates stacked along the rows, weights
        # transposed), and are mapped back to canonical names here. Adding (rather than
        # replacing) keeps any use of the weight outside the layer, and makes a new array, so
        # Gluon's grad buffer can be overwritten by the next backward.
        for k, (param, gate, n_gates) in self._routes.items():
            g = param.grad(self._ctx)
            rows = g.shape[0] // n_gates
            part = g[gate * rows : (gate + 1) * rows]
            grads[k] = grads[k] + (part.T if part.ndim == 2 else part)
        self._routes = {}
        return value.detach(), self._detach(aux), grads

    def _detach(self, x):
        return x.detach()

    def _inference(self):
        return autograd.pause(train_mode=False)

    # --- 5. native layer: gluon.rnn.RNN / GRU / LSTM --------------------------------------------

    def _native_layer(self, model: ModelConfig) -> gluon.HybridBlock:
        """The hybridized Gluon layer for ``model``, made once."""

        def make() -> gluon.HybridBlock:
            layer = self.gluon_layer(model, self.dtype)
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
            return layer

        return self._cached(("native", model), make)

    @staticmethod
    def gluon_layer(model: ModelConfig, dtype: str) -> gluon.HybridBlock:
        """The Gluon layer of ``model``, uninitialized (shared with :mod:`rnn_backends.export`)."""
        options = {"num_layers": model.num_layers, "bidirectional": model.bidirectional,
                   "layout": "NTC", "input_size": model.vocab_size, "dtype": dtype}
        if model.cell == "rnn":
            # activation must be explicit: Gluon's rnn.RNN defaults to relu.
            return gluon.rnn.RNN(model.hidden_size, activation="tanh", **options)
        if model.cell == "gru":
            return gluon.rnn.GRU(model.hidden_size, **options)
        return gluon.rnn.LSTM(model.hidden_size, **options)

    @staticmethod
    def gluon_weights(model: ModelConfig, params: dict[str, Any]) -> Iterator[GluonWeight]:
        """Each Gluon parameter of the layer the canonical weights fill: its attribute name on
        the layer, the canonical names in its gate blocks, and its value (the one mapping, shared
        with :mod:`rnn_backends.export`).

        Gluon computes x W_i2h^T + b_i2h + h W_h2h^T + b_h2h per gate: weights transposed, the
        gates stacked along the rows in ``CellSpec.gluon_gates`` order; every ``h2h_bias`` stays
        zero. Gluon names the backward direction ``r<k>``.
        """
        gates = CELL_SPECS[model.cell].gluon_gates
        for index in range(model.num_layers):
            for d in range(model.num_directions):
                pre, gluon_pre = layer_prefix(index, d), f"{'r' if d else 'l'}{index}_"
                for gluon_name, kind in (("i2h_weight", "W_x"), ("h2h_weight", "W_h"),
                                         ("i2h_bias", "b_")):
                    names = [pre + kind + g for g in gates]
                    parts = [params[n].T if kind != "b_" else params[n] for n in names]
                    yield gluon_pre + gluon_name, names, mnp.concatenate(parts, axis=0)

    def _load_native(self, layer: Any, model: ModelConfig, params: dict[str, Any]) -> None:
        """Copy the canonical weights into the Gluon layer and record their routes.

        Gluon 1.x parameters own their storage, so autodiff cannot flow from our arrays into the
        layer. The weights are copied in off the graph (:meth:`gluon_weights`);
        ``value_and_grad`` reads the gradients back from the layer under canonical names.
        """
        routes: dict[str, Route] = {}
        with autograd.pause():
            for attr, names, value in self.gluon_weights(model, params):
                param = getattr(layer, attr)
                param.set_data(value)
                for k, n in enumerate(names):
                    routes[n] = (param, k, len(names))
        self._routes = routes

    def _native_forward(self, params, X, h0):
        model = self.model(params)
        self._refuse_reset_before(model, "Gluon's rnn.GRU")
        layer = self._native_layer(model)
        self._load_native(layer, model, params)
        LD = model.num_layers * model.num_directions
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

    # --- 6. compilation: none (imperative); the fast step runs with nothing recorded -------------
