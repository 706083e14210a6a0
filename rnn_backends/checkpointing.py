"""Every byte the package writes to disk or reads back from a checkpoint.

One atomic writer serves every file: :func:`write_atomic` (and :func:`write_json` and
:func:`atomic_stream` on top of it) writes to a temporary file of its own in the destination's
folder (``<name>.<pid>.<random>.tmp``, created with the umask's permissions), fsyncs it, renames
it over the destination and fsyncs the folder, so a reader (or a process that starts after a
crash) sees the old file or the new one, never a mixture. A failure at any point removes the
temporary file; a full disk is a :class:`DiskFullError` naming the path; a process killed
mid-write leaves the temporary file, and :func:`remove_stale_temporaries` clears such orphans
when the next run in that folder starts.

A checkpoint is a directory:

* ``params.npz`` (:data:`PARAMS_FILE`, a stable name: ``np.load(".../params.npz")`` works): the
  weights under the book's names (and arrays that are not parameters, such as a carried hidden
  state, under the prefix ``aux:``), uncompressed, never pickled;
* ``checkpoint.json``: the format version, model and training configs, vocabulary, step, dtype,
  free-form ``extra`` (a training run keeps its position there, see :mod:`.resume`), the shapes
  of the ``aux:`` arrays, the name of the weights file and its SHA-256.

How a write stays crash-safe with a fixed weights name (:func:`save_checkpoint`): the new weights
are first staged as ``params-<sha256[:16]>.npz``; then ``checkpoint.json``, which records their
SHA-256, replaces the old one (the commit); then the staged file is renamed over ``params.npz``
and other staged files of this package's naming are removed. Every step is an atomic rename
followed by a fsync of the folder. The rule a reader follows (:func:`weights_name`): the staged
name derived from the recorded SHA-256 if that file exists (a write stopped between the commit
and the last rename), else ``params.npz``. A kill before the commit leaves the old metadata, which
names no staged file, so the old ``params.npz`` is read; a kill after it leaves the new metadata
with the staged file, or the new ``params.npz`` once renamed. Checkpoints of earlier versions,
whose metadata names ``params-<sha256[:16]>.npz``, load by the same rule.

Loading treats a checkpoint as untrusted input (:func:`load_checkpoint`): it opens only the two
regular files of the directory (never a symbolic link, never a path named inside it), checks the
metadata against a schema (:mod:`.checkpoint_schema`) and every weights member against the model
before allocating it (:mod:`.npzread`), and refuses weights that are not finite float32/float64.

A run directory written by training holds ``checkpoint/``, ``history.json``, ``metrics.csv``
and, with tensorboard installed, TensorBoard's events file (see :mod:`.runlog`); the logs grow by
:func:`append_durable`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from .checkpoint_schema import (
    ARRAY_NAME,
    CHECKPOINT_FORMAT,
    MAX_META_BYTES,
    RESUME_FORMAT,
    Invalid,
    Metadata,
    check_metadata,
    parse_json,
)
from .config import DTYPES, ModelConfig, TrainConfig
from .errors import CheckpointError, DiskFullError, NonFiniteError
from .memory import param_count
from .npzread import Expected, read_npz, size_bounds
from .params import Params, check_params, param_shapes

if TYPE_CHECKING:
    from .data.vocab import Vocab

META_FILE = "checkpoint.json"
PARAMS_FILE = "params.npz"  # the weights inside a checkpoint (see the module docstring)
STAGED_PREFIX = "params-"  # params-<sha256[:16]>.npz: weights staged before the commit
AUX_PREFIX = "aux:"  # names in the weights file that are not parameters (e.g. a carried state)
CHECKPOINT_DIR = "checkpoint"  # inside a run directory
HISTORY_FILE = "history.json"  # inside a run directory
METRICS_FILE = "metrics.csv"  # inside a run directory, see .runlog
EVENTS_FILE = "events.out.tfevents.rnn-backends"  # TensorBoard's, inside a run directory
TMP_SUFFIX = ".tmp"
RESUME_KEY = "resume"  # Checkpoint.extra[RESUME_KEY]: a training position (see .resume)
WEIGHTS_NAME = re.compile(r"params-[0-9a-f]{16}\.npz")  # what save_checkpoint names them
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))

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


def _temporary(dest: Path) -> tuple[int, Path]:
    """A new file beside ``dest``, named ``<name>.<pid>.<8 hex>.tmp`` (unique per process and
    call), opened for writing. Created with mode 0666, which the umask narrows as for any other
    tool's files; never through a symbolic link."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC
    while True:
        tmp = dest.with_name(f"{dest.name}.{os.getpid()}.{secrets.token_hex(4)}{TMP_SUFFIX}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue


def _disk_full(path: Path, exc: OSError) -> DiskFullError:
    return DiskFullError(
        f"no space left on the device holding {str(path)!r} ({exc.strerror}); nothing was "
        "written there and the previous version of the file is intact; free some space"
    )


@contextlib.contextmanager
def atomic_stream(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file to write ``path`` through; the file appears at ``path`` only if the ``with``
    block ends without an exception.

    The temporary file is ``<name>.<pid>.<random>.tmp`` in ``path``'s folder (see
    :func:`_temporary`). On success it is fsynced, renamed over ``path`` and the folder fsynced;
    on any exception it is removed and the exception propagates (a full disk or quota as
    :class:`DiskFullError`). Raise inside the block to discard what was written (e.g. after a
    checksum mismatch).
    """
    dest = Path(path)
    fd, tmp = _temporary(dest)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, dest)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in _FULL:
            raise _disk_full(dest, exc) from None
        raise
    _fsync_dir(dest.parent)


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (see :func:`atomic_stream`)."""
    with atomic_stream(path) as fh:
        fh.write(data)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (see :func:`write_atomic`)."""
    write_atomic(path, json.dumps(obj, indent=1).encode("utf-8"))


def is_temporary_of(name: str, targets: tuple[str, ...]) -> bool:
    """Whether ``name`` is a temporary file this writer made for one of ``targets`` (or for a
    weights file of a checkpoint, when ``params-`` is among them)."""
    match = re.fullmatch(r"(.+)\.\d+\.[0-9a-f]{8}" + re.escape(TMP_SUFFIX), name)
    if match is None:
        return False
    base = match.group(1)
    return base in targets or ("params-" in targets and bool(WEIGHTS_NAME.fullmatch(base)))


def append_durable(path: str | os.PathLike[str], data: bytes) -> None:
    """Append ``data`` to the existing file ``path`` in one write and fsync it.

    For logs that grow by whole records (metrics.csv rows, TensorBoard events): a process killed
    at any instant leaves every record before ``data`` intact (and ``data`` whole or absent
    unless the machine itself fails mid-write). Whoever continues the log first rewrites it with
    :func:`write_atomic`, keeping only the records it vouches for, so a torn tail never lasts.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        view = memoryview(data)
        while view:  # a regular file takes it in one call; loop in case it does not
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(out: Path) -> None:
    """Delete what a killed writer left in run directory ``out`` and its checkpoint: temporary
    files of this writer's naming (:func:`is_temporary_of`) and weights files of this package's
    naming (``params-<16 hex>.npz``) that the checkpoint's metadata does not name. Nothing else.

    Only one run writes to a directory at a time (it holds the folder's lock, see
    :mod:`.runfolder`), so at the start of a run every such file there is an orphan: the rename
    or the metadata that would have used it never came.
    """
    current, _ = _previous_weights(out / CHECKPOINT_DIR)
    for folder, targets in (
        (out, (HISTORY_FILE, METRICS_FILE, EVENTS_FILE)),
        (out / CHECKPOINT_DIR, ("params-", META_FILE)),
    ):
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            name = path.name
            orphan = is_temporary_of(name, targets) or (
                "params-" in targets and WEIGHTS_NAME.fullmatch(name) and name != current
            )  # fmt: skip
            if orphan and not path.is_symlink() and path.is_file():
                path.unlink(missing_ok=True)


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


def _check_to_save(ckpt: Checkpoint) -> str:
    """The dtype of the checkpoint: every parameter and array one float type of :data:`DTYPES`,
    the parameters exactly the model's (the rules the loader applies, so that whatever is saved
    loads). Raises :class:`CheckpointError`."""
    check_params(ckpt.params, ckpt.model_config)
    dtype = str(next(iter(ckpt.params.values())).dtype)
    for name, value in [*ckpt.params.items(), *ckpt.arrays.items()]:
        if str(np.asarray(value).dtype) != dtype or dtype not in DTYPES:
            raise CheckpointError(
                f"{name} is {np.asarray(value).dtype}; a checkpoint holds arrays of one type, "
                f"float32 or float64 (the first parameter is {dtype})"
            )
    for name in ckpt.arrays:
        if not ARRAY_NAME.fullmatch(name):
            raise CheckpointError(
                f"array name {name!r} is not a plain name (letters, digits, _ . :)"
            )
    return dtype


def _weights_blob(ckpt: Checkpoint) -> bytes:
    """The weights file's bytes: an uncompressed ``.npz`` of parameters and ``aux:`` arrays."""
    if any(name.startswith(AUX_PREFIX) for name in ckpt.params):
        raise CheckpointError(f"parameter names may not start with {AUX_PREFIX!r}")
    tensors = {k: np.ascontiguousarray(v) for k, v in ckpt.params.items()}
    tensors.update({AUX_PREFIX + k: np.ascontiguousarray(v) for k, v in ckpt.arrays.items()})
    buf = io.BytesIO()
    # numpy's stub types **kwds as if a name could be its allow_pickle flag; none is here.
    np.savez(buf, **tensors)  # type: ignore[arg-type]
    return buf.getvalue()


def _writable_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create checkpoint directory {str(out)!r}: {exc}") from None
    if not os.access(out, os.W_OK):
        raise CheckpointError(f"checkpoint directory {str(out)!r} is not writable")


def _previous_weights(out: Path) -> tuple[str | None, int | None]:
    """The staged weights file the checkpoint now in ``out`` may still need (the name derived
    from its recorded SHA-256: a write stopped between the commit and the last rename left the
    current weights there) and its step; (None, None) without a readable checkpoint."""
    meta = read_metadata(out)
    if meta is None:
        return None, None
    sha, step = meta.get("params_sha256"), meta.get("step")
    staged = None
    if isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha) is not None:
        staged = _staged_name(sha)
    return staged, (step if isinstance(step, int) else None)


def _remove_staged(out: Path, keep: str | None) -> None:
    """Delete the staged weights files of this package's naming in ``out`` but ``keep``."""
    for path in out.iterdir():
        if WEIGHTS_NAME.fullmatch(path.name) and path.name != keep and not path.is_symlink():
            path.unlink(missing_ok=True)


def save_checkpoint(directory: str | os.PathLike[str], ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``directory`` (created if needed) atomically.

    The weights end up in ``params.npz``; the order of the renames (staged weights, the metadata
    as the commit, then the staged weights over ``params.npz``; see the module docstring) means a
    crash at any point leaves a loadable checkpoint, the old one or the new one, and no file in
    the directory other than this package's weights is touched.

    Raises:
        NonFiniteError: a parameter or array is NaN/Inf (nothing is written then).
        CheckpointError: the directory cannot be created or written, or the weights are not one
            float type of the model's names and shapes.
        DiskFullError: the disk is full; the previous checkpoint is intact.
    """
    out = Path(directory)
    _writable_dir(out)
    _refuse_non_finite(ckpt, out)
    dtype = _check_to_save(ckpt)
    blob = _weights_blob(ckpt)
    sha = hashlib.sha256(blob).hexdigest()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "model_config": ckpt.model_config.to_dict(),
        "train_config": ckpt.train_config.to_dict() if ckpt.train_config else None,
        "vocab": ckpt.vocab.idx_to_token,
        "step": ckpt.step,
        "params_sha256": sha,
        "dtype": dtype,
        "extra": ckpt.extra,
        "params_file": PARAMS_FILE,
        "arrays": {k: {"shape": list(np.shape(v)), "dtype": dtype} for k, v in ckpt.arrays.items()},
    }
    _, old_step = _previous_weights(out)
    staged = out / _staged_name(sha)
    try:
        write_atomic(staged, blob)
        try:
            write_json(out / META_FILE, meta)  # the commit: from here the new weights are the ones
        except BaseException:
            staged.unlink(missing_ok=True)  # the new weights, which no metadata names
            raise
    except DiskFullError as exc:
        kept = f"the checkpoint of step {old_step} there is intact" if old_step is not None else (
            "none was before")
        raise DiskFullError(
            f"no space left on the device holding {str(out)!r}: the checkpoint of step "
            f"{ckpt.step} was not written and {kept}; free some space, then resume",
            about_run=True,
        ) from exc.__cause__
    os.replace(staged, out / PARAMS_FILE)
    _fsync_dir(out)
    _remove_staged(out, keep=None)
    return out


def _staged_name(sha: str) -> str:
    return f"{STAGED_PREFIX}{sha[:16]}.npz"


def weights_name(src: Path, sha: str, recorded: str) -> str:
    """The file of ``src`` that holds the weights a checkpoint.json records (``sha``, the file
    name ``recorded``): the staged ``params-<sha256[:16]>.npz`` when it exists, else
    ``recorded`` (``params.npz``). The caller still verifies the file's SHA-256."""
    staged = _staged_name(sha)
    return staged if os.path.lexists(src / staged) else recorded


def has_checkpoint(directory: str | os.PathLike[str]) -> bool:
    return (Path(directory) / META_FILE).is_file()


# --- loading: a checkpoint is untrusted input ---------------------------------------------------


def _refusal(src: Path, where: str, what: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {str(src)!r} is corrupted ({where}: {what}); load only checkpoints that "
        "rnn-backends wrote"
    )


def _open_regular(src: Path, name: str) -> tuple[int, int] | None:
    """An open descriptor of the regular file ``name`` in ``src`` and its size; None when it
    does not exist. A symbolic link (wherever it points), a folder, a pipe or a device is
    refused: only the directory's own files are read, and ``fstat`` checks what was opened."""
    path = src / name
    link = "it is a symbolic link, which a checkpoint may not hold"
    if path.is_symlink():
        raise _refusal(src, name, link)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | _CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _refusal(src, name, link) from None
        raise CheckpointError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _refusal(src, name, "it is not a regular file")
    return fd, info.st_size


def _read_metadata(src: Path) -> Metadata:
    """``checkpoint.json`` of ``src``, bounded in size and depth and checked field by field."""
    opened = _open_regular(src, META_FILE)
    if opened is None:
        raise CheckpointError(
            f"{str(src)!r} is not a checkpoint directory (no {META_FILE}); pass the directory "
            "that train wrote"
        )
    fd, size = opened
    try:
        if size > MAX_META_BYTES:
            raise _refusal(src, META_FILE, f"it is {size} bytes, more than the {MAX_META_BYTES} "
                           "a checkpoint's metadata may take")  # fmt: skip
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(MAX_META_BYTES + 1)
    finally:
        os.close(fd)
    try:
        return check_metadata(parse_json(data))
    except Invalid as exc:
        raise _refusal(src, META_FILE, str(exc)) from None


def _expected_members(src: Path, meta: Metadata, file_size: int) -> dict[str, Expected]:
    """Name -> shape and dtype of every member the weights file must hold: the model's
    parameters and the ``aux:`` arrays the metadata lists."""
    dtype = np.dtype(meta.dtype).newbyteorder("<")
    values, tensors = param_count(meta.model_config)
    # Each member takes more than 64 bytes of zip and header: a config claiming more tensors
    # than the file can hold (a billion layers) is refused before param_shapes lists them.
    if tensors > max(file_size // 64, 1000):
        raise _refusal(src, meta.params_file, f"the model in {META_FILE} needs "
                       f"{values * dtype.itemsize} bytes of weights but the weights file has "
                       f"{file_size}")  # fmt: skip
    expected = {k: Expected(v, dtype) for k, v in param_shapes(meta.model_config).items()}
    for name, spec in meta.arrays.items():
        expected[AUX_PREFIX + name] = Expected(spec.shape, np.dtype(spec.dtype).newbyteorder("<"))
    return expected


class _WeightsGone(Exception):
    """The weights file the metadata names is not there (a writer may have just replaced it)."""


class _Mismatch(Exception):
    """The weights' SHA-256 is not the recorded one: corrupted, or replaced by a writer since the
    metadata was read (then the metadata has changed too)."""


def _hash_bounded(fd: int, size: int) -> str:
    digest, left = hashlib.sha256(), size
    while left > 0:
        block = os.read(fd, min(left, 1 << 20))
        if not block:
            break
        digest.update(block)
        left -= len(block)
    return digest.hexdigest()


def _read_weights(src: Path, meta: Metadata) -> dict[str, np.ndarray]:
    """Every array of the weights file ``meta`` names: its size bounded by the model's, its
    SHA-256 checked, each member checked before it is read (:func:`.npzread.read_npz`)."""
    name = weights_name(src, meta.params_sha256, meta.params_file)
    opened = _open_regular(src, name)
    if opened is None:
        raise _WeightsGone(name)
    fd, size = opened
    try:
        expected = _expected_members(src, meta, size)
        least, most = size_bounds(expected)
        # Version 0.1 did not record the shapes of its aux: arrays: their members are then
        # checked against their own headers, and the file's real size bounds what they take.
        free = (AUX_PREFIX, np.dtype(meta.dtype).newbyteorder("<")) if meta.legacy_arrays else None
        if size > most and free is None:
            raise _refusal(src, name, f"it is {size} bytes, more than the {most} a "
                           "checkpoint of this model takes")  # fmt: skip
        if _hash_bounded(fd, size) != meta.params_sha256:
            raise _Mismatch(
                f"checkpoint weights {str(src / name)!r} are truncated or corrupted "
                "(checksum mismatch); use an earlier checkpoint"
            )
        if size < least:
            raise _refusal(src, name, f"the model in {META_FILE} needs {least} bytes "
                           f"of weights but the weights file has {size}")  # fmt: skip
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            arrays = read_npz(fh, size, expected, free)
    except Invalid as exc:
        raise _refusal(src, name, str(exc)) from None
    finally:
        os.close(fd)
    for key, value in arrays.items():
        if not np.all(np.isfinite(value)):
            raise _refusal(src, name, f"{key} is not finite (NaN or Inf)")
    return arrays


def read_metadata(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parsed ``checkpoint.json`` of ``directory`` (bounded, as :func:`load_checkpoint`
    reads it), or None when it is missing or unreadable; for messages only."""
    src = Path(directory)
    try:
        opened = _open_regular(src, META_FILE)
        if opened is None:
            return None
        fd, size = opened
        try:
            data = os.read(fd, MAX_META_BYTES) if size <= MAX_META_BYTES else b""
        finally:
            os.close(fd)
        meta = parse_json(data)
    except (CheckpointError, Invalid, OSError):
        return None
    return meta if isinstance(meta, dict) else None


def load_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`, as untrusted input.

    Nothing outside ``directory`` is read (its files must be regular files, not links), nothing
    is allocated before the metadata and each weights member were checked against the model,
    and only finite float32/float64 weights, a vocabulary of unique single characters plus
    ``<unk>`` and metadata of the expected types are accepted. A checkpoint replaced while it
    is read (by a training run writing its next one) is read again.

    Raises:
        CheckpointError: not a checkpoint, corrupted, truncated (checksum), hostile, or weights
            whose names, shapes or types do not fit the recorded model; one line saying which.
    """
    from .data.vocab import Vocab  # the data package writes through this module: no cycle

    src = Path(directory)
    for attempt in range(3):
        meta = _read_metadata(src)
        try:
            stored = _read_weights(src, meta)
            break
        except (_WeightsGone, _Mismatch) as exc:
            # A writer committing its next checkpoint meanwhile changes the recorded checksum:
            # then read again; otherwise the weights really are missing or corrupted.
            if attempt == 2 or _read_metadata(src).params_sha256 == meta.params_sha256:
                if isinstance(exc, _Mismatch):
                    raise CheckpointError(str(exc)) from None  # a corrupted weights file
                raise CheckpointError(
                    f"checkpoint {str(src)!r} lacks its weights {exc}; use an earlier checkpoint"
                ) from None
    params = {k: v for k, v in stored.items() if not k.startswith(AUX_PREFIX)}
    arrays = {k[len(AUX_PREFIX) :]: v for k, v in stored.items() if k.startswith(AUX_PREFIX)}
    return Checkpoint(
        params=params,
        model_config=meta.model_config,
        vocab=Vocab.from_tokens_list(meta.vocab),
        train_config=meta.train_config,
        step=meta.step,
        extra=meta.extra,
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
