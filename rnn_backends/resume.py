"""Training runs that continue from a checkpoint, bit for bit.

A training checkpoint is an ordinary checkpoint directory (see :mod:`.checkpointing`) whose
``extra["resume"]`` records where the run stands:

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

This module decides what a run's state is and whether a checkpoint may continue this run; the
bytes are written and read by :mod:`.checkpointing`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .checkpointing import (
    CHECKPOINT_DIR,
    HISTORY_FILE,
    RESUME_FORMAT,
    RESUME_KEY,
    Checkpoint,
    find_checkpoint,
    has_checkpoint,
    load_checkpoint,
    read_metadata,
    resume_position,
    save_checkpoint,
    write_json,
)
from .config import ModelConfig, TrainConfig
from .data.batching import CharBatches
from .data.corpus import Corpus
from .errors import CheckpointError, UserError
from .metrics import Meter

if TYPE_CHECKING:
    from .backends.base import Backend

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
    meter: Meter = field(default_factory=Meter)  # this epoch's training batches so far
    history: dict[str, Any] = field(default_factory=dict)
    carry: tuple[np.ndarray, ...] | None = None  # saved carried state, NumPy (L * D, B, H) each

    def new_epoch(self, epoch: int) -> None:
        self.epoch, self.batch = epoch, 0
        self.meter = Meter()
        self.carry = None


def corpus_fingerprint(ids: np.ndarray) -> str:
    """SHA-256 of the token ids as little-endian int64."""
    return hashlib.sha256(np.asarray(ids, dtype="<i8").tobytes()).hexdigest()


def _rng_state(batches: CharBatches, epoch: int) -> dict[str, Any]:
    return dict(batches.epoch_rng(epoch).bit_generator.state)


def guard_output(out: Path, resume_from: Path | None, overwrite: bool) -> None:
    """Refuse to write into ``out`` when it holds the checkpoint of another run.

    Continuing that very checkpoint (``resume_from``) or ``overwrite=True`` lifts the refusal.
    """
    target = out / CHECKPOINT_DIR
    if overwrite or not has_checkpoint(target):
        return
    if resume_from is not None and target.resolve() == resume_from.resolve():
        return
    meta = read_metadata(target)
    what = (
        f" (step {meta.get('step')}, {(meta.get('extra') or {}).get('backend', '?')})"
        if meta is not None
        else ""
    )
    raise UserError(
        f"output directory {str(out)!r} already holds a checkpoint{what}; pass --resume "
        f"{str(out)!r} to continue it, --overwrite to replace it, or another --out"
    )


# --- saving -------------------------------------------------------------------------------------


def _carry_to_numpy(backend: Backend, carry: Any) -> tuple[np.ndarray, ...] | None:
    """The state ``train_step`` returned (a tuple of the backend's tensors) as NumPy arrays."""
    if carry is None:
        return None
    if not isinstance(carry, (tuple, list)):
        raise TypeError(f"{backend.name}: train_step returned a state that is not a tuple")
    return tuple(np.asarray(backend.to_numpy(s)) for s in carry)


def carry_to_tensors(backend: Backend, carry: tuple[np.ndarray, ...] | None) -> Any:
    """A saved carried state as the backend's tensors: the same arrays, shapes and types that
    ``train_step`` returned, so the next step takes the same path as without the restart."""
    if carry is None:
        return None
    return tuple(backend.asarray(a) for a in carry)


def _resume_record(
    run: RunState,
    train_config: TrainConfig,
    batches: CharBatches,
    corpus: Corpus,
    carry: tuple[np.ndarray, ...] | None,
) -> dict[str, Any]:
    """What ``extra["resume"]`` holds (see the module docstring)."""
    return {
        "format": RESUME_FORMAT,
        "epoch": run.epoch,
        "batch": run.batch,
        "step": run.step,
        "finished": run.epoch >= train_config.max_epochs,
        "rng": {
            "generator": "numpy.random.default_rng([seed, epoch])",
            "epoch_start_state": _rng_state(batches, run.epoch),
        },
        "meter": {
            "loss_sum": run.meter.loss_sum,
            "tokens": run.meter.tokens,
            "batch_ppl": run.meter.batch_ppl,
        },
        "carry": None if carry is None else len(carry),
        "corpus_sha256": corpus_fingerprint(corpus.ids),
        "history": run.history,
    }


def save_run(
    out: Path,
    backend: Backend,
    tensors: Any,
    carry: Any,
    corpus: Corpus,
    model_config: ModelConfig,
    train_config: TrainConfig,
    batches: CharBatches,
    run: RunState,
) -> Path:
    """Write the training checkpoint of ``run`` to ``out/checkpoint`` and the history beside it.

    Arguments:
        tensors: the backend's parameters; carry: its carried state (a tuple) or None.
    Raises:
        NonFiniteError: a weight or the carried state is NaN/Inf (nothing is written then).
    """
    saved_carry = _carry_to_numpy(backend, carry)
    ckpt = Checkpoint(
        backend.export(tensors),
        model_config,
        corpus.vocab,
        train_config,
        step=run.step,
        extra={
            "backend": backend.name,
            "corpus": corpus.name,
            RESUME_KEY: _resume_record(run, train_config, batches, corpus, saved_carry),
        },
        arrays={f"{CARRY}{i}": a for i, a in enumerate(saved_carry or ())},
    )
    path = save_checkpoint(out / CHECKPOINT_DIR, ckpt)
    write_json(out / HISTORY_FILE, run.history)
    return path


# --- loading ------------------------------------------------------------------------------------


def _config_differences(saved: dict[str, Any], asked: dict[str, Any]) -> list[str]:
    return [
        f"{k}: checkpoint {saved.get(k)!r}, asked {asked.get(k)!r}"
        for k in sorted(set(saved) | set(asked))
        if k not in MAY_CHANGE and saved.get(k) != asked.get(k)
    ]


def _check_same_run(
    ckpt: Checkpoint,
    src: Path,
    corpus: Corpus,
    model_config: ModelConfig,
    train_config: TrainConfig,
) -> None:
    """Refuse a checkpoint of another vocabulary, model, training setup or corpus text."""
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
    if ckpt.extra[RESUME_KEY].get("corpus_sha256") != corpus_fingerprint(corpus.ids):
        raise CheckpointError(
            f"the corpus {corpus.name!r} changed since checkpoint {str(src)!r} was written (same "
            "vocabulary, different text); resume with the original text"
        )


def _check_position(
    info: dict[str, Any], src: Path, train_config: TrainConfig, batches: CharBatches
) -> None:
    """Refuse a position past the end of this run, or an epoch whose batch order changed."""
    epoch, batch = int(info["epoch"]), int(info["batch"])
    if epoch > train_config.max_epochs or (epoch == train_config.max_epochs and batch > 0):
        raise CheckpointError(
            f"checkpoint {str(src)!r} has trained {epoch} full epochs and {batch} batches, more "
            f"than max_epochs={train_config.max_epochs}; ask for at least "
            f"{epoch + (batch > 0)} epochs"
        )
    if info["rng"]["epoch_start_state"] != json.loads(json.dumps(_rng_state(batches, epoch))):
        raise CheckpointError(
            f"checkpoint {str(src)!r}: the batch order of epoch {epoch} is not the one it was "
            "trained with (the shuffling code changed); resuming would not replay the same data"
        )


def _run_state(ckpt: Checkpoint, info: dict[str, Any], src: Path) -> RunState:
    """The :class:`RunState` a resume record describes, its carried state taken from ``ckpt``."""
    carry = None
    if info.get("carry") is not None:
        try:
            carry = tuple(ckpt.arrays[f"{CARRY}{i}"] for i in range(int(info["carry"])))
        except KeyError:
            raise CheckpointError(
                f"checkpoint {str(src)!r} lacks its carried hidden state; use an earlier one"
            ) from None
    meter = info["meter"]
    return RunState(
        epoch=int(info["epoch"]),
        batch=int(info["batch"]),
        step=int(info["step"]),
        meter=Meter(
            loss_sum=float(meter["loss_sum"]),
            tokens=int(meter["tokens"]),
            batch_ppl=[float(x) for x in meter["batch_ppl"]],
        ),
        history=dict(info["history"]),
        carry=carry,
    )


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
    _check_same_run(ckpt, src, corpus, model_config, train_config)
    _check_position(info, src, train_config, CharBatches(corpus.ids, train_config))
    return ckpt, _run_state(ckpt, info, src)
