"""The NumPy oracle as a backend: hand-written BPTT from ``reference.py``, no autodiff."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import reference
from .base import Backend, Params, State, StepResult


class NumpyBackend(Backend):
    name = "numpy"
    framework = "numpy"
    variants = ("reference",)
    default_variant = "reference"

    # --- 1. arrays, device and precision
    def _place(self, device: str | None) -> str:
        if device in ("gpu", "cuda"):
            from ..errors import ConfigError

            raise ConfigError("the numpy backend runs on the CPU only; drop --device")
        return "cpu"

    def asarray(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return x if x.dtype.kind in "iub" else x.astype(self.dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    # --- 2. ops: the oracle does not use cells.py
    def _make_ops(self) -> Any:
        return None

    # --- 4. autodiff: none; gradients are hand-written
    def value_and_grad(self, fn, params):  # type: ignore[override]
        raise NotImplementedError("the oracle's gradients are hand-written; use loss_and_grads")

    # --- the public API, straight onto the oracle
    def _h0_np(self, state: Any, batch: int) -> np.ndarray | None:
        if state is None:
            return None
        h = np.asarray(state[0])
        return (h[0] if h.ndim == 3 else h).astype(self.dtype)

    def forward(self, params: Params, X: np.ndarray, state: State | None = None):
        logits, h_last, _ = reference.forward(self.prepare(params), X, self._h0_np(state, len(X)))
        return logits, (h_last[None],)

    def loss(self, params, X, Y, state=None):
        logits, h_last, _ = reference.forward(self.prepare(params), X, self._h0_np(state, len(X)))
        return reference.cross_entropy(logits, Y), (h_last,)

    def loss_and_grads(self, params, X, Y, state=None):
        loss, grads, _ = reference.loss_and_grads(
            self.prepare(params), X, Y, self._h0_np(state, len(X))
        )
        return loss, grads

    def train_step(self, params, X, Y, state=None, *, lr, grad_clip) -> StepResult:
        new, loss, norm, h_last = reference.train_step(
            self.prepare(params), X, Y, self._h0_np(state, len(X)), lr, grad_clip
        )
        return StepResult(params=new, loss=loss, grad_norm=norm, state=(h_last,))

    def concat_trick(self, X, W_xh, H, W_hh):
        return reference.concat_trick(
            *(np.asarray(a, dtype=self.dtype) for a in (X, W_xh, H, W_hh))
        )

    def version(self) -> str:
        return np.__version__
