"""PyTorch as a reader of the textbook would write it: the scratch RNN language model trained
eagerly, the same loss under ``torch.compile``, and the concise model with ``nn.RNN``.

Each ``make`` function takes the canonical weights and returns a step ``(X, Y) -> loss``
(:data:`rnn_backends.stock.StepFn`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _device(gpu: bool) -> torch.device:
    # The package's backends disable TF32 for the comparison with the oracle; so do these.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return torch.device("cuda" if gpu else "cpu")


def _leaf(x: np.ndarray, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    return torch.tensor(x, dtype=dtype, device=device, requires_grad=True)


def clip_gradients(params: Iterable[torch.Tensor], grad_clip: float) -> None:
    """The book's clipping: scale every gradient by ``grad_clip / norm`` when the global norm
    exceeds ``grad_clip`` (the comparison reads the norm on the host, as the book does)."""
    params = [p for p in params if p.requires_grad]
    norm = torch.sqrt(sum(torch.sum(p.grad**2) for p in params))
    if norm > grad_clip:
        for p in params:
            p.grad[:] *= grad_clip / norm


class _Scratch:
    """The book's scratch model: weights as leaf tensors, the time loop in Python."""

    def __init__(self, params: dict[str, np.ndarray], dtype: torch.dtype, device: torch.device):
        self.w = {k: _leaf(v, dtype, device) for k, v in params.items()}
        self.V, self.H = params["W_xh"].shape
        self.dtype = dtype

    def loss(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of ids Y (B, T) after ids X (B, T)."""
        w = self.w
        inputs = F.one_hot(X.T, self.V).type(self.dtype)  # (T, B, V)
        state = torch.zeros((X.shape[0], self.H), dtype=self.dtype, device=X.device)
        outputs = []
        for x in inputs:
            state = torch.tanh(torch.matmul(x, w["W_xh"]) + torch.matmul(state, w["W_hh"])
                               + w["b_h"])
            outputs.append(state)
        logits = torch.stack([torch.matmul(h, w["W_hq"]) + w["b_q"] for h in outputs], 1)
        return F.cross_entropy(logits.reshape(-1, self.V), Y.reshape(-1))


def _trainer(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    params: list[torch.Tensor],
    device: torch.device,
    lr: float,
    grad_clip: float,
) -> Callable[[np.ndarray, np.ndarray], float]:
    """The book's training step: zero the gradients, backward, clip, ``torch.optim.SGD``."""
    optim = torch.optim.SGD(params, lr=lr)

    def step(X: np.ndarray, Y: np.ndarray) -> float:
        X_ = torch.as_tensor(X, device=device)
        Y_ = torch.as_tensor(Y, device=device)
        loss = loss_fn(X_, Y_)
        optim.zero_grad()
        loss.backward()
        clip_gradients(params, grad_clip)
        optim.step()
        return float(loss.item())

    return step


def book(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """The book's eager training step."""
    device = _device(gpu)
    model = _Scratch(params, getattr(torch, dtype), device)
    return _trainer(model.loss, list(model.w.values()), device, lr, grad_clip)


def compiled(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """``torch.compile`` of the book's loss (forward and, through AOTAutograd, backward); the
    clip and SGD stay eager, as a user who compiles the model would leave them."""
    device = _device(gpu)
    model = _Scratch(params, getattr(torch, dtype), device)
    return _trainer(torch.compile(model.loss), list(model.w.values()), device, lr, grad_clip)


def layer(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """The book's concise model: ``nn.RNN`` (time-major, tanh) and ``nn.Linear``."""
    device, tdtype = _device(gpu), getattr(torch, dtype)
    V, H = params["W_xh"].shape
    rnn = nn.RNN(V, H, nonlinearity="tanh").to(device, tdtype)
    linear = nn.Linear(H, V).to(device, tdtype)
    with torch.no_grad():
        # torch computes x W_ih^T + b_ih + h W_hh^T + b_hh: transposed weights, and a second
        # bias that the book's model does not have, held at zero and left out of training.
        for p, value in ((rnn.weight_ih_l0, params["W_xh"].T), (rnn.weight_hh_l0, params["W_hh"].T),
                         (rnn.bias_ih_l0, params["b_h"]), (linear.weight, params["W_hq"].T),
                         (linear.bias, params["b_q"])):
            p.copy_(torch.as_tensor(np.ascontiguousarray(value)))
        rnn.bias_hh_l0.zero_()
    rnn.bias_hh_l0.requires_grad_(False)

    def loss(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        outputs, _ = rnn(F.one_hot(X.T, V).type(tdtype))  # (T, B, H)
        logits = linear(outputs).swapaxes(0, 1)  # (B, T, V)
        return F.cross_entropy(logits.reshape(-1, V), Y.reshape(-1))

    trained = [p for p in (*rnn.parameters(), *linear.parameters()) if p.requires_grad]
    return _trainer(loss, trained, device, lr, grad_clip)
