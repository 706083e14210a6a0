"""PyTorch adapter: eager autograd over the shared cell math, plus ``torch.nn.RNN/GRU/LSTM``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from .. import cells
from ..config import CELL_SPECS, ModelConfig
from ..params import layer_prefix
from .base import Backend
from .torch_ops import TorchFastOps, TorchOps


class TorchBackend(Backend):
    name = "torch"
    framework = "torch"
    gpu_hint = "install a CUDA build of torch or drop --device"

    # --- 1. arrays and device ---------------------------------------------------------------------

    def _gpu_count(self) -> int:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0

    def _place(self, gpu: bool) -> str:
        # Full float32 precision: comparisons against the oracle must not run in TF32.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self._device = torch.device(f"cuda:{self.device_index}" if gpu else "cpu")
        if gpu:
            return f"cuda:{self.device_index} ({torch.cuda.get_device_name(self._device)})"
        return "cpu"

    def _tensor_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)

    def _to_tensor(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(x, device=self._device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.detach().cpu().numpy()

    # --- 2. ops -----------------------------------------------------------------------------------

    def _make_ops(self) -> TorchOps:
        return TorchOps(self.tensor_dtype)

    def _make_fast_ops(self) -> TorchFastOps:
        return TorchFastOps(self.tensor_dtype)

    # --- 3. time loop: the base class's Python loop -----------------------------------------------

    # --- 4. autodiff ------------------------------------------------------------------------------

    def value_and_grad(self, fn, params, *args):
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        value, aux = fn(leaves, *args)
        grads = torch.autograd.grad(value, list(leaves.values()))
        return value.detach(), self._detach(aux), dict(zip(leaves, grads, strict=True))

    def _detach(self, x):
        return x.detach()

    def _inference(self):
        return torch.no_grad()

    # --- 5. native layer: torch.nn.RNN / GRU / LSTM -----------------------------------------------

    def _native_layer(self, model: ModelConfig) -> torch.nn.Module:
        """The torch layer for ``model``, made once; its own weights are never used."""

        def make() -> torch.nn.Module:
            layer_cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
            extra = {"nonlinearity": "tanh"} if model.cell == "rnn" else {}
            layer = layer_cls[model.cell](
                model.vocab_size, model.hidden_size, num_layers=model.num_layers,
                bidirectional=model.bidirectional, batch_first=True, **extra,
            )
            return layer.to(self._device, self.tensor_dtype)

        return self._cached(("native", model), make)

    @staticmethod
    def native_weights(model: ModelConfig, params: dict[str, Any]) -> dict[str, Any]:
        """The canonical tensors under the torch layer's parameter names (the one mapping, shared
        with :mod:`rnn_backends.export`).

        torch computes x W_ih^T + b_ih + h W_hh^T + b_hh per gate, the gates stacked along the
        rows in ``CellSpec.torch_gates`` order: transposed weights and two biases. The canonical
        model has one bias per gate, so b_hh is held at zero. Its GRU applies the reset gate after
        the matmul, r * (h W_hn^T + b_hn), which is the reset-after GRU exactly with b_hn = 0.
        """
        gates = CELL_SPECS[model.cell].torch_gates
        weights = {}
        for layer in range(model.num_layers):
            for d in range(model.num_directions):
                pre = layer_prefix(layer, d)
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                for side, kind in (("ih", "W_x"), ("hh", "W_h")):
                    stacked = [params[pre + kind + g].T for g in gates]
                    weights[f"weight_{side}{suffix}"] = torch.cat(stacked)
                bias = torch.cat([params[pre + "b_" + g] for g in gates])
                weights["bias_ih" + suffix] = bias
                weights["bias_hh" + suffix] = torch.zeros_like(bias)
        return weights

    def _native_forward(self, params, X, h0):
        model = self.model(params)
        self._refuse_reset_before(model, "torch.nn.GRU")
        layer = self._native_layer(model)
        # States are (L * D, B, H), layer-major with the reverse direction second: our layout.
        parts = self._carry_parts(model, h0)
        LD = model.num_layers * model.num_directions
        hx = (
            (torch.stack(parts[:LD]), torch.stack(parts[LD:]))
            if model.cell == "lstm"
            else torch.stack(parts)
        )
        x = self.ops.one_hot(X, model.vocab_size)
        out, h_n = functional_call(layer, self.native_weights(model, params), (x, hx))
        final = [*h_n[0], *h_n[1]] if model.cell == "lstm" else list(h_n)
        return cells.output_logits(self.ops, params, out), self._join_carry(final)

    # --- 6. compilation: eager on the CPU; on a GPU the fast step is one CUDA graph --------------
    # On the CPU the fast step runs eagerly with no tape: torch.compile of it was tried and made
    # the first step take ~40 s here (see the README's Benchmarks section). On a GPU a step of
    # ~150 small kernels costs what their launches cost, so the fast step is captured once per
    # shape as a CUDA graph and replayed (torch_graphs.py).

    def _compile(self, kind: str, fn):
        if kind == "step" and self.variant == "fast" and self._device.type == "cuda":
            from .torch_graphs import GraphedStep

            return GraphedStep(fn, self._device)
        return fn
