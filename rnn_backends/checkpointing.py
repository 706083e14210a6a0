"""Every byte the package writes to disk or reads back from a checkpoint.

One atomic writer serves every file: :func:`write_atomic` (and :func:`write_json` and
:func:`atomic_stream` on top of it) writes to a temporary file in the destination's folder, fsyncs
it, renames it over the destination and fsyncs the folder, so a reader (or a process that starts
after a crash) sees the old file or the new one, never a mixture. A failure at any point removes
the temporary file; a process killed mid-write leaves it, and :func:`remove_stale_temporaries`
clears such orphans when the next run starts.

A checkpoint is a directory:

* ``params.npz`` (:data:`PARAMS_FILE`, a stable name: ``np.load(".../params.npz")`` works): the
  weights under the book's names (and arrays that are not parameters, such as a carried hidden
  state, under the prefix ``aux:``), never pickled;
* ``checkpoint.json``: the format version, model and training configs, vocabulary, step, dtype,
  free-form ``extra`` (a training run keeps its position there, see :mod:`.resume`), the name of
  the weights file and its SHA-256.

How a write stays crash-safe with a fixed weights name (:func:`save_checkpoint`): the new weights
are first staged as ``params-<sha256[:16]>.npz``; then ``checkpoint.json``, which records their
SHA-256, replaces the old one (the commit); then the staged file is renamed over ``params.npz``
and other ``params-*.npz`` files are removed. Every step is an atomic rename followed by a fsync of
the folder. The rule a reader follows (:func:`weights_path`): the staged name derived from the
recorded SHA-256 if that file exists (a write stopped between the commit and the last rename),
else ``params.npz``. A kill before the commit leaves the old metadata, which names no staged file,
so the old ``params.npz`` is read; a kill after it leaves the new metadata with the staged file, or
the new ``params.npz`` once renamed. Checkpoints of earlier versions, whose weights are
``params-<sha256[:16]>.npz`` only, load by the same rule.

A run directory written by training holds ``checkpoint/`` and ``history.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .config import ModelConfig, TrainConfig
from .errors import CheckpointError, ConfigError, NonFiniteError
from .params import Params, check_params

if TYPE_CHECKING:
    from .data.vocab import Vocab

CHECKPOINT_FORMAT = 1
META_FILE = "checkpoint.json"
PARAMS_FILE = "params.npz"  # the weights inside a checkpoint (see the module docstring)
STAGED_PREFIX = "params-"  # params-<sha256[:16]>.npz: weights staged before the commit
AUX_PREFIX = "aux:"  # names in the weights file that are not parameters (e.g. a carried state)
CHECKPOINT_DIR = "checkpoint"  # inside a run directory
HISTORY_FILE = "history.json"  # inside a run directory
TMP_SUFFIX = ".tmp"
RESUME_KEY = "resume"  # Checkpoint.extra[RESUME_KEY]: a training position (see .resume)
RESUME_FORMAT = 1


# --- the one atomic writer ----------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (where the platform lets a folder be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_stream(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file to write ``path`` through; the file appears at ``path`` only if the ``with``
    block ends without an exception.

    The temporary file is ``<name>.<pid>.<random>.tmp`` in ``path``'s folder (unique per process
    and call). On success it is fsynced, renamed over ``path`` and the folder fsynced; on any
    exception it is removed and the exception propagates. Raise inside the block to discard
    what was written (e.g. after a checksum mismatch).
    """
    dest = Path(path)
    fd, tmp = tempfile.mkstemp(
        dir=dest.parent, prefix=f"{dest.name}.{os.getpid()}.", suffix=TMP_SUFFIX
    )
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(dest.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (see :func:`atomic_stream`)."""
    with atomic_stream(path) as fh:
        fh.write(data)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (see :func:`write_atomic`)."""
    write_atomic(path, json.dumps(obj, indent=1).encode("utf-8"))


def remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files a killed writer left in run directory ``out`` and its
    checkpoint.

    Only one run writes to a directory (see :func:`.resume.guard_output`), so at the start of a
    run every temporary file there is an orphan: the rename that would have used it never happened.
    """
    for folder, prefixes in (
        (out, (HISTORY_FILE,)),
        (out / CHECKPOINT_DIR, (STAGED_PREFIX, META_FILE)),
    ):
        if not folder.is_dir():
            continue
        for tmp in folder.glob("*" + TMP_SUFFIX):
            if tmp.name.startswith(prefixes):
                tmp.unlink(missing_ok=True)


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


def _refuse_non_finite(ckpt: Checkpoint, out: Path) -> None:
    """The one finiteness check on the way to disk: nothing NaN/Inf is ever written."""
    for name, value in [*ckpt.params.items(), *ckpt.arrays.items()]:
        if not np.all(np.isfinite(value)):
            kept = (
                f"the checkpoint in {str(out)!r} is the last good one"
                if has_checkpoint(out)
                else "no checkpoint was written before"
            )
            raise NonFiniteError(
                f"after step {ckpt.step} {name} is not finite; nothing was written, {kept}"
            )


def _weights_blob(ckpt: Checkpoint) -> bytes:
    """The weights file's bytes: an uncompressed ``.npz`` of parameters and ``aux:`` arrays."""
    if any(name.startswith(AUX_PREFIX) for name in ckpt.params):
        raise CheckpointError(f"parameter names may not start with {AUX_PREFIX!r}")
    tensors = {k: np.ascontiguousarray(v) for k, v in ckpt.params.items()}
    tensors.update({AUX_PREFIX + k: np.ascontiguousarray(v) for k, v in ckpt.arrays.items()})
    buf = io.BytesIO()
    np.savez(buf, **tensors)
    return buf.getvalue()


def _writable_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create checkpoint directory {str(out)!r}: {exc}") from None
    if not os.access(out, os.W_OK):
        raise CheckpointError(f"checkpoint directory {str(out)!r} is not writable")


def save_checkpoint(directory: str | os.PathLike[str], ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``directory`` (created if needed) atomically.

    The weights end up in ``params.npz``; the order of the renames (staged weights, the metadata
    as the commit, then the staged weights over ``params.npz``; see the module docstring) means a
    crash at any point leaves a loadable checkpoint, the old one or the new one.

    Raises:
        NonFiniteError: a parameter or array is NaN/Inf (nothing is written then).
        CheckpointError: the directory cannot be created or written.
    """
    out = Path(directory)
    _writable_dir(out)
    _refuse_non_finite(ckpt, out)
    blob = _weights_blob(ckpt)
    sha = hashlib.sha256(blob).hexdigest()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model_config": ckpt.model_config.to_dict(),
        "train_config": ckpt.train_config.to_dict() if ckpt.train_config else None,
        "vocab": ckpt.vocab.idx_to_token,
        "step": ckpt.step,
        "params_sha256": sha,
        "dtype": str(next(iter(ckpt.params.values())).dtype),
        "extra": ckpt.extra,
        "params_file": PARAMS_FILE,
    }
    staged = out / _staged_name(sha)
    write_atomic(staged, blob)
    write_json(out / META_FILE, meta)  # the commit: from here on the new weights are the ones
    os.replace(staged, out / PARAMS_FILE)
    _fsync_dir(out)
    for old in out.glob(f"{STAGED_PREFIX}*.npz"):  # older versions' files, or a killed write's
        old.unlink(missing_ok=True)
    return out


def _staged_name(sha: str) -> str:
    return f"{STAGED_PREFIX}{sha[:16]}.npz"


def weights_path(directory: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """The file that holds the weights ``meta`` (a parsed ``checkpoint.json``) records: the
    staged ``params-<sha256[:16]>.npz`` when it exists, else ``params.npz``.

    The name comes from the recorded checksum, never from a path in the metadata, so it cannot
    point outside ``directory``. The caller still verifies the file's SHA-256.
    """
    src = Path(directory)
    sha = meta.get("params_sha256")
    if isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha):
        staged = src / _staged_name(sha)
        if staged.is_file():
            return staged
    return src / PARAMS_FILE


def has_checkpoint(directory: str | os.PathLike[str]) -> bool:
    return (Path(directory) / META_FILE).is_file()


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parsed ``checkpoint.json`` of ``directory``, or None when it is missing or unreadable
    (for messages only; :func:`load_checkpoint` is the checked way in)."""
    try:
        meta = json.loads((Path(directory) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _load_metadata(src: Path) -> tuple[dict[str, Any], ModelConfig, TrainConfig | None, Vocab]:
    # The data package writes its downloads through this module, so the vocabulary is imported
    # only when a checkpoint is read: no import cycle at load time.
    from .data.vocab import Vocab

    if not has_checkpoint(src):
        raise CheckpointError(
            f"{str(src)!r} is not a checkpoint directory (no {META_FILE}); pass the directory "
            "that train wrote"
        )
    try:
        meta = json.loads((src / META_FILE).read_text(encoding="utf-8"))
        model_config = ModelConfig.from_dict(meta["model_config"])
        train_config = (
            TrainConfig.from_dict(meta["train_config"]) if meta.get("train_config") else None
        )
        vocab = Vocab.from_tokens_list(meta["vocab"])
        weights = Path(meta["params_file"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ConfigError) as exc:
        raise CheckpointError(
            f"checkpoint {str(src)!r} is corrupted ({META_FILE}: {exc})"
        ) from None
    if weights.name != meta["params_file"]:  # a path would read outside the directory
        raise CheckpointError(
            f"checkpoint {str(src)!r} is corrupted ({META_FILE}: params_file "
            f"{meta['params_file']!r} is not a file name in the directory)"
        )
    if len(vocab) != model_config.vocab_size:
        raise CheckpointError(
            f"checkpoint {str(src)!r}: vocabulary of {len(vocab)} tokens but vocab_size="
            f"{model_config.vocab_size}"
        )
    return meta, model_config, train_config, vocab


def _load_weights(src: Path, meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every array of the weights file ``meta`` names, after its SHA-256 is checked."""
    path = weights_path(src, meta)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(src)!r} lacks its weights {path.name}")
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != meta.get("params_sha256"):
        raise CheckpointError(
            f"checkpoint weights {str(path)!r} are truncated or corrupted (checksum "
            "mismatch); use an earlier checkpoint"
        )
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"checkpoint weights {str(path)!r} unreadable: {exc}") from None


def load_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: not a checkpoint, corrupted or truncated (checksum), or weights whose
            names or shapes do not fit the recorded model.
    """
    src = Path(directory)
    meta, model_config, train_config, vocab = _load_metadata(src)
    stored = _load_weights(src, meta)
    params = {k: v for k, v in stored.items() if not k.startswith(AUX_PREFIX)}
    arrays = {k[len(AUX_PREFIX) :]: v for k, v in stored.items() if k.startswith(AUX_PREFIX)}
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


def find_checkpoint(path: str | os.PathLike[str]) -> Path:
    """The checkpoint directory for ``path``: a checkpoint directory or a run directory holding
    ``checkpoint/``."""
    p = Path(path)
    if has_checkpoint(p):
        return p
    if has_checkpoint(p / CHECKPOINT_DIR):
        return p / CHECKPOINT_DIR
    if not p.exists():
        raise CheckpointError(
            f"cannot resume: {str(p)!r} does not exist; pass the --out directory of an earlier run"
        )
    raise CheckpointError(
        f"cannot resume: {str(p)!r} holds no checkpoint ({META_FILE} not found there or in "
        f"{CHECKPOINT_DIR}/); the run was stopped before its first checkpoint, so start it again"
    )


def resume_position(ckpt: Checkpoint, src: Path) -> dict[str, Any]:
    """The training position a checkpoint records (``extra["resume"]``, see :mod:`.resume`), or
    a :class:`CheckpointError` when it records none of this format."""
    info = ckpt.extra.get(RESUME_KEY)
    if not isinstance(info, dict) or info.get("format") != RESUME_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(src)!r} records no training position (written by save_checkpoint "
            "or an older version); it can generate text but not resume training"
        )
    return info
