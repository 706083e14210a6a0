"""JAX adapter: ``jax.value_and_grad`` over the shared cell math, ``lax.scan`` for the time loop,
``jax.jit`` for the forward pass, the loss and the training step, and Flax's
``SimpleCell``/``GRUCell``/``LSTMCell`` inside ``nn.RNN`` (and ``nn.Bidirectional``) as the native
layer."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import cells
from ..config import CELL_SPECS, ModelConfig
from ..errors import BackendUnavailableError
from ..params import layer_prefix
from .base import Backend, Option, positive_int
from .jax_ops import JaxFastOps, JaxOps


class JaxBackend(Backend):
    """The JAX backend.

    Options (beyond :class:`Backend`'s):
        unroll: time steps ``lax.scan`` (and Flax's ``nn.RNN``) unrolls per loop iteration; a
            cost knob only, the numbers do not depend on it. ``None`` (the default) picks one per
            device (:attr:`AUTO_UNROLL`). May be changed on the instance later: compiled
            functions are cached per value.
    """

    name = "jax"
    framework = "jax"
    companions = ("flax",)
    gpu_hint = "install 'jax[cuda12]' or drop --device"
    options = {"unroll": Option(None, lambda v: v is None or positive_int(v), "a positive integer")}
    unroll: int | None
    AUTO_UNROLL = {"cpu": 1, "gpu": 32}
    """The unroll used when the option is None. CPU: 1 keeps compile time lowest, and XLA's CPU
    loop costs little per iteration next to the step's matmul. GPU: 32 (the textbook's whole
    sequence): an XLA while loop on a GPU may wait on the host for its condition at every
    iteration, while straight-line kernels are launched back to back (and XLA may put them in
    one CUDA graph); longer sequences run as loops of 32 steps, which bounds compile time."""

    def _unroll(self) -> int:
        if self.unroll is not None:
            return self.unroll
        return self.AUTO_UNROLL["cpu" if self.device == "cpu" else "gpu"]

    # --- 1. arrays and device ---------------------------------------------------------------------

    def _gpu_count(self) -> int:
        try:
            return len(jax.devices("gpu"))
        except RuntimeError:  # JAX raises when no GPU platform is installed or visible
            return 0

    def _place(self, gpu: bool) -> str:
        # Without x64 JAX silently turns every float64 array into float32. The flag is global and
        # must be set before the first array is made, hence here and not lazily.
        jax.config.update("jax_enable_x64", True)
        # Full float32 precision: on GPUs JAX's default matmul runs in TF32 (or bf16 passes),
        # which would miss the oracle by ~1e-3. Flax's Dense layers inherit this default too.
        jax.config.update("jax_default_matmul_precision", "highest")
        self._device = jax.devices("gpu")[self.device_index] if gpu else jax.devices("cpu")[0]
        return str(self._device) if gpu else "cpu"

    def _tpu_count(self) -> int:
        try:
            return len(jax.devices("tpu"))
        except RuntimeError:  # no TPU platform here
            return 0

    def _place_tpu(self) -> str:
        self._place(False)  # the flags (x64, full matmul precision) the other devices set
        self._device = jax.devices("tpu")[self.device_index]
        return str(self._device)

    def _tensor_dtype(self) -> jnp.dtype:
        return jnp.dtype(self.dtype)

    def _to_tensor(self, x: np.ndarray) -> jax.Array:
        # device_put commits the array to the chosen device, so every computation on it (and
        # every jit-compiled function called with it) runs there.
        return jax.device_put(x, self._device)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(jax.device_get(x))

    # --- 2. ops -----------------------------------------------------------------------------------

    def _make_ops(self) -> JaxOps:
        return JaxOps(self.tensor_dtype)

    def _make_fast_ops(self) -> JaxFastOps:
        return JaxFastOps(self.tensor_dtype, unroll=self._unroll())

    # --- 3. time loop: lax.scan, traced once rather than one Python iteration per step -----------

    def scan(self, step: Callable, carry: Any, xs: Any) -> tuple[Any, Any]:
        return jax.lax.scan(step, carry, xs, unroll=self._unroll())

    # --- 4. autodiff ------------------------------------------------------------------------------

    def value_and_grad(self, fn, params, *args):
        (value, aux), grads = jax.value_and_grad(fn, has_aux=True)(params, *args)
        return value, aux, grads

    # --- 5. native layer: Flax's SimpleCell / GRUCell / LSTMCell in nn.RNN ----------------------

    def _native_forward(self, params, X, h0):
        nn = _flax_linen()
        model = self.model(params)
        self._refuse_reset_before(model, "Flax's GRUCell")
        parts = self._carry_parts(model, h0)
        x, finals = self.ops.one_hot(X, model.vocab_size), []
        for layer in range(model.num_layers):
            x, last = self._flax_layer(nn, model, params, layer, x, parts)
            finals += last
        if model.cell == "lstm":  # Flax's LSTM carry is (c, h); ours lists every h, then every c
            finals = [f[1] for f in finals] + [f[0] for f in finals]
        return cells.output_logits(self.ops, params, x), self._join_carry(finals)

    def _flax_layer(
        self, nn: Any, model: ModelConfig, params: dict[str, Any], layer: int, x: Any,
        parts: list[Any],
    ) -> tuple[Any, list[Any]]:
        """Layer ``layer`` in both directions: its outputs (B, T, H * D) for inputs x (B, T, I),
        and the final Flax carry of each direction."""
        D, LD = model.num_directions, model.num_layers * model.num_directions

        def carry(k: int) -> Any:
            return (parts[LD + k], parts[k]) if model.cell == "lstm" else parts[k]

        # The weights enter through apply() rather than init(), so they are ordinary inputs of a
        # pure function and autodiff carries their gradients back to the canonical arrays.
        weights = [
            {"cell": flax_cell_params(model.cell, direction_params(params, layer, d))}
            for d in range(D)
        ]
        if D == 1:
            last, x = self._flax_rnn(nn, model).apply(
                {"params": weights[0]}, x, initial_carry=carry(layer)
            )
            return x, [last]
        # nn.Bidirectional runs backward_rnn with reverse=True, keep_order=True (its outputs
        # re-aligned with time) and concatenates forward then backward.
        bi = nn.Bidirectional(self._flax_rnn(nn, model), self._flax_rnn(nn, model),
                              return_carry=True)
        (last_f, last_b), x = bi.apply(
            {"params": {"forward_rnn": weights[0], "backward_rnn": weights[1]}}, x,
            initial_carry=(carry(2 * layer), carry(2 * layer + 1)),
        )
        return x, [last_f, last_b]

    def _flax_rnn(self, nn: Any, model: ModelConfig) -> Any:
        cell = self.flax_cell(nn, model, self.tensor_dtype)
        # nn.RNN scans the cell over axis 1 of batch-major (B, T, ...) inputs; return_carry gives
        # (final carry, outputs).
        return nn.RNN(cell, time_major=False, return_carry=True, unroll=self._unroll())

    @staticmethod
    def flax_cell(nn: Any, model: ModelConfig, dtype: Any) -> Any:
        """The Flax cell of ``model`` (shared with :mod:`rnn_backends.export`)."""
        # Activations named explicitly so a changed default can't slip through silently (as
        # Gluon's relu did). The cells pass no `precision` to their Dense layers, so they run at
        # the global "highest" set in _place.
        kinds = {
            "rnn": partial(nn.SimpleCell, activation_fn=jnp.tanh),
            "gru": partial(nn.GRUCell, gate_fn=jax.nn.sigmoid, activation_fn=jnp.tanh),
            "lstm": partial(nn.LSTMCell, gate_fn=jax.nn.sigmoid, activation_fn=jnp.tanh),
        }
        return kinds[model.cell](features=model.hidden_size, dtype=dtype, param_dtype=dtype)

    # --- 6. compilation: jax.jit ---------------------------------------------------------------
    # One program per kind, unroll and (for the step) optimizer, traced once per shape. The
    # learning rate, Adam's bias corrections and the clip threshold are traced arguments, so
    # neither a schedule, nor the step count, nor a new threshold recompiles.

    def _compile(self, kind: str, fn: Callable) -> Callable:
        return jax.jit(fn)


def _flax_linen() -> Any:
    try:
        import flax.linen as nn
    except ImportError as exc:
        from .registry import install_hint  # the registry imports this module, not vice versa
        raise BackendUnavailableError(
            f"the jax 'native' variant needs Flax ({exc}); {install_hint('jax')}"
        ) from None
    return nn


def direction_params(params: dict[str, Any], layer: int, d: int) -> dict[str, Any]:
    """One layer direction's weights under their unprefixed names (``W_xh``, ...)."""
    pre = layer_prefix(layer, d)
    return {k[len(pre):]: v for k, v in params.items()
            if k.startswith(pre) and "." not in k[len(pre):]}


def flax_cell_params(cell: str, w: dict[str, Any]) -> dict[str, Any]:
    """One direction's canonical weights (unprefixed names) as the Flax cell's parameters (the one
    mapping, shared with :mod:`rnn_backends.export`).

    Flax's cells hold one Dense layer per gate and side, kernels (in_features, H) in the book's
    orientation, so nothing is transposed: ``i<n>`` reads x and ``h<n>`` reads h for the gate
    Flax calls n (``CellSpec.flax_names``; the tanh cell's are plain ``i`` and ``h``). Flax gives
    a bias to one of the two (``CellSpec.flax_bias``), which takes the canonical ``b_g``. The
    GRU's ``hn`` has one more, inside ``r * (h W_hn + b_hn)``: held at zero, the reset-after GRU.
    """
    spec = CELL_SPECS[cell]
    out: dict[str, dict[str, Any]] = {}
    for g, n in zip(spec.gates, spec.flax_names, strict=True):
        out["i" + n] = {"kernel": w["W_x" + g]}
        out["h" + n] = {"kernel": w["W_h" + g]}
        out[spec.flax_bias + n]["bias"] = w["b_" + g]
    if cell == "gru":
        out["hn"]["bias"] = jnp.zeros_like(w["b_h"])
    return out
