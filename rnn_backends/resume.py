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
* the optimizer's state: its update count, and its slot arrays (momentum buffers, Adam's
  moments) beside the weights under the same checksum as ``opt:<slot>:<parameter>``, their names
  and shapes declared in the record so that loading checks them against the parameters;
* a SHA-256 of the corpus token ids, so a changed corpus is refused.

This module decides what a run's state is and whether a checkpoint may continue this run; the
bytes are written and read by :mod:`.checkpointing`.
"""

from __future__ import annotations

import dataclasses
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
from .data.corpus import Corpus, file_fingerprint, load_corpus
from .errors import CheckpointError, CorpusError, UserError
from .metrics import Meter
from .optim import SLOTS, OptState

if TYPE_CHECKING:
    from .backends.base import Trainable

CARRY = "carry"  # Checkpoint.arrays names: carry0, carry1, ... (one per state tensor)
OPT = "opt"  # Checkpoint.arrays names: opt:<slot>:<parameter>
# Fields that may differ between a checkpoint and the run that continues it: training longer
# changes nothing that was already computed (unless the schedule spans the run, see
# _schedule_spans_run), and the data-parallel worker count changes how a step is computed, not
# what it computes (a checkpoint holds the state of all rows).
MAY_CHANGE = frozenset({"max_epochs", "data_parallel"})


@dataclass
class RunState:
    """Everything about a run in progress beyond its weights (see the module docstring)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    meter: Meter = field(default_factory=Meter)  # this epoch's training batches so far
    history: dict[str, Any] = field(default_factory=dict)
    carry: tuple[np.ndarray, ...] | None = None  # saved carried state, NumPy (L * D, B, H) each
    opt_state: OptState | None = None  # the saved optimizer state, NumPy slots (None: fresh)

    def new_epoch(self, epoch: int) -> None:
        self.epoch, self.batch = epoch, 0
        self.meter = Meter()
        self.carry = None


def corpus_fingerprint(ids: np.ndarray, block: int = 1 << 20) -> str:
    """SHA-256 of the token ids (N,) as little-endian int64, hashed ``block`` ids at a time so
    that compact ids are never widened all at once."""
    digest = hashlib.sha256()
    for start in range(0, len(ids), block):
        digest.update(np.asarray(ids[start : start + block], dtype="<i8").tobytes())
    return digest.hexdigest()


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


def _carry_to_numpy(backend: Trainable, carry: Any) -> tuple[np.ndarray, ...] | None:
    """The state ``train_step`` returned (a tuple of the backend's tensors) as NumPy arrays."""
    if carry is None:
        return None
    if not isinstance(carry, (tuple, list)):
        raise TypeError(f"{backend.name}: train_step returned a state that is not a tuple")
    return tuple(np.asarray(backend.to_numpy(s)) for s in carry)


def carry_to_tensors(backend: Trainable, carry: tuple[np.ndarray, ...] | None) -> Any:
    """A saved carried state as the backend's tensors: the same arrays, shapes and types that
    ``train_step`` returned, so the next step takes the same path as without the restart."""
    if carry is None:
        return None
    return tuple(backend.asarray(a) for a in carry)


def _opt_arrays(opt_state: OptState | None) -> dict[str, np.ndarray]:
    """The optimizer's slot arrays under their checkpoint names ``opt:<slot>:<parameter>``."""
    if opt_state is None:
        return {}
    return {f"{OPT}:{slot}:{name}": a for slot, arrays in opt_state.slots.items()
            for name, a in arrays.items()}  # fmt: skip


def _opt_record(train_config: TrainConfig, opt_state: OptState | None) -> dict[str, Any] | None:
    """The optimizer's part of the resume record: kind, update count, declared arrays."""
    if opt_state is None:
        return None
    return {
        "kind": train_config.optimizer,
        "step": opt_state.step,
        "arrays": {k: list(a.shape) for k, a in _opt_arrays(opt_state).items()},
    }


def _resume_record(
    run: RunState,
    train_config: TrainConfig,
    batches: CharBatches,
    corpus: Corpus,
    carry: tuple[np.ndarray, ...] | None,
    opt_state: OptState | None,
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
        "optimizer": _opt_record(train_config, opt_state),
        "corpus_sha256": corpus_fingerprint(corpus.ids),
        "history": run.history,
    }


def save_run(
    out: Path,
    backend: Trainable,
    tensors: Any,
    carry: Any,
    opt_state: OptState | None,
    corpus: Corpus,
    model_config: ModelConfig,
    train_config: TrainConfig,
    batches: CharBatches,
    run: RunState,
) -> Path:
    """Write the training checkpoint of ``run`` to ``out/checkpoint`` and the history beside it.

    Arguments:
        tensors: the backend's parameters; carry: its carried state (a tuple) or None;
        opt_state: the optimizer's state (tensors) or None.
    Raises:
        NonFiniteError: a weight, the carried state or an optimizer slot is NaN/Inf (nothing is
            written then).
    """
    saved_carry = _carry_to_numpy(backend, carry)
    saved_opt = None if opt_state is None else backend.export_opt_state(opt_state)
    ckpt = Checkpoint(
        backend.export(tensors),
        model_config,
        corpus.vocab,
        train_config,
        step=run.step,
        extra={
            "backend": backend.name,
            "corpus": corpus.name,
            **({"corpus_file": corpus.file.to_dict()} if corpus.file is not None else {}),
            RESUME_KEY: _resume_record(run, train_config, batches, corpus, saved_carry,
                                       saved_opt),
        },
        arrays={**{f"{CARRY}{i}": a for i, a in enumerate(saved_carry or ())},
                **_opt_arrays(saved_opt)},
    )  # fmt: skip
    path = save_checkpoint(out / CHECKPOINT_DIR, ckpt)
    write_json(out / HISTORY_FILE, run.history)
    return path


# --- loading ------------------------------------------------------------------------------------

NAMED_CORPORA = ("default", "timemachine")


def stored_corpus(ckpt: Checkpoint, src: Path) -> Corpus:
    """The corpus a checkpoint's run was trained on, found from what the checkpoint stores,
    for a resume that was not given ``--corpus``.

    The stored path comes from the checkpoint, i.e. from anyone, so nothing about the file is
    reported before it is known to be that corpus: it must be a regular file within the size
    bound (:func:`.data.corpus.file_fingerprint`), and its size and SHA-256 (when recorded; a
    run started with a relative ``--corpus`` records its absolute path) and then its token
    fingerprint must be the run's. Any difference is the same one-line refusal.

    Raises:
        CorpusError: the file is gone (what to pass is said), is not a regular file, or is not
            the run's corpus.
    """
    name = ckpt.extra.get("corpus") or "default"
    if name in NAMED_CORPORA:
        return load_corpus(name)
    info = ckpt.extra.get("corpus_file")
    path = Path(info["path"]) if isinstance(info, dict) else Path(name)
    if not path.exists() and not path.is_symlink():
        raise CorpusError(
            f"the corpus of run {str(src)!r}, {name!r}, is not at {str(path)!r} any more; pass "
            "--corpus with the text the run was trained on"
        )
    refusal = CorpusError(
        f"{str(path)!r} is not the corpus run {str(src)!r} was trained on (its bytes or its text "
        "differ); pass --corpus with the original text"
    )
    size, sha = file_fingerprint(path)  # refuses a device, a pipe, a folder, a huge file
    if isinstance(info, dict) and (size != info["size"] or sha != info["sha256"]):
        raise refusal
    try:  # a checkpoint without the file's checksum (older ones) gets here for any file
        corpus = load_corpus(str(path), vocab=ckpt.vocab)
    except CorpusError:  # its words would tell what the file holds (binary, a byte offset)
        raise refusal from None
    if corpus_fingerprint(corpus.ids) != (ckpt.extra.get(RESUME_KEY) or {}).get("corpus_sha256"):
        raise refusal
    return dataclasses.replace(corpus, name=name)



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
    if _schedule_spans_run(train_config) and saved_train.get("max_epochs") != (
        train_config.max_epochs
    ):
        diffs.append(
            f"max_epochs: checkpoint {saved_train.get('max_epochs')!r}, asked "
            f"{train_config.max_epochs!r}, and the {train_config.schedule} schedule spans the "
            "whole run, so its learning rates would change"
        )
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


def _schedule_spans_run(config: TrainConfig) -> bool:
    """Whether the learning rate of a step depends on the run's length (``max_epochs``)."""
    return config.schedule == "cosine" or (
        config.schedule == "step" and config.lr_decay_steps is None
    )


def _opt_state(ckpt: Checkpoint, info: dict[str, Any], src: Path) -> OptState | None:
    """The optimizer state a resume record declares, checked against the parameters: the
    declared slots are the optimizer's, each array is there with its declared shape, which is
    its parameter's shape, with the parameters' dtype, and finite."""
    record = info.get("optimizer")
    if record is None:
        return None  # written before optimizers existed (plain SGD keeps no state)
    bad = f"checkpoint {str(src)!r} has a damaged optimizer state"
    kind = record.get("kind") if isinstance(record, dict) else None
    saved = ckpt.train_config.optimizer if ckpt.train_config else None
    if kind not in SLOTS or kind != saved:
        raise CheckpointError(f"{bad} (optimizer {kind!r}, the config says {saved!r})")
    expected = {f"{OPT}:{slot}:{name}": list(p.shape) for slot in SLOTS[kind]
                for name, p in ckpt.params.items()}  # fmt: skip
    if record.get("arrays") != expected:
        raise CheckpointError(f"{bad} (its declared arrays are not one per slot and parameter "
                              "with the parameter's shape)")  # fmt: skip
    dtype = next(iter(ckpt.params.values())).dtype
    slots: dict[str, dict[str, np.ndarray]] = {slot: {} for slot in SLOTS[kind]}
    for key, shape in expected.items():
        a = ckpt.arrays.get(key)
        if a is None or list(a.shape) != shape or a.dtype != dtype or not np.all(np.isfinite(a)):
            raise CheckpointError(
                f"{bad} ({key} is missing, of another shape or dtype than declared, or not "
                "finite); use an earlier checkpoint"
            )
        _, slot, name = key.split(":", 2)
        slots[slot][name] = a
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{bad} (update count {step!r})")
    return OptState(step, slots)


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
        opt_state=_opt_state(ckpt, info, src),
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
