"""What an export starts from: the weights, the model they describe and the vocabulary, read off
a checkpoint, a checkpoint or run directory, or a dict of canonical NumPy arrays."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpointing import CHECKPOINT_DIR, META_FILE, Checkpoint, has_checkpoint, load_checkpoint
from ..config import ModelConfig
from ..errors import CheckpointError, ConfigError
from ..params import Params, check_params, infer_model

Source = Checkpoint | str | os.PathLike[str] | Mapping[str, np.ndarray]
"""A :class:`Checkpoint`, the path of a checkpoint directory or of a run directory holding
``checkpoint/``, or canonical parameters (the book's names, :mod:`rnn_backends.params`)."""


@dataclass(frozen=True)
class Weights:
    """Canonical parameters (one float dtype), the model they fit and, when known, the
    vocabulary (token of each id)."""

    params: Params
    model: ModelConfig
    vocab: list[str] | None

    @property
    def dtype(self) -> str:
        return str(self.params["W_hq"].dtype)


def resolve(source: Source, gru_reset_after: bool | None = None) -> Weights:
    """The :class:`Weights` of ``source``.

    ``gru_reset_after`` is needed only for bare parameters (weights cannot show the GRU
    convention; default True, cuDNN's); for a checkpoint it must agree with the recorded model.

    Raises:
        CheckpointError: the path holds no readable checkpoint.
        ConfigError: parameters of no model of this package, of mixed or non-float dtypes, or a
            ``gru_reset_after`` that contradicts the checkpoint.
    """
    if isinstance(source, (str, os.PathLike)):
        source = load_checkpoint(_checkpoint_dir(Path(source)))
    if isinstance(source, Checkpoint):
        model = source.model_config
        if gru_reset_after is not None and model.cell == "gru" and (
            gru_reset_after != model.gru_reset_after
        ):
            raise ConfigError(
                f"the checkpoint's GRU has gru_reset_after={model.gru_reset_after}; drop "
                f"gru_reset_after={gru_reset_after} (it is read from the checkpoint)"
            )
        params, vocab = dict(source.params), list(source.vocab.idx_to_token)
    elif isinstance(source, Mapping):
        params = {k: np.asarray(v) for k, v in source.items()}
        model = infer_model(params, True if gru_reset_after is None else gru_reset_after)
        vocab = None
    else:
        raise ConfigError(
            f"cannot export a {type(source).__name__}; pass a Checkpoint, a checkpoint or run "
            "directory, or a dict of canonical NumPy parameters"
        )
    try:
        check_params(params, model)
    except CheckpointError as exc:
        raise ConfigError(str(exc)) from None
    dtypes = sorted({str(v.dtype) for v in params.values()})
    if len(dtypes) != 1 or dtypes[0] not in ("float32", "float64"):
        raise ConfigError(
            f"parameters must all be float32 or all float64 to export, got {', '.join(dtypes)}"
        )
    return Weights(params=params, model=model, vocab=vocab)


def _checkpoint_dir(path: Path) -> Path:
    """``path`` if it is a checkpoint directory, else its ``checkpoint/`` if that is one."""
    for candidate in (path, path / CHECKPOINT_DIR):
        if has_checkpoint(candidate):
            return candidate
    raise CheckpointError(
        f"cannot export {str(path)!r}: no {META_FILE} there or in {CHECKPOINT_DIR}/; pass the "
        "--out directory of a train run or its checkpoint/ folder"
    )


def refuse_reset_before(weights: Weights, layer: str, target: str) -> None:
    """Raise :class:`ConfigError` for a reset-before GRU, which ``layer`` cannot compute."""
    model = weights.model
    if model.cell == "gru" and not model.gru_reset_after:
        raise ConfigError(
            f"cannot export to {target}: {layer} applies the GRU's reset gate after the recurrent "
            f"matmul only, and this model applies it before (gru_reset_after=False, the book's "
            f"scratch GRU); export to keras (its GRU has reset_after=False), safetensors or npz"
        )
