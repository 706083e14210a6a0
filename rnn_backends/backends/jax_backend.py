"""JAX adapter: ``jax.value_and_grad`` over the shared cell math, ``lax.scan`` for the time loop,
a ``jax.jit``-compiled training step, and Flax's ``SimpleCell``/``GRUCell``/``LSTMCell`` inside
``nn.RNN`` (and ``nn.Bidirectional``) as the native layer."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import cells
from ..errors import BackendUnavailableError
from ..params import layer_prefix
from .base import Backend


class JaxOps(cells.Ops):
    def __init__(self, dtype: jnp.dtype) -> None:
        self.dtype = dtype

    matmul = staticmethod(jnp.matmul)
    tanh = staticmethod(jnp.tanh)
    sigmoid = staticmethod(jax.nn.sigmoid)
    sqrt = staticmethod(jnp.sqrt)
    stack = staticmethod(jnp.stack)

    def flip(self, x):
        return jnp.flip(x, axis=0)

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
        gru_reset_after: bool = True,
        *,
        unroll: int = 1,
    ) -> None:
        # unroll=1 keeps compile time lowest; the sequences here are short, so unrolling more buys
        # little at run time while it multiplies the size of every compiled loop body.
        self.unroll = unroll
        self._compiled: dict[tuple[Any, ...], Callable] = {}
        super().__init__(
            dtype=dtype, device=device, variant=variant, gru_reset_after=gru_reset_after
        )

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

    # --- 5. native layer: Flax's SimpleCell / GRUCell / LSTMCell in nn.RNN ---------------------

    def _flax_cell_weights(self, cell: str, w: dict[str, Any]) -> dict[str, Any]:
        """One direction's canonical weights (unprefixed names) as the Flax cell's parameters.

        Flax's cells are Dense layers per gate with (in_features, hidden) kernels, the book's own
        orientation, so nothing is transposed. Where both of a gate's Dense layers could carry a
        bias, Flax gives it to one only, which takes the canonical b_g:

        * SimpleCell: ``i`` (x side, with bias) and ``h``;
        * GRUCell: ``ir, iz, in`` (x side, with bias), ``hr, hz`` and ``hn`` (h side; ``hn`` has a
          bias of its own inside ``r * (h W_hn + b_hn)``, held at zero: the reset-after GRU);
        * LSTMCell: ``ii, if, ig, io`` (x side, no bias) and ``hi, hf, hg, ho`` (h side, bias).
        """
        zeros = jnp.zeros_like
        if cell == "rnn":
            return {"i": {"kernel": w["W_xh"], "bias": w["b_h"]}, "h": {"kernel": w["W_hh"]}}
        if cell == "gru":
            out = {f"i{f}": {"kernel": w["W_x" + g], "bias": w["b_" + g]}
                   for f, g in (("r", "r"), ("z", "z"), ("n", "h"))}
            out.update({"hr": {"kernel": w["W_hr"]}, "hz": {"kernel": w["W_hz"]}})
            out["hn"] = {"kernel": w["W_hh"], "bias": zeros(w["b_h"])}
            return out
        out = {}
        for f, g in (("i", "i"), ("f", "f"), ("g", "c"), ("o", "o")):
            out["i" + f] = {"kernel": w["W_x" + g]}
            out["h" + f] = {"kernel": w["W_h" + g], "bias": w["b_" + g]}
        return out

    def native_logits(self, params, X, h0):
        try:
            import flax.linen as nn
        except ImportError as exc:
            raise BackendUnavailableError(
                f"the jax 'native' variant needs Flax ({exc}); pip install 'rnn-backends[jax]'"
            ) from None
        model = self.model(params)
        if model.cell == "gru" and not model.gru_reset_after:
            raise self._reset_before_unsupported("Flax's GRUCell")
        L, D, V = model.num_layers, model.num_directions, model.vocab_size
        LD = L * D
        # Activations named explicitly so a changed default can't slip through silently (as
        # Gluon's relu did). The cells pass no `precision` to their Dense layers, so they run at
        # the global "highest" set in _place.
        kinds = {
            "rnn": partial(nn.SimpleCell, activation_fn=jnp.tanh),
            "gru": partial(nn.GRUCell, gate_fn=jax.nn.sigmoid, activation_fn=jnp.tanh),
            "lstm": partial(nn.LSTMCell, gate_fn=jax.nn.sigmoid, activation_fn=jnp.tanh),
        }

        def make_rnn():
            cell = kinds[model.cell](
                features=model.hidden_size, dtype=self._jdtype, param_dtype=self._jdtype
            )
            # nn.RNN scans the cell over axis 1 of batch-major (B, T, ...) inputs; return_carry
            # gives (final carry, outputs).
            return nn.RNN(cell, time_major=False, return_carry=True, unroll=self.unroll)

        parts = self._carry_parts(model, h0)

        def carry(k):  # Flax's LSTM carry is (c, h); ours lists h before c
            return (parts[LD + k], parts[k]) if model.cell == "lstm" else parts[k]

        def weights(layer, d):
            pre = layer_prefix(layer, d)
            w = {k[len(pre):]: v for k, v in params.items()
                 if k.startswith(pre) and "." not in k[len(pre):]}
            return {"cell": self._flax_cell_weights(model.cell, w)}

        x = self.ops.one_hot(X, V)
        finals = []
        for layer in range(L):
            # The weights enter through apply() rather than init(), so they are ordinary inputs of
            # a pure function and autodiff carries their gradients back to the canonical arrays.
            if D == 1:
                last, x = make_rnn().apply(
                    {"params": weights(layer, 0)}, x, initial_carry=carry(layer)
                )
                finals.append(last)
            else:
                # nn.Bidirectional runs backward_rnn with reverse=True, keep_order=True (its
                # outputs re-aligned with time) and concatenates forward then backward.
                bi = nn.Bidirectional(make_rnn(), make_rnn(), return_carry=True)
                variables = {"forward_rnn": weights(layer, 0), "backward_rnn": weights(layer, 1)}
                (last_f, last_b), x = bi.apply(
                    {"params": variables}, x,
                    initial_carry=(carry(2 * layer), carry(2 * layer + 1)),
                )
                finals += [last_f, last_b]
        if model.cell == "lstm":
            final = [f[1] for f in finals] + [f[0] for f in finals]
        else:
            final = finals
        return cells.output_logits(self.ops, params, x), self._join_carry(final)

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
    # The fast variant compiles the hand-fused step of rnn_backends.fastpath instead (both loops
    # lax.scan with this backend's unroll); other models fall back to autodiff.

    def _step(self, params, X, Y, h0, lr, max_norm):
        # max_norm is static because clip_and_sgd branches on `max_norm > 0` in Python; lr is
        # traced, so a learning-rate schedule does not recompile.
        step = self._jit("step", lambda: jax.jit(self._plain_step, static_argnums=5))
        return step(params, X, Y, h0, lr, max_norm)

    def _plain_step(self, params, X, Y, h0, lr, max_norm):
        """The traced step: the fused one where it applies (it refuses before tracing any op),
        else autodiff + clip + SGD."""
        if self.variant == "fast":
            try:
                return self._fused_step(params, X, Y, h0, lr, max_norm)
            except NotImplementedError:
                pass
        return super()._step(params, X, Y, h0, lr, max_norm)

    def _fused_step(self, params, X, Y, h0, lr, max_norm):
        from .. import fastpath
        from .jax_fast import JaxFusedOps

        ops = JaxFusedOps(self._jdtype, unroll=self.unroll)
        return fastpath.train_step(ops, params, X, Y, h0, lr, max_norm)

    def version(self) -> str:
        try:
            import flax
        except ImportError:
            return jax.__version__
        return f"{jax.__version__} (flax {flax.__version__})"
