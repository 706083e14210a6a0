"""PyTorch adapter: eager autograd over the shared cell math, plus ``torch.nn.RNN``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from .. import cells
from .base import Backend


class TorchOps(cells.Ops):
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    matmul = staticmethod(torch.matmul)
    tanh = staticmethod(torch.tanh)
    sqrt = staticmethod(torch.sqrt)

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

    # --- 5. native layer: torch.nn.RNN ------------------------------------------------------------

    def native_logits(self, params, X, h0):
        V, H = params["W_xh"].shape
        key = (V, H)
        if getattr(self, "_rnn_key", None) != key:
            self._rnn = torch.nn.RNN(V, H, nonlinearity="tanh", batch_first=True).to(
                self._device, self._tdtype
            )
            self._rnn_key = key
        # torch computes x W_ih^T + b_ih + h W_hh^T + b_hh: transposed weights, two biases.
        # The canonical model has one bias, so b_hh is held at zero.
        weights = {
            "weight_ih_l0": params["W_xh"].T,
            "weight_hh_l0": params["W_hh"].T,
            "bias_ih_l0": params["b_h"],
            "bias_hh_l0": torch.zeros_like(params["b_h"]),
        }
        out, h_n = functional_call(self._rnn, weights, (self.ops.one_hot(X, V), h0[None]))
        return cells.output_logits(self.ops, params, out), h_n[0]

    # --- 6. training step: the generic one, with the SGD update outside autograd ----------------

    def _step(self, params, X, Y, h0, lr, max_norm):
        loss, h_last, grads = self.value_and_grad(self._loss_fn(X, Y, h0), params)
        with torch.no_grad():
            new_params, norm = cells.clip_and_sgd(self.ops, params, grads, lr, max_norm)
        return new_params, loss, norm, h_last

    def version(self) -> str:
        return torch.__version__
