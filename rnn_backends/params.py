"""Canonical parameters: names, shapes, seeded init, and checkpoints on disk.

Names and shapes follow the textbook (inputs multiply weights from the left, so ``W_xh`` is
(vocab, hidden)). Every backend starts from these NumPy arrays, so all frameworks share the same
initial weights bit for bit.

Naming, per layer and direction: each recurrent layer has, for every gate letter g of its cell
(``h`` for the RNN; ``z, r, h`` for the GRU; ``i, f, o, c`` for the LSTM), ``W_xg`` (input, H),
``W_hg`` (H, H) and ``b_g`` (H,). Layer 0's forward direction uses the bare book names
(``W_xh``, ``W_xz``, ...); layer k > 0 prefixes ``l<k>.``, the backward direction of a
bidirectional layer adds ``rev.``: ``W_xh``, ``rev.W_xh``, ``l1.W_xh``, ``l1.rev.W_xh``. The input
of layer 0 is the one-hot token (V); of a later layer the previous layer's output (H, or 2H
side by side forward then backward). The output layer is ``W_hq`` (H * directions, V) and ``b_q``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import CELL_GATES, ModelConfig, TrainConfig
from .data.vocab import Vocab
from .errors import CheckpointError, ConfigError

Params = dict[str, np.ndarray]

CHECKPOINT_FORMAT = 1
PARAMS_FILE = "params.npz"
META_FILE = "checkpoint.json"
AUX_PREFIX = "aux:"  # names in the weights file that are not parameters (e.g. a carried state)


def layer_prefix(layer: int, direction: int = 0) -> str:
    """The name prefix of a layer's direction: ``""``, ``"rev."``, ``"l1."``, ``"l1.rev."``."""
    return (f"l{layer}." if layer else "") + ("rev." if direction else "")


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical parameter names and shapes, in a fixed order: layer by layer, the forward
    direction before the backward one, the book's gate order within, the output layer last."""
    V, H, D = config.vocab_size, config.hidden_size, config.num_directions
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(config.num_layers):
        width = V if layer == 0 else H * D
        for direction in range(D):
            pre = layer_prefix(layer, direction)
            for g in CELL_GATES[config.cell]:
                shapes[f"{pre}W_x{g}"] = (width, H)
                shapes[f"{pre}W_h{g}"] = (H, H)
                shapes[f"{pre}b_{g}"] = (H,)
    shapes["W_hq"] = (H * D, V)
    shapes["b_q"] = (V,)
    return shapes


def infer_model(params: Params, gru_reset_after: bool = True) -> ModelConfig:
    """The :class:`ModelConfig` whose :func:`param_shapes` ``params`` has (``init_sigma`` is
    left at its default). The GRU convention cannot be read off the weights, so it is passed in.

    Raises:
        ConfigError: the names fit no cell, depth and direction count.
    """
    names = set(params)
    cell = next((c for c in ("lstm", "gru") if f"W_x{CELL_GATES[c][0]}" in names), "rnn")
    if "W_hq" not in names or f"W_x{CELL_GATES[cell][0]}" not in names:
        raise ConfigError(
            f"parameters {sorted(names)[:6]}... are not a model of this package (need W_hq and "
            "the book's names, see rnn_backends.params)"
        )
    layers = 1
    while f"l{layers}.W_x{CELL_GATES[cell][0]}" in names:
        layers += 1
    H_out, V = params["W_hq"].shape
    H = params[f"W_h{CELL_GATES[cell][0]}"].shape[0]
    config = ModelConfig(
        vocab_size=int(V),
        hidden_size=int(H),
        cell=cell,
        num_layers=layers,
        bidirectional=f"rev.W_x{CELL_GATES[cell][0]}" in names,
        gru_reset_after=gru_reset_after,
    )
    expected = param_shapes(config)
    if set(expected) != names or any(
        tuple(params[k].shape) != shape for k, shape in expected.items()
    ):
        raise ConfigError(
            f"parameters do not form a {layers}-layer {cell} model (names or shapes differ from "
            f"params.param_shapes); got {sorted(names)}"
        )
    return config


def is_bias(name: str) -> bool:
    return name.split(".")[-1].startswith("b_")


def init_params(config: ModelConfig, seed: int = 0, dtype: str = "float64") -> Params:
    """Weights from N(0, init_sigma^2), biases zero, drawn in float64 then cast to ``dtype``.

    The draw order is the order of :func:`param_shapes`, from ``np.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    params: Params = {}
    for name, shape in param_shapes(config).items():
        if is_bias(name):
            value = np.zeros(shape)
        else:
            value = rng.normal(0.0, config.init_sigma, size=shape)
        params[name] = value.astype(dtype)
    return params


def check_params(params: Params, config: ModelConfig) -> None:
    """Raise :class:`CheckpointError` unless ``params`` has exactly the names and shapes of
    ``config``."""
    expected = param_shapes(config)
    if set(params) != set(expected):
        missing = sorted(set(expected) - set(params))
        extra = sorted(set(params) - set(expected))
        raise CheckpointError(
            f"parameters do not fit the model: missing {missing or 'none'}, unexpected "
            f"{extra or 'none'}"
        )
    for name, shape in expected.items():
        if tuple(params[name].shape) != shape:
            raise CheckpointError(
                f"parameter {name} has shape {tuple(params[name].shape)}, the model needs {shape}"
            )


def cast_params(params: Params, dtype: str) -> Params:
    return {k: np.asarray(v, dtype=dtype) for k, v in params.items()}


# --- checkpoints --------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """What a checkpoint directory holds."""

    params: Params
    model_config: ModelConfig
    vocab: Vocab
    train_config: TrainConfig | None = None
    step: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    """Arrays that are not parameters (a carried hidden state); stored in the weights file under
    the same checksum."""


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a fsynced temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: str | os.PathLike[str], ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``directory`` (created if needed) atomically.

    The weights go to ``params.npz`` first, then ``checkpoint.json`` (which records the SHA-256 of
    the weights) replaces the old one, so a crash at any point leaves a loadable checkpoint.
    """
    out = Path(directory)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create checkpoint directory {str(out)!r}: {exc}") from None
    if not os.access(out, os.W_OK):
        raise CheckpointError(f"checkpoint directory {str(out)!r} is not writable")
    for name, value in [*ckpt.params.items(), *ckpt.arrays.items()]:
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"refusing to save a checkpoint: {name} is not finite")
    if any(name.startswith(AUX_PREFIX) for name in ckpt.params):
        raise CheckpointError(f"parameter names may not start with {AUX_PREFIX!r}")
    tensors = {k: np.ascontiguousarray(v) for k, v in ckpt.params.items()}
    tensors.update({AUX_PREFIX + k: np.ascontiguousarray(v) for k, v in ckpt.arrays.items()})
    buf = io.BytesIO()
    np.savez(buf, **tensors)
    blob = buf.getvalue()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model_config": ckpt.model_config.to_dict(),
        "train_config": ckpt.train_config.to_dict() if ckpt.train_config else None,
        "vocab": ckpt.vocab.idx_to_token,
        "step": ckpt.step,
        "params_sha256": hashlib.sha256(blob).hexdigest(),
        "dtype": str(next(iter(ckpt.params.values())).dtype),
        "extra": ckpt.extra,
    }
    # Versioned weights file, so the JSON always points at a complete one.
    params_name = f"params-{meta['params_sha256'][:16]}.npz"
    meta["params_file"] = params_name
    _write_atomic(out / params_name, blob)
    _write_atomic(out / META_FILE, json.dumps(meta, indent=1).encode())
    _fsync_dir(out)
    for old in out.glob("params-*.npz"):
        if old.name != params_name:
            old.unlink(missing_ok=True)
    return out


def load_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`."""
    src = Path(directory)
    meta_path = src / META_FILE
    if not meta_path.is_file():
        raise CheckpointError(
            f"{str(src)!r} is not a checkpoint directory (no {META_FILE}); pass the directory "
            "that train wrote"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        params_path = src / meta["params_file"]
        model_config = ModelConfig.from_dict(meta["model_config"])
        train_config = (
            TrainConfig.from_dict(meta["train_config"]) if meta.get("train_config") else None
        )
        vocab = Vocab.from_tokens_list(meta["vocab"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(
            f"checkpoint {str(src)!r} is corrupted ({META_FILE}: {exc})"
        ) from None
    if not params_path.is_file():
        raise CheckpointError(f"checkpoint {str(src)!r} lacks its weights {params_path.name}")
    blob = params_path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("params_sha256"):
        raise CheckpointError(
            f"checkpoint weights {str(params_path)!r} are truncated or corrupted (checksum "
            "mismatch); use an earlier checkpoint"
        )
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            tensors = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"checkpoint weights {str(params_path)!r} unreadable: {exc}"
        ) from None
    if len(vocab) != model_config.vocab_size:
        raise CheckpointError(
            f"checkpoint {str(src)!r}: vocabulary of {len(vocab)} tokens but vocab_size="
            f"{model_config.vocab_size}"
        )
    params = {k: v for k, v in tensors.items() if not k.startswith(AUX_PREFIX)}
    arrays = {k[len(AUX_PREFIX) :]: v for k, v in tensors.items() if k.startswith(AUX_PREFIX)}
    check_params(params, model_config)
    return Checkpoint(
        params=params,
        model_config=model_config,
        vocab=vocab,
        train_config=train_config,
        step=int(meta.get("step", 0)),
        extra=dict(meta.get("extra") or {}),
        arrays=arrays,
    )
