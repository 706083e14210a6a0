"""Export to PyTorch: a plain ``nn.Module`` of ``nn.RNN``/``GRU``/``LSTM`` and ``nn.Linear``.

The file is what torch users pass around: ``torch.save`` of a dict holding the ``state_dict``, the
constructor arguments and the vocabulary, readable with ``torch.load(path, weights_only=True)``
(tensors and plain Python values only, no pickled code). :func:`load` rebuilds the module; without
this package, build ``nn.RNN(V, H, num_layers, batch_first=True)`` (or GRU/LSTM) plus
``nn.Linear(H, V)`` and load the state dict under ``rnn.`` and ``head.``.
"""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
import torch

from ..backends.torch_backend import TorchBackend
from ..errors import CheckpointError
from ._source import Weights

FORMAT = "rnn-backends/torch"


class CharRNN(torch.nn.Module):
    """The character-level language model as stock torch layers.

    Arguments:
        vocab_size: V; the input is the one-hot of each id and the output V logits.
        hidden_size: H.
        cell: ``"rnn"`` (``nn.RNN`` with tanh), ``"gru"`` (``nn.GRU``, reset gate after the
            recurrent matmul) or ``"lstm"`` (``nn.LSTM``).
        num_layers: L, stacked inside the one recurrent module.
        bidirectional: D = 2 directions, outputs side by side (2H) as torch lays them out.
        dtype: ``"float32"`` or ``"float64"``.

    ``forward(ids, state=None)`` takes int ids (B, T) and returns logits (B, T, V) and the final
    state in torch's own form: h (L * D, B, H), or (h, c) for the LSTM; pass it back as ``state``
    to continue a sequence. ``rnn.bias_hh_*`` are zero after an export (the book's model has one
    bias per gate) but remain ordinary parameters.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        cell: str = "rnn",
        num_layers: int = 1,
        bidirectional: bool = False,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.config = {
            "vocab_size": vocab_size, "hidden_size": hidden_size, "cell": cell,
            "num_layers": num_layers, "bidirectional": bidirectional, "dtype": dtype,
        }  # fmt: skip
        layers = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}
        extra = {"nonlinearity": "tanh"} if cell == "rnn" else {}
        kind = getattr(torch, dtype)
        self.rnn = layers[cell](
            vocab_size, hidden_size, num_layers=num_layers, bidirectional=bidirectional,
            batch_first=True, dtype=kind, **extra,
        )  # fmt: skip
        self.head = torch.nn.Linear(hidden_size * (2 if bidirectional else 1), vocab_size,
                                    dtype=kind)  # fmt: skip
        self.vocab: list[str] | None = None  # the token of each id, when known

    def forward(self, ids: torch.Tensor, state: Any = None) -> tuple[torch.Tensor, Any]:
        x = torch.nn.functional.one_hot(ids.long(), self.head.out_features)
        out, state = self.rnn(x.to(self.head.weight.dtype), state)
        return self.head(out), state


def build(weights: Weights) -> CharRNN:
    """A :class:`CharRNN` in evaluation mode holding ``weights`` (the caller has refused a
    reset-before GRU)."""
    m = weights.model
    module = CharRNN(m.vocab_size, m.hidden_size, m.cell, m.num_layers, m.bidirectional,
                     weights.dtype)  # fmt: skip
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.params.items()}
    state = {"rnn." + k: v for k, v in TorchBackend.native_weights(m, tensors).items()}
    state["head.weight"] = tensors["W_hq"].T  # nn.Linear computes x W^T + b
    state["head.bias"] = tensors["b_q"]
    module.load_state_dict(state, strict=True)
    module.vocab = weights.vocab
    return module.eval()


def to_bytes(module: CharRNN) -> bytes:
    """The file :func:`load` reads: ``torch.save`` of the state dict, config and vocabulary."""
    buf = io.BytesIO()
    obj = {"format": FORMAT, "config": module.config, "vocab": module.vocab,
           "state_dict": module.state_dict()}  # fmt: skip
    torch.save(obj, buf)
    return buf.getvalue()


def load(path: str | os.PathLike[str]) -> CharRNN:
    """The module saved at ``path`` by ``rnn-backends export --to torch``, in evaluation mode.

    Raises:
        CheckpointError: the file is not such an export.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a damaged or foreign file
        raise CheckpointError(f"cannot read {str(path)!r} as a torch export: {exc}") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a file written by export --to torch")
    module = CharRNN(**obj["config"])
    module.load_state_dict(obj["state_dict"], strict=True)
    module.vocab = obj.get("vocab")
    return module.eval()
