"""Export to Keras 3: a functional ``keras.Model`` of stock layers, saved as ``.keras``.

The model takes int ids (B, T) (the input ``"ids"``); a ``CategoryEncoding`` layer turns them
into one-hot vectors (nothing to learn, and the first recurrent kernel stays the book's ``W_xh``),
then one ``SimpleRNN``/``GRU``/``LSTM`` per layer (in ``Bidirectional`` for two directions) and a
``Dense`` head. It returns a dict: ``"logits"`` (B, T, V) and the final state ``"h"`` (and
``"c"`` for the LSTM), batch-major as everything in Keras: (B, L * D, H). Built with
``state_input=True`` it also takes ``"h"`` (and ``"c"``) of that shape as the initial state.
Only stock layers and ops are used, so ``keras.saving.load_model(path)`` reads the file without
this package.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import keras

from ..backends.tensorflow_backend import TensorflowBackend
from ..config import CELL_SPECS
from ._source import Weights


def build(weights: Weights, state_input: bool = False) -> keras.Model:
    """A ``keras.Model`` holding ``weights`` (any cell, both GRU conventions)."""
    m, dtype = weights.model, weights.dtype
    D, LD = m.num_directions, m.num_layers * m.num_directions
    states = CELL_SPECS[m.cell].states
    inputs = {"ids": keras.Input(shape=(None,), dtype="int32", name="ids")}
    if state_input:
        for s in states:
            inputs[s] = keras.Input(shape=(LD, m.hidden_size), dtype=dtype, name=s)
    x = keras.layers.CategoryEncoding(m.vocab_size, output_mode="one_hot", dtype=dtype,
                                      name="one_hot")(inputs["ids"])  # fmt: skip
    finals: list[list[Any]] = [[] for _ in states]
    layers = []
    for k in range(m.num_layers):
        layer = TensorflowBackend.keras_layer(keras, m, k, dtype, name=f"rnn_l{k}")
        # Keras takes and returns a direction's states as [h] or [h, c], forward direction first.
        initial = (
            [inputs[s][:, k * D + d] for d in range(D) for s in states] if state_input else None
        )
        x, *last = layer(x, initial_state=initial)
        for j, value in enumerate(last):
            finals[j % len(states)].append(value)
        layers.append(layer)
    head = keras.layers.Dense(m.vocab_size, dtype=dtype, name="head")
    outputs = {"logits": head(x)}
    for s, parts in zip(states, finals, strict=True):
        outputs[s] = keras.ops.stack(parts, axis=1)
    # With the ids alone, the bare input: model.predict(ids) then needs no dict.
    model = keras.Model(inputs if state_input else inputs["ids"], outputs, name="char_rnn")
    for k, layer in enumerate(layers):
        for v in layer.trainable_variables:
            v.assign(TensorflowBackend.keras_weight(m, k, v.path, weights.params))
    head.kernel.assign(weights.params["W_hq"])  # Dense computes x @ kernel + bias: the book's way
    head.bias.assign(weights.params["b_q"])
    return model


def to_bytes(model: keras.Model) -> bytes:
    """The ``.keras`` file of ``model`` (Keras writes only to paths: through a temporary one)."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        # Saving calls np.array on Keras variables, whose __array__ lacks NumPy 2's copy
        # keyword; NumPy warns and copies, which is what saving needs anyway.
        warnings.filterwarnings("ignore", message="__array__ implementation doesn't accept a copy",
                                category=DeprecationWarning)
        path = Path(tmp) / "model.keras"
        model.save(path)
        return path.read_bytes()


def load(path: str | os.PathLike[str]) -> keras.Model:
    """The model saved at ``path`` (``keras.saving.load_model``)."""
    return keras.saving.load_model(path)
