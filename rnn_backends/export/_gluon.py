"""Export to MXNet Gluon: a ``HybridBlock`` of ``rnn.RNN`` (set to tanh)/``GRU``/``LSTM`` and a
``Dense`` head, saved with ``HybridBlock.export``.

``export`` writes Gluon's deployment format, ``PREFIX-symbol.json`` (the graph) and
``PREFIX-0000.params`` (the weights), which ``gluon.SymbolBlock.imports`` reads back without this
package (:func:`load` does that). The block's inputs are the ids and the initial state tensors:
``net(ids, h0)`` or ``net(ids, h0, c0)`` for the LSTM, each state (L * D, B, H) (Gluon's own
layout; a hybridized Gluon RNN needs its state passed in); it returns ``(logits, h)`` or
``(logits, h, c)``. ``CharRNN.begin_state(batch)`` gives zeros of the right shape.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mxnet as mx
from mxnet import gluon, npx
from mxnet import np as mnp

from ..backends.mxnet_backend import MxnetBackend
from ..config import CELL_SPECS, ModelConfig
from ._source import Weights

SUFFIXES = ("-symbol.json", "-0000.params")  # the two files of an export with prefix PREFIX


class CharRNN(gluon.HybridBlock):
    """The character-level language model as stock Gluon layers: ``rnn`` (layout NTC) and
    ``head`` (``Dense`` with ``flatten=False``). Arguments as ``ModelConfig`` plus ``dtype``.

    The gates' second biases (``*h2h_bias``) are zero after an export (the book's model has one
    bias per gate) but remain ordinary parameters.
    """

    def __init__(self, vocab_size: int, hidden_size: int, cell: str = "rnn", num_layers: int = 1,
                 bidirectional: bool = False, dtype: str = "float32", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._model = ModelConfig(vocab_size=vocab_size, hidden_size=hidden_size, cell=cell,
                                 num_layers=num_layers, bidirectional=bidirectional)
        self._dtype = dtype
        with self.name_scope():
            self.rnn = MxnetBackend.gluon_layer(self._model, dtype)
            self.head = gluon.nn.Dense(vocab_size, flatten=False, dtype=dtype,
                                       in_units=hidden_size * self._model.num_directions)

    def hybrid_forward(self, F: Any, ids: Any, *state: Any) -> tuple[Any, ...]:
        x = F.npx.one_hot(ids, self._model.vocab_size, dtype=self._dtype)
        out, final = self.rnn(x, list(state))
        return (self.head(out), *final)

    def begin_state(self, batch_size: int) -> list[Any]:
        """Zero initial states: one (L * D, B, H) array per state tensor (h, or h and c)."""
        m = self._model
        shape = (m.num_layers * m.num_directions, batch_size, m.hidden_size)
        return [mnp.zeros(shape, dtype=self._dtype) for _ in CELL_SPECS[m.cell].states]


def build(weights: Weights) -> CharRNN:
    """A hybridized :class:`CharRNN` holding ``weights`` (the caller has refused a reset-before
    GRU)."""
    npx.set_np()  # the block computes with MXNet's NumPy interface, as the adapter does
    m = weights.model
    net = CharRNN(m.vocab_size, m.hidden_size, m.cell, m.num_layers, m.bidirectional,
                  weights.dtype)  # fmt: skip
    # Gluon's default initializer fails for float64 under set_np(); every value is set below.
    net.initialize(mx.init.Zero(), ctx=mx.cpu())
    arrays = {k: mnp.array(v, dtype=v.dtype) for k, v in weights.params.items()}
    for attr, _, value in MxnetBackend.gluon_weights(m, arrays):
        getattr(net.rnn, attr).set_data(value)
    net.head.weight.set_data(arrays["W_hq"].T)  # Dense computes x W^T + b
    net.head.bias.set_data(arrays["b_q"])
    net.hybridize()
    return net


def save(net: CharRNN, directory: Path) -> list[Path]:
    """Export ``net`` into ``directory`` as ``model-symbol.json`` and ``model-0000.params``."""
    # export() needs the graph, which a hybridized block builds on its first call.
    net(mnp.zeros((1, 1), dtype="int64"), *net.begin_state(1))
    net.export(str(directory / "model"))
    return [directory / ("model" + s) for s in SUFFIXES]


def to_files(net: CharRNN) -> dict[str, bytes]:
    """The export's files by suffix (Gluon writes only to paths, so through a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = save(net, Path(tmp))
        return {s: p.read_bytes() for s, p in zip(SUFFIXES, paths, strict=True)}


def load(prefix: str | os.PathLike[str]) -> gluon.SymbolBlock:
    """The block exported with ``prefix`` (``gluon.SymbolBlock.imports``); call it as
    ``net(ids, h0)`` or ``net(ids, h0, c0)``."""
    npx.set_np()
    symbol, params = (f"{prefix}{s}" for s in SUFFIXES)
    # export() names the block's inputs data0 (the ids), data1, ... (the states).
    names = [n for n in mx.sym.load(symbol).list_inputs() if n.startswith("data")]
    inputs = sorted(names, key=lambda n: int(n[len("data"):]))
    with warnings.catch_warnings():
        # Gluon cannot infer the dtype of the int ids from the graph and says so; it is not used.
        warnings.filterwarnings("ignore", message="Cannot decide type", category=UserWarning)
        return gluon.SymbolBlock.imports(symbol, inputs, params)
