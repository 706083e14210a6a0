"""TensorFlow adapter: ``tf.GradientTape`` over the shared cell math, a ``tf.function`` training
step, and Keras 3 ``SimpleRNN``/``GRU``/``LSTM`` (in ``Bidirectional``) as the native layer."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .. import cells
from ..params import layer_prefix
from .base import Backend

# Keras stacks a layer's gates along the columns in this order (the book's letters).
KERAS_GATES = {"rnn": ("h",), "gru": ("z", "r", "h"), "lstm": ("i", "f", "c", "o")}

# --- quiet import ---------------------------------------------------------------------------------
# TensorFlow 2.21 logs from C++ through absl before absl is initialised, and those lines ignore
# TF_CPP_MIN_LOG_LEVEL: the oneDNN notice ("I0000 ... port.cc:153] oneDNN custom operations are
# on") reaches stderr at import whatever the variable says, and graph optimisation adds more on a
# compiled step's first run (e.g. "W0000 ... util.cc:163] Not handling type DT_DOUBLE"). So the
# variable is set to 2 (INFO and WARNING hidden, errors shown) only when the user has not chosen a
# level, and those two moments run with file descriptor 2 captured: the captured text is written
# back without the C++ log lines the variable asks to hide. Anything else (errors, Python warnings,
# tracebacks) is written back untouched, and nothing is done to Python's warning filters.
_SEVERITY = "IWEF"  # TF_CPP_MIN_LOG_LEVEL n hides the first n of these
_CPP_LOG_LINE = re.compile(
    # absl, before its initialisation: "I0000 00:00:1795795186.053316    7539 port.cc:153] ..."
    r"^(?:(?P<absl>[IWEF])\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\]"
    # TensorFlow's own: "2025-09-17 14:44:05.157831: I external/.../cudart_stub.cc:32] ..."
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: (?P<tf>[IWEF]) \S+:\d+\])"
)
_ABSL_BANNER = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
)


def _log_level() -> int:
    """The user's (or our default) TF_CPP_MIN_LOG_LEVEL as 0..3; unset or unreadable is 0."""
    try:
        return min(max(int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")), 0), 3)
    except ValueError:
        return 0  # a value TensorFlow cannot read either: hide nothing


# The CUDA build of TensorFlow probes the driver when it first lists GPUs and logs this at ERROR
# level on a machine without one. It only means "no GPU here", which _place already reports
# (and turns into a clear error when a GPU was asked for), so it is dropped like an INFO line.
_NO_GPU_PROBE = "failed call to cuInit"


def _keep_line(line: str, level: int) -> bool:
    if line.rstrip("\r\n") == _ABSL_BANNER:
        return level == 0
    if _NO_GPU_PROBE in line and _CPP_LOG_LINE.match(line):
        return level == 0
    match = _CPP_LOG_LINE.match(line)
    if match is None:
        return True  # not a C++ log line (a Python warning, a traceback): always shown
    return _SEVERITY.index(match["absl"] or match["tf"]) >= level


@contextlib.contextmanager
def _quiet_cpp_logs() -> Iterator[None]:
    """Capture file descriptor 2 (where C++ writes) and replay it without the hidden log lines."""
    level = _log_level()
    if level == 0:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    # A file, not a pipe: a pipe would block the writer once its buffer filled.
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = "".join(ln for ln in text.splitlines(keepends=True) if _keep_line(ln, level))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


if "tensorflow" in sys.modules:  # imported by the user already: their logging, their choice
    import tensorflow as tf
else:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with _quiet_cpp_logs():
        import tensorflow as tf


class TensorflowOps(cells.Ops):
    def __init__(self, dtype: tf.DType) -> None:
        self.dtype = dtype

    tanh = staticmethod(tf.tanh)
    sigmoid = staticmethod(tf.sigmoid)
    sqrt = staticmethod(tf.sqrt)
    minimum = staticmethod(tf.minimum)

    def stack(self, xs):
        return tf.stack(xs)

    def flip(self, x):
        return tf.reverse(x, axis=[0])

    def matmul(self, a, b):
        # tf.matmul broadcasts a rank-2 right operand over leading axes (BatchMatMulV2).
        return tf.matmul(a, b)

    def take_rows(self, w, ids):
        return tf.gather(w, ids)

    def one_hot(self, ids, depth):
        return tf.one_hot(ids, depth, dtype=self.dtype)

    def concat(self, xs, axis):
        return tf.concat(xs, axis=axis)

    def swap_bt(self, x):
        if x.dtype.is_integer and x.shape.rank == 2 and x.shape[1] is not None:
            # An int Transpose runs a oneDNN kernel that logs a spurious ERROR once per process
            # ("oneDNN supports DT_INT32 only on platforms with AVX-512") before falling back;
            # unstacking the T columns and stacking them moves the same ids without it.
            return tf.stack(tf.unstack(x, axis=1), axis=0)
        return tf.transpose(x, [1, 0, *range(2, x.shape.rank)])

    def logsumexp(self, x):
        return tf.reduce_logsumexp(x, axis=-1, keepdims=True)

    def pick(self, x, ids):
        # batch_dims pairs every leading index of ids with x's, then gathers along the last axis.
        return tf.gather(x, ids, axis=-1, batch_dims=ids.shape.rank)

    def mean(self, x):
        return tf.reduce_mean(x)

    def sum(self, x):
        return tf.reduce_sum(x)


class TensorflowBackend(Backend):
    name = "tensorflow"
    framework = "tensorflow"
    # XLA for the compiled step is opt-in. It matches the oracle as closely as the plain graph
    # (float64 ~3e-13 on a 35-step batch) and ran the unrolled cell variants faster on a 2-core
    # CPU, but it adds seconds of compilation per batch shape and slowed Keras's while_loop.
    jit_compile = False

    def __init__(
        self,
        dtype: str = "float64",
        device: str | None = None,
        variant: str | None = None,
        gru_reset_after: bool = True,
    ) -> None:
        # (max_norm, fused) -> tf.function of the training step
        self._compiled: dict[tuple[float, bool], Any] = {}
        self._keras_rnn: Any = None  # layer 0 of the native stack
        self._keras_layers: list[Any] = []
        self._keras_key: tuple[Any, ...] | None = None
        self._run_before: set[tuple[Any, ...]] = set()  # compiled-step signatures already run
        super().__init__(
            dtype=dtype, device=device, variant=variant, gru_reset_after=gru_reset_after
        )

    # --- 1. arrays, device and precision ----------------------------------------------------------

    def _place(self, device: str | None) -> str:
        with _quiet_cpp_logs():
            gpus = tf.config.list_physical_devices("GPU")
        want_gpu = device in ("gpu", "cuda") or (device is None and bool(gpus))
        if want_gpu and not gpus:
            from ..errors import BackendUnavailableError

            raise BackendUnavailableError(
                "device 'gpu' asked for, but TensorFlow sees no GPU (tensorflow-cpu, or no CUDA "
                "driver); drop --device or install the 'tensorflow[and-cuda]' build"
            )
        # Full float32 precision: comparisons against the oracle must not run in TF32.
        tf.config.experimental.enable_tensor_float_32_execution(False)
        self._tdtype = tf.as_dtype(self.dtype)
        self._device_name = "/GPU:0" if want_gpu else "/CPU:0"
        if want_gpu:
            details = tf.config.experimental.get_device_details(gpus[0])
            return f"gpu:0 ({details.get('device_name', 'GPU')})"
        return "cpu"

    def _scope(self) -> contextlib.AbstractContextManager[Any]:
        """Pin the ops built inside to this backend's device (eager ops otherwise prefer a GPU)."""
        return tf.device(self._device_name)

    def asarray(self, x: np.ndarray) -> tf.Tensor:
        x = np.asarray(x)
        # Token ids as int32: what tf.gather and tf.one_hot index with on every device.
        dtype = tf.int32 if x.dtype.kind in "iub" else self._tdtype
        with self._scope():
            return tf.constant(x, dtype=dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x.numpy())

    # --- 2. ops -----------------------------------------------------------------------------------

    def _make_ops(self) -> cells.Ops:
        return TensorflowOps(self._tdtype)

    # --- 3. time loop: a Python loop (the base class's); under tf.function it is unrolled -------
    # once per sequence length, which keeps every step the same op the eager path runs.

    def _stack(self, ys):
        return tf.stack(ys)

    # --- 4. autodiff ------------------------------------------------------------------------------

    def value_and_grad(
        self, fn: Callable[[dict[str, Any]], tuple[Any, Any]], params: dict[str, Any]
    ) -> tuple[Any, Any, dict[str, Any]]:
        leaves = dict(params)
        with self._scope(), tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(list(leaves.values()))
            value, aux = fn(leaves)
        grads = tape.gradient(
            value, list(leaves.values()), unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        # tf.gather's gradient is an IndexedSlices; the SGD update needs dense tensors.
        dense = [tf.convert_to_tensor(g) for g in grads]
        return value, self._detach(aux), dict(zip(leaves, dense, strict=True))

    def _detach(self, x):
        return tf.stop_gradient(x)

    def _inference(self):
        # No tape is recording outside value_and_grad; only the device needs pinning.
        return self._scope()

    # --- 5. native layer: keras.layers.SimpleRNN / GRU / LSTM, in Bidirectional ----------------

    def _keras_layer(self, model: Any) -> list[Any]:
        """Built Keras 3 layers for ``model`` (a ModelConfig), one per layer, created eagerly
        (tf.function may not create variables on a retrace) and reused; their own variables are
        never read for the math."""
        key = (model.cell, model.vocab_size, model.hidden_size, model.num_layers,
               model.num_directions, model.gru_reset_after)
        if self._keras_key == key:
            return self._keras_layers
        import keras

        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError(
                f"the native variant needs Keras on its TensorFlow backend, but KERAS_BACKEND is "
                f"{keras.backend.backend()!r}; unset KERAS_BACKEND or use variant 'fast'"
            )
        H = model.hidden_size
        options = {"return_sequences": True, "return_state": True, "dtype": self.dtype}
        layers = []
        with self._scope():
            for layer_index in range(model.num_layers):
                if model.cell == "rnn":
                    layer = keras.layers.SimpleRNN(H, activation="tanh", **options)
                elif model.cell == "gru":
                    # reset_after selects the convention exactly: r * (h U + b_rec) with the
                    # recurrent bias held at zero, or (r * h) U.
                    layer = keras.layers.GRU(
                        H, activation="tanh", recurrent_activation="sigmoid",
                        reset_after=model.gru_reset_after, **options,
                    )
                else:
                    layer = keras.layers.LSTM(
                        H, activation="tanh", recurrent_activation="sigmoid", **options
                    )
                if model.num_directions == 2:
                    # concatenates forward then backward outputs, re-aligned with time
                    layer = keras.layers.Bidirectional(layer, merge_mode="concat", dtype=self.dtype)
                width = model.vocab_size if layer_index == 0 else H * model.num_directions
                layer.build((None, None, width))
                layers.append(layer)
        self._keras_layers, self._keras_key, self._keras_rnn = layers, key, layers[0]
        return layers

    def _keras_weight(self, model: Any, layer_index: int, path: str, params: dict[str, Any]):
        """The canonical tensors that stand in for the Keras variable at ``path``.

        Keras computes x @ kernel + h @ recurrent_kernel + bias with kernel (in, G*H): the book's
        orientation, the gates side by side in KERAS_GATES order, so nothing is transposed.
        SimpleRNN and LSTM have one bias, as the book; the reset-after GRU has two rows, (input,
        recurrent), and the recurrent one is held at zero.
        """
        direction = 1 if "/backward_" in path else 0
        pre = layer_prefix(layer_index, direction)
        gates = KERAS_GATES[model.cell]
        kind = path.rsplit("/", 1)[-1]
        name = {"kernel": "W_x", "recurrent_kernel": "W_h", "bias": "b_"}[kind]
        parts = [params[pre + name + g] for g in gates]
        value = parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)
        if kind == "bias" and model.cell == "gru" and model.gru_reset_after:
            value = tf.stack([value, tf.zeros_like(value)])
        return value

    def native_logits(self, params: dict[str, Any], X: Any, h0: Any) -> tuple[Any, Any]:
        model = self.model(params)
        layers = self._keras_layer(model)
        D, LD = model.num_directions, model.num_layers * model.num_directions
        parts = self._carry_parts(model, h0)
        n_states = 2 if model.cell == "lstm" else 1
        # Keras 3 is batch-major only (time_major is gone): one-hot (B, T, V) in, (B, T, H) out.
        x = self.ops.one_hot(X, model.vocab_size)
        finals: list[list[Any]] = [[] for _ in range(n_states)]
        for layer_index, layer in enumerate(layers):
            # stateless_call substitutes the canonical tensors for the layer's variables, so the
            # tape sees them.
            weights = [
                self._keras_weight(model, layer_index, v.path, params)
                for v in layer.trainable_variables
            ]
            state = [v.value for v in layer.non_trainable_variables]  # the (unused) dropout seed
            # Keras's states per direction are [h] or [h, c]; Bidirectional takes and returns the
            # forward direction's, then the backward one's.
            initial = [
                parts[s * LD + layer_index * D + d] for d in range(D) for s in range(n_states)
            ]
            (x, *last), _ = layer.stateless_call(weights, state, x, initial_state=initial)
            for k, value in enumerate(last):
                finals[k % n_states].append(value)
        final = [v for kind in finals for v in kind]
        return cells.output_logits(self.ops, params, x), self._join_carry(final)

    # --- 6. training step: the generic step traced once per shape by tf.function ----------------
    # The fast variant traces the hand-fused step of rnn_backends.fastpath instead (no tape);
    # other models fall back to the generic step. XLA for it is opt-in (fused_jit_compile): on the
    # 2-core CPU it was no faster than the plain graph (21-30 vs 16-26 ms/step at the textbook
    # size, one thread) and took 6-8 s to compile against 2 s.
    fused_jit_compile = False

    def _compiled_step(self, max_norm: float, fused: bool = False) -> Callable[..., Any]:
        # clip_and_sgd branches on max_norm in Python, so max_norm is fixed per traced function;
        # lr is a tensor argument, so a learning-rate schedule does not retrace.
        key = (max_norm, fused)
        fn = self._compiled.get(key)
        if fn is None:
            if fused:
                from .. import fastpath
                from .tensorflow_fast import TensorflowFusedOps

                ops = TensorflowFusedOps(self._tdtype)

                def step(params, X, Y, h0, lr):
                    return fastpath.train_step(ops, params, X, Y, h0, lr, max_norm)

                fn = tf.function(step, jit_compile=self.fused_jit_compile)
            else:

                def step(params, X, Y, h0, lr):
                    return Backend._step(self, params, X, Y, h0, lr, max_norm)

                fn = tf.function(step, jit_compile=self.jit_compile)
            self._compiled[key] = fn
        return fn

    def _step(self, params, X, Y, h0, lr, max_norm):
        if self.variant == "native":
            self._keras_layer(self.model(params))  # build its variables outside the trace
        fused = self.variant == "fast"
        if fused:
            from .. import fastpath

            try:
                fastpath.check_applies(params)
            except NotImplementedError:
                fused = False
        fn = self._compiled_step(float(max_norm), fused)
        # The first run of a signature traces and optimises a graph, which is when TensorFlow's
        # C++ side logs; later runs of it are left alone.
        signature = (
            float(max_norm),
            *((k, tuple(v.shape), v.dtype) for k, v in params.items()),
            *(tuple(a.shape) for a in (X, Y, h0)),
        )
        first = signature not in self._run_before
        with self._scope(), _quiet_cpp_logs() if first else contextlib.nullcontext():
            out = fn(params, X, Y, h0, tf.constant(lr, dtype=self._tdtype))
        self._run_before.add(signature)
        return out

    def _trace_count(self) -> int:
        """How many graphs the compiled step has traced (every max_norm and shape together)."""
        return sum(fn.experimental_get_tracing_count() for fn in self._compiled.values())

    def concat_trick(
        self, X: np.ndarray, W_xh: np.ndarray, H: np.ndarray, W_hh: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        with self._scope():  # the shared version builds ops outside any of our entry points
            return super().concat_trick(X, W_xh, H, W_hh)

    def version(self) -> str:
        return tf.__version__
