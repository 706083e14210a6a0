"""The NumPy oracle: forward pass and hand-derived BPTT for the textbook's tanh RNN LM.

This module is deliberately independent of ``cells.py`` (which every framework differentiates with
its own autodiff): here the gradients are written out by hand, and the tests check them against
central finite differences in float64. Arrays are batch-major at the boundary, time-major inside.

The model, for t = 1..T with one-hot inputs x_t (B, V):

    h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h)        (B, H)
    o_t = h_t W_hq + b_q                             (B, V)
    L   = mean over all B*T tokens of -log softmax(o_t)[y_t]
"""

from __future__ import annotations

import numpy as np

Params = dict[str, np.ndarray]


def _dtype(params: Params) -> np.dtype:
    return params["W_hh"].dtype


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def cross_entropy(logits: np.ndarray, Y: np.ndarray) -> float:
    """Mean cross-entropy over every token; ``logits`` (..., V), ``Y`` int ids of shape (...)."""
    logp = log_softmax(logits)
    picked = np.take_along_axis(logp, Y[..., None], axis=-1)[..., 0]
    return float(-picked.mean())


def forward(
    params: Params, X: np.ndarray, h0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the RNN over ids ``X`` (B, T).

    Returns:
        logits (B, T, V), the final state (B, H), and every state (T + 1, B, H) with h_0 first.
    """
    W_xh, W_hh, b_h = params["W_xh"], params["W_hh"], params["b_h"]
    B, T = X.shape
    H = W_hh.shape[0]
    hs = np.empty((T + 1, B, H), dtype=_dtype(params))
    hs[0] = 0.0 if h0 is None else h0
    for t in range(T):
        # x_t is one-hot, so x_t @ W_xh is row X[:, t] of W_xh.
        hs[t + 1] = np.tanh(W_xh[X[:, t]] + hs[t] @ W_hh + b_h)
    logits = hs[1:] @ params["W_hq"] + params["b_q"]  # (T, B, V)
    return logits.transpose(1, 0, 2), hs[T], hs


def loss_and_grads(
    params: Params, X: np.ndarray, Y: np.ndarray, h0: np.ndarray | None = None
) -> tuple[float, Params, np.ndarray]:
    """Mean cross-entropy and its gradient with respect to every parameter, by hand-written BPTT.

    The initial state ``h0`` is treated as a constant (it was detached by the caller).
    Returns:
        (loss, grads with the names and shapes of ``params``, final state (B, H)).
    """
    logits, h_last, hs = forward(params, X, h0)
    B, T = X.shape
    n_tokens = B * T
    loss = cross_entropy(logits, Y)

    # d loss / d logits = (softmax - onehot) / (B*T), laid out time-major (T, B, V).
    d_logits = np.exp(log_softmax(logits)).transpose(1, 0, 2).copy()
    rows_t, rows_b = np.meshgrid(np.arange(T), np.arange(B), indexing="ij")
    d_logits[rows_t, rows_b, Y.T] -= 1.0
    d_logits /= n_tokens

    W_hh, W_hq = params["W_hh"], params["W_hq"]
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    grads["W_hq"] = np.einsum("tbh,tbv->hv", hs[1:], d_logits)
    grads["b_q"] = d_logits.sum(axis=(0, 1))
    dh_next = np.zeros_like(hs[0])
    for t in reversed(range(T)):
        dh = d_logits[t] @ W_hq.T + dh_next
        da = dh * (1.0 - hs[t + 1] ** 2)  # tanh'(a) = 1 - tanh(a)^2
        np.add.at(grads["W_xh"], X[:, t], da)  # one-hot rows pick the rows to accumulate
        grads["W_hh"] += hs[t].T @ da
        grads["b_h"] += da.sum(axis=0)
        dh_next = da @ W_hh.T
    return loss, grads, h_last


def grad_norm(grads: Params) -> float:
    """Global L2 norm over every gradient tensor."""
    return float(
        np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads.values()))
    )


def clip_grads(grads: Params, max_norm: float) -> tuple[Params, float]:
    """Scale all gradients by ``min(1, max_norm / norm)``; ``max_norm`` 0 disables clipping."""
    norm = grad_norm(grads)
    if max_norm <= 0 or norm <= max_norm:
        return dict(grads), norm
    scale = max_norm / norm
    return {k: (g * scale).astype(g.dtype) for k, g in grads.items()}, norm


def sgd(params: Params, grads: Params, lr: float) -> Params:
    return {k: (p - lr * grads[k]).astype(p.dtype) for k, p in params.items()}


def train_step(
    params: Params,
    X: np.ndarray,
    Y: np.ndarray,
    h0: np.ndarray | None,
    lr: float,
    max_norm: float,
) -> tuple[Params, float, float, np.ndarray]:
    """One SGD step with global-norm clipping.

    Returns (new params, loss, grad norm before clipping, final state)."""
    loss, grads, h_last = loss_and_grads(params, X, Y, h0)
    clipped, norm = clip_grads(grads, max_norm)
    return sgd(params, clipped, lr), loss, norm, h_last


def concat_trick(
    X: np.ndarray, W_xh: np.ndarray, H: np.ndarray, W_hh: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Both sides of X W_xh + H W_hh == [X, H] [W_xh; W_hh]."""
    left = X @ W_xh + H @ W_hh
    right = np.concatenate([X, H], axis=1) @ np.concatenate([W_xh, W_hh], axis=0)
    return left, right
