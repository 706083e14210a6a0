"""PyTorch adapter: eager autograd over the shared cell math, plus ``torch.nn.RNN/GRU/LSTM``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from .. import cells
from ..params import layer_prefix
from .base import Backend

# torch stacks the gates of a layer in this order (the book's letters; torch's GRU "n" is "h" and
# its LSTM "g" is "c").
TORCH_GATES = {"rnn": ("h",), "gru": ("r", "z", "h"), "lstm": ("i", "f", "c", "o")}


class TorchOps(cells.Ops):
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    matmul = staticmethod(torch.matmul)
    tanh = staticmethod(torch.tanh)
    sigmoid = staticmethod(torch.sigmoid)
    sqrt = staticmethod(torch.sqrt)
    stack = staticmethod(torch.stack)

    def flip(self, x):
        return torch.flip(x, dims=(0,))

    def take_rows(self, w, ids):
        return w[ids]

    def one_hot(self, ids, depth):
        return F.one_hot(ids, depth).to(self.dtype)

    def concat(self, xs, axis):
        return torch.cat(xs, dim=axis)

    def swap_bt(self, x):
        return x.transpose(0, 1)

    def logsumexp(self, x):
        return torch.logsumexp(x, dim=-1, keepdim=True)

    def pick(self, x, ids):
        return torch.gather(x, -1, ids.unsqueeze(-1)).squeeze(-1)

    def mean(self, x):
        return x.mean()

    def sum(self, x):
        return x.sum()

    def minimum(self, x, y):
        return torch.clamp(x, max=y)


class TorchBackend(Backend):
    name = "torch"
    framework = "torch"

    # --- 1. arrays, device and precision ----------------------------------------------------------

    def _place(self, device: str | None) -> str:
        want_gpu = device in ("gpu", "cuda") or (device is None and torch.cuda.is_available())
        if want_gpu and not torch.cuda.is_available():
            from ..errors import BackendUnavailableError

            raise BackendUnavailableError("device 'gpu' asked for, but PyTorch sees no CUDA GPU")
        # Full float32 precision: comparisons against the oracle must not run in TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self._device = torch.device("cuda" if want_gpu else "cpu")
        self._tdtype = getattr(torch, self.dtype)
        if want_gpu:
            return f"cuda:{torch.cuda.current_device()} ({torch.cuda.get_device_name()})"
        return "cpu"

    def asarray(self, x: np.ndarray) -> torch.Tensor:
        x = np.asarray(x)
        dtype = torch.int64 if x.dtype.kind in "iub" else self._tdtype
        return torch.as_tensor(x, dtype=dtype, device=self._device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    # --- 2. ops -----------------------------------------------------------------------------------

    def _make_ops(self) -> cells.Ops:
        return TorchOps(self._tdtype)

    # --- 3. time loop: a Python loop (the base class's), stacking with torch.stack ---------------

    def _stack(self, ys):
        return torch.stack(ys)

    # --- 4. autodiff ------------------------------------------------------------------------------

    def value_and_grad(self, fn, params):
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        value, aux = fn(leaves)
        grads = torch.autograd.grad(value, list(leaves.values()))
        return value.detach(), self._detach(aux), dict(zip(leaves, grads, strict=True))

    def _detach(self, x):
        return x.detach()

    def _inference(self):
        return torch.no_grad()

    # --- 5. native layer: torch.nn.RNN / GRU / LSTM ---------------------------------------------

    def native_logits(self, params, X, h0):
        model = self.model(params)
        if model.cell == "gru" and not model.gru_reset_after:
            raise self._reset_before_unsupported("torch.nn.GRU")
        V, H, L, D = model.vocab_size, model.hidden_size, model.num_layers, model.num_directions
        key = (model.cell, V, H, L, D)
        if getattr(self, "_rnn_key", None) != key:
            layer_cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
            extra = {"nonlinearity": "tanh"} if model.cell == "rnn" else {}
            self._rnn = layer_cls[model.cell](
                V, H, num_layers=L, bidirectional=D == 2, batch_first=True, **extra
            ).to(self._device, self._tdtype)
            self._rnn_key = key
        # torch computes x W_ih^T + b_ih + h W_hh^T + b_hh per gate, the gates stacked along the
        # rows in TORCH_GATES order: transposed weights and two biases. The canonical model has
        # one bias per gate, so b_hh is held at zero. Its GRU applies the reset gate after the
        # matmul, r * (h W_hn^T + b_hn), which is the reset-after GRU exactly with b_hn = 0.
        gates = TORCH_GATES[model.cell]
        weights = {}
        for layer in range(L):
            for d in range(D):
                pre = layer_prefix(layer, d)
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                for side, kind in (("ih", "W_x"), ("hh", "W_h")):
                    stacked = [params[pre + kind + g].T for g in gates]
                    weights[f"weight_{side}{suffix}"] = torch.cat(stacked)
                bias = torch.cat([params[pre + "b_" + g] for g in gates])
                weights["bias_ih" + suffix] = bias
                weights["bias_hh" + suffix] = torch.zeros_like(bias)
        # States are (L * D, B, H), layer-major with the reverse direction second: our layout.
        parts = self._carry_parts(model, h0)
        LD = L * D
        hx = (
            (torch.stack(parts[:LD]), torch.stack(parts[LD:]))
            if model.cell == "lstm"
            else torch.stack(parts)
        )
        out, h_n = functional_call(self._rnn, weights, (self.ops.one_hot(X, V), hx))
        final = [*h_n[0], *h_n[1]] if model.cell == "lstm" else list(h_n)
        return cells.output_logits(self.ops, params, out), self._join_carry(final)

    # --- 6. training step: the fused step (fast variant), else autograd + SGD outside the tape --

    def _step(self, params, X, Y, h0, lr, max_norm):
        if self.variant == "fast":
            try:
                return self._fused_step(params, X, Y, h0, lr, max_norm)
            except NotImplementedError:
                pass  # not a one-layer tanh RNN: the generic step below
        loss, h_last, grads = self.value_and_grad(self._loss_fn(X, Y, h0), params)
        with torch.no_grad():
            new_params, norm = cells.clip_and_sgd(self.ops, params, grads, lr, max_norm)
        return new_params, loss, norm, h_last

    def _fused_step(self, params, X, Y, h0, lr, max_norm):
        """:func:`rnn_backends.fastpath.train_step` with a hand-written backward, no tape."""
        from .. import fastpath
        from .torch_fast import TorchFusedOps

        ops = getattr(self, "_fused_ops", None)
        if ops is None:
            ops = self._fused_ops = TorchFusedOps(self._tdtype)
        with torch.no_grad():
            return fastpath.train_step(ops, params, X, Y, h0, lr, max_norm)

    def version(self) -> str:
        return torch.__version__
