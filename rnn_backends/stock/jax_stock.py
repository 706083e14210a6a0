"""JAX as a reader of the textbook would write it: the whole training step under ``jax.jit``,
with the book's Python loop over time, with ``lax.scan``, or with Flax's ``nn.RNN``; clipping and
SGD from optax (the book's own JAX trainer forgets to clip; these do not).

JAX has no eager training path worth timing (the book jits its step too), so there is no
``stock:book`` here. Each ``make`` function takes the canonical weights and returns a step
``(X, Y) -> loss`` (:data:`rnn_backends.stock.StepFn`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

Loss = Callable[[Any, jax.Array, jax.Array], jax.Array]


def _device(gpu: bool, dtype: str) -> Any:
    # The package's JAX backend runs float32 matmuls at full precision and float64 with x64 on;
    # so do these (a user on a GPU would get TF32-like passes by default).
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "highest")
    return jax.devices("gpu" if gpu else "cpu")[0]


def _cross_entropy(logits: jax.Array, Y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, Y).mean()


def _jitted_trainer(
    loss_fn: Loss, weights: Any, device: Any, lr: float, grad_clip: float
) -> Callable[[np.ndarray, np.ndarray], float]:
    """The step ``value_and_grad``, optax's global-norm clip and SGD, all in one ``jax.jit``;
    the weights and optimizer state live on the device between steps."""
    optimizer = optax.chain(optax.clip_by_global_norm(grad_clip), optax.sgd(lr))
    state = {"w": jax.device_put(weights, device)}
    state["opt"] = optimizer.init(state["w"])

    @jax.jit
    def train_step(w, opt_state, X, Y):
        loss, grads = jax.value_and_grad(loss_fn)(w, X, Y)
        updates, opt_state = optimizer.update(grads, opt_state, w)
        return optax.apply_updates(w, updates), opt_state, loss

    def step(X: np.ndarray, Y: np.ndarray) -> float:
        X_, Y_ = jax.device_put(X, device), jax.device_put(Y, device)
        state["w"], state["opt"], loss = train_step(state["w"], state["opt"], X_, Y_)
        return float(loss)

    return step


def _weights(params: dict[str, np.ndarray], dtype: str) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v, dtype=dtype) for k, v in params.items()}


def compiled(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """The book's scratch model: one-hot inputs, a Python loop over time (unrolled in the trace)."""
    device = _device(gpu, dtype)
    V, H = params["W_xh"].shape

    def loss(w, X, Y):
        inputs = jax.nn.one_hot(X.T, V, dtype=dtype)  # (T, B, V)
        state = jnp.zeros((X.shape[0], H), dtype=dtype)
        outputs = []
        for x in inputs:
            state = jnp.tanh(jnp.matmul(x, w["W_xh"]) + jnp.matmul(state, w["W_hh"]) + w["b_h"])
            outputs.append(state)
        logits = jnp.stack([jnp.matmul(h, w["W_hq"]) + w["b_q"] for h in outputs], 1)
        return _cross_entropy(logits, Y)

    return _jitted_trainer(loss, _weights(params, dtype), device, lr, grad_clip)


def scan(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """The same model with the time loop as ``lax.scan`` (one compiled loop body)."""
    device = _device(gpu, dtype)
    V, H = params["W_xh"].shape

    def loss(w, X, Y):
        def cell(state, x):
            state = jnp.tanh(x @ w["W_xh"] + state @ w["W_hh"] + w["b_h"])
            return state, state

        inputs = jax.nn.one_hot(X.T, V, dtype=dtype)
        _, hs = jax.lax.scan(cell, jnp.zeros((X.shape[0], H), dtype=dtype), inputs)
        logits = jnp.swapaxes(hs @ w["W_hq"] + w["b_q"], 0, 1)
        return _cross_entropy(logits, Y)

    return _jitted_trainer(loss, _weights(params, dtype), device, lr, grad_clip)


def layer(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """Flax's ``nn.RNN(nn.SimpleCell)`` and ``nn.Dense``, batch-major."""
    import flax.linen as nn

    device = _device(gpu, dtype)
    V, H = params["W_xh"].shape

    class RNNLM(nn.Module):
        @nn.compact
        def __call__(self, X):
            x = jax.nn.one_hot(X, V, dtype=dtype)
            cell = nn.SimpleCell(features=H, dtype=dtype, param_dtype=dtype)
            return nn.Dense(V, dtype=dtype, param_dtype=dtype)(nn.RNN(cell)(x))

    model = RNNLM()
    # SimpleCell computes tanh(x W_i + b_i + h W_h): one bias, as the book, on the input side.
    weights = {"params": {
        "SimpleCell_0": {"i": {"kernel": params["W_xh"], "bias": params["b_h"]},
                         "h": {"kernel": params["W_hh"]}},
        "Dense_0": {"kernel": params["W_hq"], "bias": params["b_q"]},
    }}  # fmt: skip
    expected = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 1), dtype=jnp.int32))
    if jax.tree_util.tree_structure(expected) != jax.tree_util.tree_structure(weights):
        raise RuntimeError("Flax's parameter tree changed; update stock/jax_stock.py's mapping")
    weights = jax.tree_util.tree_map(lambda v: jnp.asarray(v, dtype=dtype), weights)

    def loss(w, X, Y):
        return _cross_entropy(model.apply(w, X), Y)

    return _jitted_trainer(loss, weights, device, lr, grad_clip)
