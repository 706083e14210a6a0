"""JAX adapter: ``jax.value_and_grad`` over the shared cell math, ``lax.scan`` for the time loop,
a ``jax.jit``-compiled training step, and Flax's ``SimpleCell`` inside ``nn.RNN`` as the native
layer."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import cells
from ..errors import BackendUnavailableError
from .base import Backend


class JaxOps(cells.Ops):
    def __init__(self, dtype: jnp.dtype) -> None:
        self.dtype = dtype

    matmul = staticmethod(jnp.matmul)
    tanh = staticmethod(jnp.tanh)
    sqrt = staticmethod(jnp.sqrt)

    def take_rows(self, w, ids):
        return jnp.take(w, ids, axis=0)

    def one_hot(self, ids, depth):
        return jax.nn.one_hot(ids, depth, dtype=self.dtype)

    def concat(self, xs, axis):
        return jnp.concatenate(xs, axis=axis)

    def swap_bt(self, x):
        return jnp.swapaxes(x, 0, 1)

    def logsumexp(self, x):
        return jax.nn.logsumexp(x, axis=-1, keepdims=True)

    def pick(self, x, ids):
        return jnp.take_along_axis(x, ids[..., None], axis=-1)[..., 0]

    def mean(self, x):
        return jnp.mean(x)

    def sum(self, x):
        return jnp.sum(x)

    def minimum(self, x, y):
        return jnp.minimum(x, y)


class JaxBackend(Backend):
    """The JAX backend.

    Arguments (beyond :class:`Backend`'s):
        unroll: time steps ``lax.scan`` (and Flax's ``nn.RNN``) unrolls per loop iteration; a
            cost knob only, the numbers do not depend on it. May be changed on the instance later:
            compiled functions are cached per value.
    """

    name = "jax"
    framework = "jax"

    def __init__(
        self,
        dtype: str = "float64",
        device: str | None = None,
        variant: str | None = None,
        *,
        unroll: int = 1,
    ) -> None:
        # unroll=1 keeps compile time lowest; the sequences here are short, so unrolling more buys
        # little at run time while it multiplies the size of every compiled loop body.
        self.unroll = unroll
        self._compiled: dict[tuple[Any, ...], Callable] = {}
        super().__init__(dtype=dtype, device=device, variant=variant)

    # --- 1. arrays, device and precision ----------------------------------------------------------

    def _place(self, device: str | None) -> str:
        # Without x64 JAX silently turns every float64 array into float32. The flag is global and
        # must be set before the first array is made, hence here and not lazily.
        jax.config.update("jax_enable_x64", True)
        # Full float32 precision: on GPUs JAX's default matmul runs in TF32 (or bf16 passes),
        # which would miss the oracle by ~1e-3. Flax's Dense layers inherit this default too.
        jax.config.update("jax_default_matmul_precision", "highest")
        gpus = self._gpus()
        want_gpu = device in ("gpu", "cuda") or (device is None and bool(gpus))
        if want_gpu and not gpus:
            raise BackendUnavailableError(
                "device 'gpu' asked for, but JAX sees no GPU; install 'jax[cuda12]' or drop "
                "--device"
            )
        self._device = gpus[0] if want_gpu else jax.devices("cpu")[0]
        self._jdtype = jnp.dtype(self.dtype)
        return str(self._device) if want_gpu else "cpu"

    @staticmethod
    def _gpus() -> list[Any]:
        try:
            return list(jax.devices("gpu"))
        except RuntimeError:  # JAX raises when no GPU platform is installed or visible
            return []

    def asarray(self, x: np.ndarray) -> jax.Array:
        x = np.asarray(x)
        dtype = np.int64 if x.dtype.kind in "iub" else self._jdtype
        # device_put commits the array to the chosen device, so every computation on it (and
        # every jit-compiled function called with it) runs there.
        return jax.device_put(x.astype(dtype, copy=False), self._device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(jax.device_get(x))

    # --- 2. ops -----------------------------------------------------------------------------------

    def _make_ops(self) -> cells.Ops:
        return JaxOps(self._jdtype)

    # --- 3. time loop: lax.scan, traced once rather than one Python iteration per step -----------

    def scan(self, step: Callable, carry: Any, xs: Any) -> tuple[Any, Any]:
        return jax.lax.scan(step, carry, xs, unroll=self.unroll)

    def _stack(self, ys: list[Any]) -> Any:
        return jnp.stack(ys)

    # --- 4. autodiff ------------------------------------------------------------------------------

    def value_and_grad(self, fn, params):
        (value, aux), grads = jax.value_and_grad(fn, has_aux=True)(params)
        return value, aux, grads

    # --- 5. native layer: Flax's SimpleCell inside nn.RNN ----------------------------------------

    def native_logits(self, params, X, h0):
        try:
            import flax.linen as nn
        except ImportError as exc:
            raise BackendUnavailableError(
                f"the jax 'native' variant needs Flax ({exc}); pip install 'rnn-backends[jax]'"
            ) from None
        V, H = params["W_xh"].shape
        # SimpleCell computes h' = tanh((x @ i.kernel + i.bias) + h @ h.kernel): two Dense layers
        # whose kernels are (in_features, hidden), the book's own layout (no transpose, unlike
        # torch). Only the input layer `i` has a bias, so the canonical b_h maps onto it as is
        # and nothing needs zeroing. tanh is its default, named here so a changed default can't
        # slip through silently (as Gluon's relu did). SimpleCell passes no `precision` to its
        # Dense layers, so they run at the global "highest" set in _place.
        cell = nn.SimpleCell(
            features=H, activation_fn=jnp.tanh, dtype=self._jdtype, param_dtype=self._jdtype
        )
        # nn.RNN scans the cell over axis 1 of batch-major (B, T, V) inputs (time_major=False,
        # its default); the carry is a bare (B, H) array; return_carry gives (h_T, outputs).
        rnn = nn.RNN(cell, time_major=False, return_carry=True, unroll=self.unroll)
        # The weights enter through apply() rather than init(), so they are ordinary inputs of a
        # pure function and autodiff carries their gradients back to the canonical arrays.
        weights = {
            "cell": {
                "i": {"kernel": params["W_xh"], "bias": params["b_h"]},
                "h": {"kernel": params["W_hh"]},
            }
        }
        h_last, hs = rnn.apply({"params": weights}, self.ops.one_hot(X, V), initial_carry=h0)
        return cells.output_logits(self.ops, params, hs), h_last

    # --- compiled forward and loss: pure functions of (params, X, Y, h0), traced once per shape --

    def _jit(self, kind: str, make: Callable[[], Callable], *static: Any) -> Callable:
        """A compiled function, cached per what the trace bakes in (variant, unroll, statics)."""
        key = (kind, self.variant, self.unroll, *static)
        fn = self._compiled.get(key)
        if fn is None:
            fn = self._compiled[key] = make()
        return fn

    def logits(self, params, X, h0):
        return self._jit("logits", lambda: jax.jit(super(JaxBackend, self).logits))(params, X, h0)

    def _loss_fn(self, X, Y, h0):
        def loss(params, X, Y, h0):
            logits, h_last = self.logits(params, X, h0)
            return cells.cross_entropy(self.ops, logits, Y), h_last

        # A partial of one cached jitted function, not a fresh closure per call, so neither
        # loss() nor the autodiff through it retraces for every batch.
        return partial(self._jit("loss", lambda: jax.jit(loss)), X=X, Y=Y, h0=h0)

    # --- 6. training step: autodiff + clip + SGD compiled into one XLA program -------------------

    def _step(self, params, X, Y, h0, lr, max_norm):
        # max_norm is static because clip_and_sgd branches on `max_norm > 0` in Python; lr is
        # traced, so a learning-rate schedule does not recompile.
        step = self._jit("step", lambda: jax.jit(self._plain_step, static_argnums=5))
        return step(params, X, Y, h0, lr, max_norm)

    def _plain_step(self, params, X, Y, h0, lr, max_norm):
        return super()._step(params, X, Y, h0, lr, max_norm)

    def version(self) -> str:
        try:
            import flax
        except ImportError:
            return jax.__version__
        return f"{jax.__version__} (flax {flax.__version__})"
