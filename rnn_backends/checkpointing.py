"""Training checkpoints that a run can continue from, bit for bit.

A training checkpoint is an ordinary checkpoint directory (see :func:`params.save_checkpoint`:
weights and metadata, each written to a temporary file, fsynced and renamed, the weights under a
SHA-256) whose ``extra["resume"]`` records where the run stands:

* the position: ``epoch`` and ``batch`` (the index of the next training batch in that epoch) and
  ``step`` (updates done). Batches are a function of ``(seed, epoch)`` alone
  (:meth:`CharBatches.epoch_rng`), so the position is all the data pipeline needs;
* the random state: the state of the epoch's generator when the epoch starts, checked again on
  resume, so that a change in how batches are drawn cannot pass unnoticed. Training draws no other
  random numbers (no dropout; the weights are initialised once, before step 0);
* the per-epoch meter (token-weighted loss sum, token count, per-batch perplexities) and the
  history so far, so the finished history equals that of an uninterrupted run;
* with ``sequential`` batching, the hidden state carried into the next batch, saved beside the
  weights (``Checkpoint.arrays``) under the same checksum;
* a SHA-256 of the corpus token ids, so a changed corpus is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import Backend
from .config import ModelConfig, TrainConfig
from .data.batching import CharBatches
from .data.corpus import Corpus
from .errors import CheckpointError, NonFiniteError, UserError
from .params import META_FILE, Checkpoint, _write_atomic, load_checkpoint, save_checkpoint

CHECKPOINT_DIR = "checkpoint"
HISTORY_FILE = "history.json"
RESUME_FORMAT = 1
CARRY = "carry"  # Checkpoint.arrays names: carry0, carry1, ... (one per state tensor)
# Fields that may differ between a checkpoint and the run that continues it: training longer
# changes nothing that was already computed.
MAY_CHANGE = frozenset({"max_epochs"})


@dataclass
class RunState:
    """Everything about a run in progress beyond its weights (see the module docstring)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    tokens: int = 0
    batch_ppl: list[float] = field(default_factory=list)
    history: dict[str, Any] = field(default_factory=dict)
    carry: tuple[np.ndarray, ...] | None = None

    def new_epoch(self, epoch: int) -> None:
        self.epoch, self.batch = epoch, 0
        self.loss_sum, self.tokens, self.batch_ppl = 0.0, 0, []
        self.carry = None


def corpus_fingerprint(ids: np.ndarray) -> str:
    """SHA-256 of the token ids as little-endian int64."""
    return hashlib.sha256(np.asarray(ids, dtype="<i8").tobytes()).hexdigest()


def _rng_state(batches: CharBatches, epoch: int) -> dict[str, Any]:
    return batches.epoch_rng(epoch).bit_generator.state


def has_checkpoint(directory: str | os.PathLike[str]) -> bool:
    return (Path(directory) / META_FILE).is_file()


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


def guard_output(out: Path, resume_from: Path | None, overwrite: bool) -> None:
    """Refuse to write into ``out`` when it holds the checkpoint of another run.

    Continuing that very checkpoint (``resume_from``) or ``overwrite=True`` lifts the refusal.
    """
    target = out / CHECKPOINT_DIR
    if overwrite or not has_checkpoint(target):
        return
    if resume_from is not None and target.resolve() == resume_from.resolve():
        return
    try:
        meta = json.loads((target / META_FILE).read_text(encoding="utf-8"))
        what = f" (step {meta.get('step')}, {(meta.get('extra') or {}).get('backend', '?')})"
    except (OSError, ValueError):
        what = ""
    raise UserError(
        f"output directory {str(out)!r} already holds a checkpoint{what}; pass --resume "
        f"{str(out)!r} to continue it, --overwrite to replace it, or another --out"
    )


def remove_stale_temporaries(out: Path) -> None:
    """Delete the temporary files a killed writer left behind in ``out`` and its checkpoint.

    Only one run writes to a directory (see :func:`guard_output`), so at the start of a run every
    temporary file there is an orphan: the renames that would have used them never happened.
    """
    for folder, prefixes in (
        (out, (HISTORY_FILE,)),
        (out / CHECKPOINT_DIR, ("params-", META_FILE)),
    ):
        if not folder.is_dir():
            continue
        for tmp in folder.glob("*.tmp"):
            if tmp.name.startswith(prefixes):
                tmp.unlink(missing_ok=True)


def _carry_to_numpy(backend: Backend, carry: Any) -> tuple[np.ndarray, ...] | None:
    """The native state ``train_step`` returned (a tuple of native arrays) as NumPy arrays."""
    if carry is None:
        return None
    if not isinstance(carry, (tuple, list)):
        raise TypeError(f"{backend.name}: train_step returned a state that is not a tuple")
    return tuple(np.asarray(backend.to_numpy(s)) for s in carry)


def carry_to_native(backend: Backend, carry: tuple[np.ndarray, ...] | None) -> Any:
    """A saved carried state as the backend's native state: the same arrays, shapes and types
    that ``train_step`` returned, so the next step takes the same path as without the restart."""
    if carry is None:
        return None
    return tuple(backend.asarray(a) for a in carry)


def save_run(
    out: Path,
    backend: Backend,
    native: Any,
    carry: Any,
    corpus: Corpus,
    model_config: ModelConfig,
    train_config: TrainConfig,
    batches: CharBatches,
    run: RunState,
) -> Path:
    """Write the training checkpoint of ``run`` to ``out/checkpoint`` and the history beside it.

    Raises:
        NonFiniteError: a weight or the carried state is NaN/Inf (nothing is written then).
    """
    params = backend.export(native)
    saved_carry = _carry_to_numpy(backend, carry)
    named = {**params, **{f"{CARRY}{i}": a for i, a in enumerate(saved_carry or ())}}
    for name, value in named.items():
        if not np.all(np.isfinite(value)):
            raise NonFiniteError(
                f"after step {run.step} {name} is not finite; nothing was written, the last "
                f"checkpoint in {str(out / CHECKPOINT_DIR)!r} is the last good one"
            )
    resume = {
        "format": RESUME_FORMAT,
        "epoch": run.epoch,
        "batch": run.batch,
        "step": run.step,
        "finished": run.epoch >= train_config.max_epochs,
        "rng": {
            "generator": "numpy.random.default_rng([seed, epoch])",
            "epoch_start_state": _rng_state(batches, run.epoch),
        },
        "meter": {"loss_sum": run.loss_sum, "tokens": run.tokens, "batch_ppl": run.batch_ppl},
        "carry": None if saved_carry is None else len(saved_carry),
        "corpus_sha256": corpus_fingerprint(corpus.ids),
        "history": run.history,
    }
    ckpt = Checkpoint(
        params,
        model_config,
        corpus.vocab,
        train_config,
        step=run.step,
        extra={"backend": backend.name, "corpus": corpus.name, "resume": resume},
        arrays={f"{CARRY}{i}": a for i, a in enumerate(saved_carry or ())},
    )
    path = save_checkpoint(out / CHECKPOINT_DIR, ckpt)
    _write_atomic(out / HISTORY_FILE, json.dumps(run.history, indent=1).encode())
    return path


def _config_differences(saved: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    return [
        f"{k}: checkpoint {saved.get(k)!r}, asked {asked.get(k)!r}"
        for k in sorted(set(saved) | set(asked))
        if k not in MAY_CHANGE and saved.get(k) != asked.get(k)
    ]


def resume_position(ckpt: Checkpoint, src: Path) -> dict[str, Any]:
    """The training position a checkpoint records, or a :class:`CheckpointError`."""
    info = ckpt.extra.get("resume")
    if not isinstance(info, dict) or info.get("format") != RESUME_FORMAT:
        raise CheckpointError(
            f"checkpoint {str(src)!r} records no training position (written by save_checkpoint "
            "or an older version); it can generate text but not resume training"
        )
    return info


def load_run(
    directory: str | os.PathLike[str],
    corpus: Corpus,
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> tuple[Checkpoint, RunState]:
    """Load a training checkpoint and check that it belongs to this model, corpus and config.

    Raises:
        CheckpointError: corrupted, written without a training position, or of another model,
            vocabulary, corpus or training configuration (the differences are listed).
    """
    src = find_checkpoint(directory)
    ckpt = load_checkpoint(src)
    info = resume_position(ckpt, src)
    if ckpt.vocab != corpus.vocab:
        raise CheckpointError(
            f"checkpoint {str(src)!r} has a vocabulary of {len(ckpt.vocab)} tokens that differs "
            f"from the corpus {corpus.name!r} ({len(corpus.vocab)} tokens); resume with the "
            "corpus the run was started with"
        )
    diffs = _config_differences(ckpt.model_config.to_dict(), model_config.to_dict())
    saved_train = ckpt.train_config.to_dict() if ckpt.train_config else {}
    diffs += _config_differences(saved_train, train_config.to_dict())
    if diffs:
        raise CheckpointError(
            f"checkpoint {str(src)!r} belongs to another model or training setup ("
            + "; ".join(diffs)
            + "); drop those options to continue it, or start a new run with --out elsewhere"
        )
    if info.get("corpus_sha256") != corpus_fingerprint(corpus.ids):
        raise CheckpointError(
            f"the corpus {corpus.name!r} changed since checkpoint {str(src)!r} was written (same "
            "vocabulary, different text); resume with the original text"
        )
    epoch, batch = int(info["epoch"]), int(info["batch"])
    if epoch > train_config.max_epochs or (epoch == train_config.max_epochs and batch > 0):
        raise CheckpointError(
            f"checkpoint {str(src)!r} has trained {epoch} full epochs and {batch} batches, more "
            f"than max_epochs={train_config.max_epochs}; ask for at least "
            f"{epoch + (batch > 0)} epochs"
        )
    batches = CharBatches(corpus.ids, train_config)
    if info["rng"]["epoch_start_state"] != json.loads(json.dumps(_rng_state(batches, epoch))):
        raise CheckpointError(
            f"checkpoint {str(src)!r}: the batch order of epoch {epoch} is not the one it was "
            "trained with (the shuffling code changed); resuming would not replay the same data"
        )
    carry = None
    if info.get("carry") is not None:
        try:
            carry = tuple(ckpt.arrays[f"{CARRY}{i}"] for i in range(int(info["carry"])))
        except KeyError:
            raise CheckpointError(
                f"checkpoint {str(src)!r} lacks its carried hidden state; use an earlier one"
            ) from None
    meter = info["meter"]
    run = RunState(
        epoch=epoch,
        batch=batch,
        step=int(info["step"]),
        loss_sum=float(meter["loss_sum"]),
        tokens=int(meter["tokens"]),
        batch_ppl=[float(x) for x in meter["batch_ppl"]],
        history=dict(info["history"]),
        carry=carry,
    )
    return ckpt, run
