"""Export to Flax: a ``flax.linen`` module class and its params, saved as msgpack.

The file is ``flax.serialization.msgpack_serialize`` of a dict with ``"params"`` (the pytree
``CharRNN.apply`` takes under ``{"params": ...}``), ``"config"`` (the module's fields) and
``"vocab"``; :func:`load` returns ``(module, variables)``, and without this package
``flax.serialization.msgpack_restore`` reads it. Float64 weights need ``jax_enable_x64``, which
:func:`build` and :func:`load` turn on (JAX would otherwise cast them to float32 silently).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from ..backends.jax_backend import JaxBackend, direction_params, flax_cell_params
from ..config import ModelConfig
from ..errors import CheckpointError
from ._source import Weights

FORMAT = "rnn-backends/flax"


class CharRNN(nn.Module):
    """The character-level language model as stock Flax layers: per layer and direction an
    ``nn.RNN`` over ``SimpleCell`` (tanh), ``GRUCell`` or ``LSTMCell`` (named ``l<k>`` and
    ``l<k>_rev``), and an ``nn.Dense`` head.

    ``__call__(ids, state=None)`` takes int ids (B, T) and returns logits (B, T, V) and the final
    state as this package lays it out: ``(h,)``, or ``(h, c)`` for the LSTM, each (L * D, B, H);
    pass it back as ``state`` to continue a sequence.
    """

    vocab_size: int
    hidden_size: int
    cell: str = "rnn"
    num_layers: int = 1
    bidirectional: bool = False
    dtype: str = "float32"

    @nn.compact
    def __call__(self, ids: Any, state: tuple[Any, ...] | None = None) -> tuple[Any, tuple]:
        model = ModelConfig(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                            cell=self.cell, num_layers=self.num_layers,
                            bidirectional=self.bidirectional)  # fmt: skip
        D, LD, H = model.num_directions, self.num_layers * model.num_directions, self.hidden_size
        lstm = self.cell == "lstm"
        if state is None:
            zeros = jnp.zeros((LD, ids.shape[0], H), self.dtype)
            state = (zeros, zeros) if lstm else (zeros,)
        x, finals = jax.nn.one_hot(ids, self.vocab_size, dtype=self.dtype), []
        for layer in range(self.num_layers):
            outs = []
            for d in range(D):
                k = layer * D + d
                # Made here, the cell would belong to this module; unbound, the RNN adopts it as
                # its "cell". Flax's LSTM carry is (c, h); the reverse direction reads time
                # backwards and keep_order puts its outputs back in time order, as
                # nn.Bidirectional does.
                cell = JaxBackend.flax_cell(nn, model, self.dtype).clone(parent=None)
                rnn = nn.RNN(cell, return_carry=True,
                             reverse=bool(d), keep_order=True,
                             name=f"l{layer}" + ("_rev" if d else ""))  # fmt: skip
                last, y = rnn(x, initial_carry=(state[1][k], state[0][k]) if lstm else state[0][k])
                outs.append(y)
                finals.append(last)
            x = jnp.concatenate(outs, axis=-1) if D == 2 else outs[0]
        logits = nn.Dense(self.vocab_size, dtype=self.dtype, param_dtype=self.dtype,
                          name="head")(x)  # fmt: skip
        if lstm:
            return logits, (jnp.stack([f[1] for f in finals]), jnp.stack([f[0] for f in finals]))
        return logits, (jnp.stack(finals),)


def _need_x64(dtype: str) -> None:
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)


def build(weights: Weights) -> tuple[CharRNN, dict[str, Any]]:
    """The module and its variables ``{"params": ...}`` holding ``weights`` (the caller has
    refused a reset-before GRU)."""
    _need_x64(weights.dtype)
    m = weights.model
    module = CharRNN(m.vocab_size, m.hidden_size, m.cell, m.num_layers, m.bidirectional,
                     weights.dtype)  # fmt: skip
    params: dict[str, Any] = {}
    for layer in range(m.num_layers):
        for d in range(m.num_directions):
            w = direction_params(weights.params, layer, d)
            params[f"l{layer}" + ("_rev" if d else "")] = {"cell": flax_cell_params(m.cell, w)}
    params["head"] = {"kernel": weights.params["W_hq"], "bias": weights.params["b_q"]}
    return module, {"params": jax.tree.map(jnp.asarray, params)}


def to_bytes(module: CharRNN, variables: dict[str, Any], vocab: list[str] | None) -> bytes:
    """The msgpack file :func:`load` reads."""
    fields = ("vocab_size", "hidden_size", "cell", "num_layers", "bidirectional", "dtype")
    obj = {
        "format": FORMAT,
        "config": {f: getattr(module, f) for f in fields},
        "vocab": vocab,
        "params": jax.tree.map(np.asarray, variables["params"]),
    }
    return serialization.msgpack_serialize(obj)


def load(path: str | os.PathLike[str]) -> tuple[CharRNN, dict[str, Any]]:
    """``(module, variables)`` from a file written by ``export --to flax``.

    Raises:
        CheckpointError: the file is not such an export.
    """
    try:
        obj = serialization.msgpack_restore(Path(path).read_bytes())
    except Exception as exc:  # msgpack raises many kinds for a damaged or foreign file
        raise CheckpointError(f"cannot read {str(path)!r} as a flax export: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a file written by export --to flax")
    _need_x64(obj["config"]["dtype"])
    module = CharRNN(**obj["config"])
    return module, {"params": jax.tree.map(jnp.asarray, obj["params"])}
