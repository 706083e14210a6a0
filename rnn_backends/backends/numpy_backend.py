"""The NumPy oracle as a backend: hand-written BPTT from ``reference.py``, no autodiff."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import optim, reference
from .base import Backend, Params, State, StepResult, clip_threshold


class NumpyBackend(Backend):
    name = "numpy"
    framework = "numpy"
    variants = ("reference",)
    default_variant = "reference"
    cpu_only = True

    # --- 1. arrays and device: NumPy arrays are the tensors
    def _place(self, gpu: bool) -> str:
        return "cpu"

    def _to_tensor(self, x: np.ndarray) -> np.ndarray:
        return x

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    # --- 2. ops: the oracle does not use cells.py
    def _make_ops(self) -> Any:
        return None

    # --- 4. autodiff: none; gradients are hand-written
    def value_and_grad(self, fn, params, *args):
        raise NotImplementedError("the oracle's gradients are hand-written; use loss_and_grads")

    # --- the public API, straight onto the oracle. Its state is the public one: a tuple of
    # (layers * directions, B, H) arrays (a bare (B, H) array, as earlier versions saved, is read
    # as one layer's).
    def _state(self, state: Any) -> tuple[np.ndarray, ...] | None:
        if state is None:
            return None
        return tuple(np.asarray(s, dtype=self.dtype) for s in state)

    def _run(self, fn, params, *args, **kwargs):
        return fn(self.prepare(params), *args, gru_reset_after=self.gru_reset_after, **kwargs)

    def forward(self, params: Params, X: np.ndarray, state: State | None = None):
        logits, final, _ = self._run(reference.model_forward, params, X, self._state(state))
        return logits, final

    def loss(self, params, X, Y, state=None):
        logits, final, _ = self._run(reference.model_forward, params, X, self._state(state))
        return reference.cross_entropy(logits, Y), final

    def loss_and_grads(self, params, X, Y, state=None):
        loss, grads, _ = self._run(reference.model_loss_and_grads, params, X, Y, self._state(state))
        return loss, grads

    def train_step(
        self, params, X, Y, state=None, *, lr, grad_clip, optimizer=None, opt_state=None
    ) -> StepResult:
        max_norm = clip_threshold(grad_clip)  # validated as everywhere; the oracle takes inf too
        opt = optim.as_optimizer(optimizer)
        tensors = self.prepare(params)
        if opt_state is None:
            opt_state = self.init_opt_state(opt, tensors)
        opt_state.check(opt, {k: v.shape for k, v in tensors.items()})
        # The oracle's own optimizer, given the hyper-parameters by name (it imports no optim).
        hyper = {"momentum": opt.momentum, "beta1": opt.beta1, "beta2": opt.beta2,
                 "eps": opt.eps, "weight_decay": opt.weight_decay}  # fmt: skip
        before = {"step": opt_state.step, **self.prepare_opt_state(opt_state).slots}
        new, loss, norm, final, after = self._run(
            reference.model_optimizer_step, tensors, X, Y, self._state(state), lr, max_norm,
            before, opt.kind, **hyper,
        )
        step = after.pop("step")
        return StepResult(params=new, loss=loss, grad_norm=norm, state=final,
                          opt_state=optim.OptState(step, after))  # fmt: skip

    def concat_trick(self, X, W_xh, H, W_hh):
        return reference.concat_trick(
            *(np.asarray(a, dtype=self.dtype) for a in (X, W_xh, H, W_hh))
        )
