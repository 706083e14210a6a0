"""The backend-agnostic training loop: epochs of SGD with clipping, perplexity, history, checkpoint.

Perplexity is exp of the token-weighted mean cross-entropy. The textbook's figure (the mean of
per-batch exp(loss)) is reported beside it for parity; the two differ when batches differ in size
or loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import Backend
from .checkpointing import (
    RunState,
    carry_to_native,
    find_checkpoint,
    guard_output,
    load_run,
    remove_stale_temporaries,
    save_run,
)
from .config import ModelConfig, TrainConfig
from .data.batching import Batch, CharBatches
from .data.corpus import Corpus
from .errors import ConfigError, NonFiniteError, UserError
from .params import init_params
from .progress import Progress


@dataclass
class Perplexity:
    """Token-weighted perplexity and the textbook's mean of per-batch exp(loss)."""

    token: float
    book: float
    loss: float
    tokens: int


def _exp(x: float) -> float:
    """exp that saturates at inf: a diverging run has losses past 709, where math.exp raises."""
    return math.exp(x) if x < 709.0 else math.inf


class _Meter:
    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.tokens = 0
        self.batch_ppl: list[float] = []

    def add(self, loss: float, tokens: int) -> None:
        self.loss_sum += loss * tokens
        self.tokens += tokens
        self.batch_ppl.append(_exp(loss))

    def result(self) -> Perplexity:
        if not self.tokens:
            return Perplexity(float("nan"), float("nan"), float("nan"), 0)
        mean = self.loss_sum / self.tokens
        return Perplexity(_exp(mean), float(np.mean(self.batch_ppl)), mean, self.tokens)


def evaluate(
    backend: Backend, params: Any, batches: Iterable[Batch], carry_state: bool
) -> Perplexity:
    """Perplexity of ``params`` over ``batches`` (no updates)."""
    meter = _Meter()
    state = None
    for X, Y in batches:
        with np.errstate(over="ignore", invalid="ignore"):
            loss, new_state = backend.loss(params, X, Y, state)
        state = new_state if carry_state else None
        meter.add(loss, X.size)
    return meter.result()


@dataclass
class TrainResult:
    params: dict[str, np.ndarray]
    history: dict[str, Any]
    checkpoint: Path | None = None
    native: Any = field(default=None, repr=False)


def _history_header(
    backend: Backend, corpus: Corpus, model_config: ModelConfig, train_config: TrainConfig
) -> dict[str, Any]:
    return {
        "backend": backend.name,
        "variant": backend.variant,
        "device": backend.device,
        "version": backend.version(),
        "corpus": corpus.name,
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict(),
    }


def train(
    backend: Backend,
    corpus: Corpus,
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    params: dict[str, np.ndarray] | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
    *,
    checkpoint_every: int | None = None,
    resume: str | Path | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train from ``init_params(model_config, seed)`` (or ``params``) and return the result.

    Arguments:
        out_dir: where ``history.json`` and ``checkpoint/`` go (nothing written if None). A
            checkpoint is written at step 0, every ``checkpoint_every`` steps and at the end.
        progress: show a progress bar (default: when stderr is a terminal).
        on_step: called as ``on_step(step, loss, seconds)`` after every update.
        checkpoint_every: steps between checkpoints (None: only at the start and the end).
        resume: a checkpoint (or run) directory to continue from; the run then ends with the
            weights and history an uninterrupted run would have had. Its model, vocabulary,
            corpus and training config must be these (``max_epochs`` may grow).
        overwrite: replace a checkpoint of another run found in ``out_dir`` (else refused).
    Raises:
        NonFiniteError: a loss or gradient norm became NaN/Inf (the step is named); the
            checkpoint on disk is then the last good one.
        CheckpointError: ``resume`` is corrupted or belongs to another model, corpus or config.
        UserError: ``out_dir`` holds another run's checkpoint, or cannot be created.
    """
    model_config.check_trainable(backend)  # a bidirectional model is refused, with the reason
    if checkpoint_every is not None and (
        isinstance(checkpoint_every, bool)
        or not isinstance(checkpoint_every, int)
        or checkpoint_every <= 0
    ):
        raise ConfigError(
            f"checkpoint_every must be a positive number of steps, got {checkpoint_every!r}; "
            "omit it to checkpoint only at the start and the end"
        )
    if resume is not None and params is not None:
        raise UserError("pass either params or resume, not both: a resumed run has its weights")
    resume_dir = find_checkpoint(resume) if resume is not None else None
    if resume_dir is not None:  # first, so that a checkpoint of another model says so
        ckpt, run = load_run(resume_dir, corpus, model_config, train_config)
    if model_config.vocab_size != len(corpus.vocab):
        raise UserError(
            f"model vocab_size={model_config.vocab_size} but the corpus vocabulary has "
            f"{len(corpus.vocab)} tokens"
        )
    batches = CharBatches(corpus.ids, train_config)
    n_batches = batches.num_train_batches()
    # Only now, with every input checked, is the output directory touched.
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        guard_output(out, resume_dir, overwrite)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create output directory {str(out)!r}: {exc.strerror}"
            ) from None
        remove_stale_temporaries(out)
    header = _history_header(backend, corpus, model_config, train_config)
    if resume_dir is not None:
        start = ckpt.params
        run.history.update(header)
    else:
        start = (
            params
            if params is not None
            else init_params(model_config, train_config.seed, train_config.dtype)
        )
        run = RunState(
            history={
                **header,
                "epochs": [],
                "step_loss": [],
                "step_grad_norm": [],
                "step_seconds": [],
            }
        )
    history = run.history
    native = backend.prepare(start)
    state = carry_to_native(backend, run.carry)
    last_saved: int | None = None

    def checkpoint() -> None:
        nonlocal last_saved
        if out is not None:
            carry = state if batches.carries_state else None
            save_run(out, backend, native, carry, corpus, model_config, train_config, batches, run)
            last_saved = run.step

    if resume_dir is None:
        checkpoint()  # step 0: the directory now belongs to this run, and a kill can resume
    else:
        same_dir = out is not None and (out / "checkpoint").resolve() == resume_dir.resolve()
        last_saved = run.step if same_dir else None
    bar = Progress(train_config.max_epochs * n_batches, backend.name, enabled=progress)
    bar.update(run.epoch * n_batches + run.batch)
    for epoch in range(run.epoch, train_config.max_epochs):
        if epoch != run.epoch:
            run.new_epoch(epoch)
            state = None
        for index, (X, Y) in enumerate(batches.train_batches(epoch)):
            if index < run.batch:
                continue  # done before the checkpoint this run resumed from
            t0 = time.perf_counter()
            # A diverging step overflows; the check below reports it with its step, so NumPy's
            # own overflow warnings (the oracle's) would only be noise.
            with np.errstate(over="ignore", invalid="ignore"):
                res = backend.train_step(
                    native,
                    X,
                    Y,
                    state if batches.carries_state else None,
                    lr=train_config.lr,
                    grad_clip=train_config.grad_clip,
                )
            seconds = time.perf_counter() - t0
            if not (math.isfinite(res.loss) and math.isfinite(res.grad_norm)):
                bar.close()
                kept = (
                    f"; the last good checkpoint (step {last_saved}) is in "
                    f"{str(out / 'checkpoint')!r}"
                    if out is not None and last_saved is not None
                    else ""
                )
                raise NonFiniteError(
                    f"step {run.step} (epoch {epoch}) produced a non-finite "
                    f"{'loss' if not math.isfinite(res.loss) else 'gradient'} "
                    f"(loss={res.loss}, grad norm={res.grad_norm}){kept}; lower --lr or keep "
                    "clipping on"
                )
            native, state = res.params, res.state
            run.loss_sum += res.loss * X.size
            run.tokens += X.size
            run.batch_ppl.append(_exp(res.loss))
            history["step_loss"].append(res.loss)
            history["step_grad_norm"].append(res.grad_norm)
            history["step_seconds"].append(seconds)
            if on_step is not None:
                on_step(run.step, res.loss, seconds)
            run.step += 1
            run.batch = index + 1
            bar.update(1, epoch=epoch + 1, loss=res.loss)
            if checkpoint_every is not None and run.step % checkpoint_every == 0:
                checkpoint()
        meter = _Meter()
        meter.loss_sum, meter.tokens, meter.batch_ppl = run.loss_sum, run.tokens, run.batch_ppl
        train_ppl = meter.result()
        val_ppl = evaluate(backend, native, batches.val_batches(), batches.carries_state)
        history["epochs"].append(
            {
                "epoch": epoch + 1,
                "train_ppl": train_ppl.token,
                "train_ppl_book": train_ppl.book,
                "val_ppl": val_ppl.token,
                "val_ppl_book": val_ppl.book,
            }
        )
    bar.close()
    run.new_epoch(train_config.max_epochs)
    state = None
    final = backend.export(native)
    ckpt_path = None
    if out is not None:
        checkpoint()
        ckpt_path = out / "checkpoint"
    return TrainResult(params=final, history=history, checkpoint=ckpt_path, native=native)
