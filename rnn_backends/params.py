"""Canonical parameters: names, shapes, seeded init, and checkpoints on disk.

Names and shapes follow the textbook (inputs multiply weights from the left, so ``W_xh`` is
(vocab, hidden)). Every backend starts from these NumPy arrays, so all frameworks share the same
initial weights bit for bit.
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

from .config import ModelConfig, TrainConfig
from .data.vocab import Vocab
from .errors import CheckpointError, ConfigError

Params = dict[str, np.ndarray]

CHECKPOINT_FORMAT = 1
PARAMS_FILE = "params.npz"
META_FILE = "checkpoint.json"


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical parameter names and shapes, in a fixed order."""
    V, H = config.vocab_size, config.hidden_size
    return {"W_xh": (V, H), "W_hh": (H, H), "b_h": (H,), "W_hq": (H, V), "b_q": (V,)}


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
    for name, value in ckpt.params.items():
        if not np.all(np.isfinite(value)):
            raise CheckpointError(f"refusing to save a checkpoint: {name} is not finite")
    buf = io.BytesIO()
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in ckpt.params.items()})
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
            params = {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"checkpoint weights {str(params_path)!r} unreadable: {exc}"
        ) from None
    if len(vocab) != model_config.vocab_size:
        raise CheckpointError(
            f"checkpoint {str(src)!r}: vocabulary of {len(vocab)} tokens but vocab_size="
            f"{model_config.vocab_size}"
        )
    check_params(params, model_config)
    return Checkpoint(
        params=params,
        model_config=model_config,
        vocab=vocab,
        train_config=train_config,
        step=int(meta.get("step", 0)),
        extra=dict(meta.get("extra") or {}),
    )
