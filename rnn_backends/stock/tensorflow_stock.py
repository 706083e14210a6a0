"""TensorFlow as a reader of the textbook would write it: the scratch model trained eagerly with
a ``GradientTape`` (the book's code), the same step under ``tf.function``, and Keras's
``SimpleRNN`` with a ``Dense`` output layer under ``tf.function``.

Each ``make`` function takes the canonical weights and returns a step ``(X, Y) -> loss``
(:data:`rnn_backends.stock.StepFn`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..backends.tensorflow_logs import tf


def _setup(gpu: bool) -> str:
    # The package's backend disables TF32 for the comparison with the oracle; so do these.
    tf.config.experimental.enable_tensor_float_32_execution(False)
    return "/GPU:0" if gpu else "/CPU:0"


def clip_gradients(grads: list[tf.Tensor], grad_clip: float) -> list[tf.Tensor]:
    """The book's clipping: scale every gradient by ``grad_clip / norm`` when the global norm
    exceeds ``grad_clip``."""
    grads = [tf.convert_to_tensor(g) for g in grads]  # a gather's gradient is IndexedSlices
    norm = tf.math.sqrt(sum(tf.reduce_sum(g**2) for g in grads))
    if tf.greater(norm, grad_clip):  # a tf.cond under tf.function (autograph)
        grads = [g * grad_clip / norm for g in grads]
    return grads


def _cross_entropy(logits: tf.Tensor, Y: tf.Tensor) -> tf.Tensor:
    import keras

    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(Y, logits,
                                                                        from_logits=True))


def _trainer(
    loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    variables: list[tf.Variable],
    device: str,
    lr: float,
    grad_clip: float,
    compile_step: bool,
) -> Callable[[np.ndarray, np.ndarray], float]:
    """The book's step: tape, gradient, clip, the Keras SGD optimizer; under ``tf.function``
    when ``compile_step``."""
    import keras

    optimizer = keras.optimizers.SGD(learning_rate=lr)

    def train_step(X, Y):
        with tf.GradientTape() as tape:
            loss = loss_fn(X, Y)
        grads = clip_gradients(tape.gradient(loss, variables), grad_clip)
        optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    if compile_step:
        train_step = tf.function(train_step)

    def step(X: np.ndarray, Y: np.ndarray) -> float:
        with tf.device(device):
            return float(train_step(tf.constant(X), tf.constant(Y)))

    return step


def _scratch(params: dict[str, np.ndarray], dtype: str, device: str, lr: float,
             grad_clip: float, compile_step: bool) -> Callable[[np.ndarray, np.ndarray], float]:
    with tf.device(device):
        w = {k: tf.Variable(v.astype(dtype), name=k) for k, v in params.items()}
    V, H = params["W_xh"].shape

    def loss(X, Y):
        inputs = tf.one_hot(tf.transpose(X), V, dtype=dtype)  # (T, B, V)
        state = tf.zeros((tf.shape(X)[0], H), dtype=dtype)
        outputs = []
        for x in tf.unstack(inputs):
            state = tf.tanh(tf.matmul(x, w["W_xh"]) + tf.matmul(state, w["W_hh"]) + w["b_h"])
            outputs.append(state)
        logits = tf.stack([tf.matmul(h, w["W_hq"]) + w["b_q"] for h in outputs], 1)
        return _cross_entropy(logits, Y)

    return _trainer(loss, list(w.values()), device, lr, grad_clip, compile_step)


def book(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """The book's eager training step."""
    return _scratch(params, dtype, _setup(gpu), lr, grad_clip, compile_step=False)


def compiled(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """The book's step under ``tf.function`` (the loop unrolled in the graph)."""
    return _scratch(params, dtype, _setup(gpu), lr, grad_clip, compile_step=True)


def layer(params, *, dtype: str, gpu: bool, lr: float, grad_clip: float):
    """Keras ``SimpleRNN`` (one bias, kernels (in, H) as the book) and ``Dense``, batch-major."""
    import keras

    device = _setup(gpu)
    V, H = params["W_xh"].shape
    with tf.device(device):
        rnn = keras.layers.SimpleRNN(H, activation="tanh", return_sequences=True, dtype=dtype)
        dense = keras.layers.Dense(V, dtype=dtype)
        rnn.build((None, None, V))
        dense.build((None, None, H))
        rnn.set_weights([params["W_xh"], params["W_hh"], params["b_h"]])
        dense.set_weights([params["W_hq"], params["b_q"]])

    def loss(X, Y):
        return _cross_entropy(dense(rnn(tf.one_hot(X, V, dtype=dtype))), Y)

    variables = [*rnn.trainable_variables, *dense.trainable_variables]
    return _trainer(loss, variables, device, lr, grad_clip, compile_step=True)
