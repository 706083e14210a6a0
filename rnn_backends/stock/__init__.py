"""Stock baselines: the code a user would write without this package, for the benchmark.

The package's variants are measured against one another by :mod:`rnn_backends.bench`; a user
choosing a tool asks something else: how does this compare with the code I would write myself?
Each framework's module here answers with up to three training steps, written the way the
textbook's chapter (or the framework's own documentation) writes them:

* ``stock:book``: the book's code path as printed: one-hot inputs, a Python loop over time,
  the framework's autodiff, the book's clipping function, its SGD;
* ``stock:compiled``: the same code under the framework's standard compiler (``torch.compile`` of
  the loss, ``jax.jit`` of the step, ``tf.function``, Gluon ``hybridize``);
* ``stock:layer``: the framework's own recurrent layer (``nn.RNN``, Flax ``nn.RNN``, Keras
  ``SimpleRNN``, Gluon ``rnn.RNN``) with a dense output layer, compiled where the framework
  compiles;

and JAX adds ``stock:scan`` (the loop written with ``lax.scan`` under ``jax.jit``). The only
departures from a user's code are the ones the comparison needs: every path starts from the
canonical weights (:func:`rnn_backends.init_params`), layers with a second recurrent bias hold
it at zero and untrained (the book's model has one bias), and float32 matmuls run at full
precision (no TF32), as in the package's own backends. The bench checks every path's loss against
the NumPy oracle after the timed steps, so no wrong baseline can win.

Nothing here is imported by ``import rnn_backends``; a framework is imported when its module is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ConfigError

StepFn = Callable[[np.ndarray, np.ndarray], float]
"""One training step on int ids X, Y (B, T); returns the batch's loss (before the update) as a
Python float, so the framework has finished its work when it returns."""

PATHS: dict[str, dict[str, str]] = {
    "torch": {
        "stock:book": "the book's eager loop (one-hot, autograd, its clip, torch.optim.SGD)",
        "stock:compiled": "torch.compile of the book's loss; backward, clip and SGD as the book",
        "stock:layer": "nn.RNN + nn.Linear, eager (cuDNN on a GPU)",
    },
    "jax": {
        "stock:compiled": "the book's Python loop, the whole step under jax.jit (optax clip+SGD)",
        "stock:scan": "lax.scan over time, the whole step under jax.jit",
        "stock:layer": "Flax nn.RNN(SimpleCell) + nn.Dense under jax.jit",
    },
    "tensorflow": {
        "stock:book": "the book's eager loop (GradientTape, its clip, Keras SGD)",
        "stock:compiled": "the same step under tf.function",
        "stock:layer": "Keras SimpleRNN + Dense, the step under tf.function",
    },
    "mxnet": {
        "stock:book": "the book's eager loop (autograd.record, its clip, Gluon Trainer sgd)",
        "stock:compiled": "the same model as a hybridized Gluon HybridBlock",
        "stock:layer": "Gluon rnn.RNN(tanh) + Dense, hybridized",
    },
}
"""Per framework: the stock paths it has and what each one is."""

_MODULES = {fw: f"{__name__}.{fw}_stock" for fw in PATHS}


def paths(framework: str) -> tuple[str, ...]:
    """The stock path names of ``framework`` (none for the NumPy oracle)."""
    return tuple(PATHS.get(framework, ()))


def is_stock(variant: str) -> bool:
    """Whether a benchmark variant name is a stock path (``stock:...``)."""
    return variant.startswith("stock:")


def make_step(
    framework: str,
    path: str,
    params: dict[str, np.ndarray],
    *,
    dtype: str,
    device: str | None,
    lr: float,
    grad_clip: float,
) -> StepFn:
    """A stock training step of ``framework`` holding its own copy of ``params`` (the canonical
    one-layer tanh RNN: ``W_xh (V, H), W_hh (H, H), b_h (H,), W_hq (H, V), b_q (V,)``).

    Arguments:
        device: ``"cpu"``, ``"gpu"`` or None (the CPU).
        lr, grad_clip: SGD's learning rate and the global-norm clipping threshold (> 0).

    Raises:
        ConfigError: the framework has no such stock path.
    """
    if path not in PATHS.get(framework, {}):
        have = ", ".join(PATHS.get(framework, {})) or "none"
        raise ConfigError(f"{framework} has no stock path {path!r}; it has {have}")
    module: Any = importlib.import_module(_MODULES[framework])
    make = getattr(module, path.split(":", 1)[1])
    return make(params, dtype=dtype, gpu=device in ("gpu", "cuda"), lr=lr, grad_clip=grad_clip)


__all__ = ["PATHS", "StepFn", "is_stock", "make_step", "paths"]
