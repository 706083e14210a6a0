"""TensorFlow adapter: ``tf.GradientTape`` over the shared cell math, a ``tf.function`` training
step, and Keras 3 ``SimpleRNN``/``GRU``/``LSTM`` (in ``Bidirectional``) as the native layer."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import cells
from ..config import CELL_SPECS, ModelConfig
from ..errors import BackendUnavailableError
from ..params import layer_prefix
from .base import Backend, Option
from .tensorflow_logs import quiet_cpp_logs, tf
from .tensorflow_ops import TensorflowFastOps, TensorflowOps


class TensorflowBackend(Backend):
    """The TensorFlow backend.

    Options (beyond :class:`Backend`'s):
        jit_compile: compile the training step with XLA. Off by default: it matches the oracle as
            closely as the plain graph (float64 ~3e-13 on a 35-step batch) but takes seconds to
            compile per batch shape, and on the 2-core CPU it was no faster for the fast step
            (21-30 against 16-26 ms/step at the textbook size, one thread; 6-8 s to compile
            against 2 s) and slowed Keras's while_loop, though it ran the unrolled cell variants
            faster.
    """

    name = "tensorflow"
    framework = "tensorflow"
    gpu_hint = "tensorflow-cpu or no CUDA driver? Drop --device or install 'tensorflow[and-cuda]'"
    options = {"jit_compile": Option(False, lambda v: isinstance(v, bool), "True or False")}
    jit_compile: bool

    # --- 1. arrays and device ---------------------------------------------------------------------

    def _gpu_count(self) -> int:
        with quiet_cpp_logs():
            return len(tf.config.list_physical_devices("GPU"))

    def _place(self, gpu: bool) -> str:
        # Full float32 precision: comparisons against the oracle must not run in TF32.
        tf.config.experimental.enable_tensor_float_32_execution(False)
        index = self.device_index
        self._device_name = f"/GPU:{index}" if gpu else "/CPU:0"
        if gpu:
            chosen = tf.config.list_physical_devices("GPU")[index]
            details = tf.config.experimental.get_device_details(chosen)
            return f"gpu:{index} ({details.get('device_name', 'GPU')})"
        return "cpu"

    def _tensor_dtype(self) -> tf.DType:
        return tf.as_dtype(self.dtype)

    def _to_tensor(self, x: np.ndarray) -> tf.Tensor:
        # Token ids as int32: what tf.gather and tf.one_hot index with on every device.
        return tf.constant(x, dtype=tf.int32 if x.dtype.kind == "i" else self.tensor_dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.numpy())

    # --- 2. ops -----------------------------------------------------------------------------------

    def _make_ops(self) -> TensorflowOps:
        return TensorflowOps(self.tensor_dtype)

    def _make_fast_ops(self) -> TensorflowFastOps:
        return TensorflowFastOps(self.tensor_dtype)

    # --- 3. time loop: the base class's Python loop; under tf.function it is unrolled once per ---
    # sequence length, which keeps every step the same op the eager path runs.

    # --- 4. autodiff ------------------------------------------------------------------------------

    def value_and_grad(self, fn, params, *args):
        leaves = dict(params)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(list(leaves.values()))
            value, aux = fn(leaves, *args)
        grads = tape.gradient(
            value, list(leaves.values()), unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        # tf.gather's gradient is an IndexedSlices; the SGD update needs dense tensors.
        dense = [tf.convert_to_tensor(g) for g in grads]
        return value, self._detach(aux), dict(zip(leaves, dense, strict=True))

    def _detach(self, x):
        return tf.stop_gradient(x)

    # --- 5. native layer: keras.layers.SimpleRNN / GRU / LSTM, in Bidirectional ----------------

    def _keras_layers(self, model: ModelConfig) -> list[Any]:
        """Built Keras 3 layers for ``model``, one per layer, made once; their own variables are
        never read for the math."""

        def make() -> list[Any]:
            import keras

            if keras.backend.backend() != "tensorflow":
                raise BackendUnavailableError(
                    f"the native variant needs Keras on its TensorFlow backend, but KERAS_BACKEND "
                    f"is {keras.backend.backend()!r}; unset KERAS_BACKEND or use variant 'fast'"
                )
            return [self.keras_layer(keras, model, k, self.dtype) for k in range(model.num_layers)]

        return self._cached(("native", model), make)

    @staticmethod
    def keras_layer(
        keras: Any, model: ModelConfig, index: int, dtype: str, name: str | None = None
    ) -> Any:
        """Layer ``index`` of ``model`` as a built Keras layer returning its sequence and states
        (shared with :mod:`rnn_backends.export`)."""
        H = model.hidden_size
        # Bidirectional names its copies forward_<name> and backward_<name>.
        options = {"return_sequences": True, "return_state": True, "dtype": dtype, "name": name}
        if model.cell == "rnn":
            layer = keras.layers.SimpleRNN(H, activation="tanh", **options)
        elif model.cell == "gru":
            # reset_after selects the convention exactly: r * (h U + b_rec) with the recurrent
            # bias held at zero, or (r * h) U.
            layer = keras.layers.GRU(H, activation="tanh", recurrent_activation="sigmoid",
                                     reset_after=model.gru_reset_after, **options)
        else:
            layer = keras.layers.LSTM(H, activation="tanh", recurrent_activation="sigmoid",
                                      **options)
        if model.bidirectional:
            # concatenates forward then backward outputs, re-aligned with time
            layer = keras.layers.Bidirectional(layer, merge_mode="concat", dtype=dtype, name=name)
        layer.build((None, None, model.vocab_size if index == 0 else H * model.num_directions))
        return layer

    @staticmethod
    def keras_weight(model: ModelConfig, index: int, path: str, params: dict[str, Any]) -> Any:
        """The canonical tensors that stand in for the Keras variable at ``path`` of layer
        ``index`` (the one mapping, shared with :mod:`rnn_backends.export`).

        Keras computes x @ kernel + h @ recurrent_kernel + bias with kernel (in, G*H): the book's
        orientation, the gates side by side in ``CellSpec.keras_gates`` order, so nothing is
        transposed. SimpleRNN and LSTM have one bias, as the book; the reset-after GRU has two
        rows, (input, recurrent), and the recurrent one is held at zero.
        """
        pre = layer_prefix(index, 1 if "/backward_" in path else 0)
        kind = path.rsplit("/", 1)[-1]
        name = {"kernel": "W_x", "recurrent_kernel": "W_h", "bias": "b_"}[kind]
        parts = [params[pre + name + g] for g in CELL_SPECS[model.cell].keras_gates]
        value = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
        if kind == "bias" and model.cell == "gru" and model.gru_reset_after:
            value = tf.stack([value, tf.zeros_like(value)])
        return value

    def _native_forward(self, params, X, h0):
        model = self.model(params)
        D, LD = model.num_directions, model.num_layers * model.num_directions
        parts = self._carry_parts(model, h0)
        n_states = len(CELL_SPECS[model.cell].states)
        # Keras 3 is batch-major only (time_major is gone): one-hot (B, T, V) in, (B, T, H) out.
        x = self.ops.one_hot(X, model.vocab_size)
        finals: list[list[Any]] = [[] for _ in range(n_states)]
        for index, layer in enumerate(self._keras_layers(model)):
            # stateless_call substitutes the canonical tensors for the layer's variables, so the
            # tape sees them.
            weights = [
                self.keras_weight(model, index, v.path, params) for v in layer.trainable_variables
            ]
            state = [v.value for v in layer.non_trainable_variables]  # the (unused) dropout seed
            # Keras's states per direction are [h] or [h, c]; Bidirectional takes and returns the
            # forward direction's, then the backward one's.
            initial = [parts[s * LD + index * D + d] for d in range(D) for s in range(n_states)]
            (x, *last), _ = layer.stateless_call(weights, state, x, initial_state=initial)
            for k, value in enumerate(last):
                finals[k % n_states].append(value)
        final = [v for kind in finals for v in kind]
        return cells.output_logits(self.ops, params, x), self._join_carry(final)

    # --- 6. compilation: the training step as a tf.function; every call on the device -----------

    def _compile(self, kind: str, fn: Callable) -> Callable:
        if kind not in ("step", "eval_loss"):
            # forward (generation: a new shape per prefix) and the differentiated loss run
            # eagerly; evaluation repeats one batch shape, so its loss is a graph too.
            return fn
        # Autograph is off: the step's Python control flow (the unrolled loops, the fast step's
        # fallback) depends on shapes and options only, and an error raised while tracing (a
        # strict backend's refusal) then reaches the caller as it was raised.
        return _CompiledStep(self, tf.function(fn, jit_compile=self.jit_compile, autograph=False))

    def _scalar(self, x: float) -> tf.Tensor:
        # A tensor: tf.function traces anew for every new Python number it is given.
        return tf.constant(x, dtype=self.tensor_dtype)

    def _device_scope(self) -> contextlib.AbstractContextManager[Any]:
        # Eager ops otherwise prefer a GPU, whatever device the backend was made for.
        return tf.device(self._device_name)


class _CompiledStep:
    """The training step's ``tf.function``, called so that it traces once per input signature,
    and quietly.

    The native variant's Keras layers make variables, which a ``tf.function`` may do on its first
    trace only and at the price of a second one, so they are made before it runs. The first run
    of each signature, when TensorFlow traces and optimises a graph and its C++ side logs, runs
    inside :func:`quiet_cpp_logs`.
    """

    def __init__(self, backend: TensorflowBackend, function: Any) -> None:
        self.backend, self.function = backend, function
        self._seen: set[tuple[Any, ...]] = set()

    def __call__(self, params: dict[str, Any], *args: Any) -> Any:
        if self.backend.variant == "native":
            self.backend._keras_layers(self.backend.model(params))
        # The optimizer's slots (a dict of dicts) and rates (a tuple) are nested: flatten them.
        signature = (
            *((k, tuple(v.shape), v.dtype) for k, v in params.items()),
            *(tuple(a.shape) for a in tf.nest.flatten(args)),
        )
        first = signature not in self._seen
        with quiet_cpp_logs() if first else contextlib.nullcontext():
            out = self.function(params, *args)
        self._seen.add(signature)
        return out
