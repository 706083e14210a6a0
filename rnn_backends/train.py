"""The backend-agnostic training loop: epochs of SGD with clipping, perplexity, history, checkpoint.

Perplexity is exp of the token-weighted mean cross-entropy. The textbook's figure (the mean of
per-batch exp(loss)) is reported beside it for parity; the two differ when batches differ in size
or loss.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .backends.base import Backend
from .config import ModelConfig, TrainConfig
from .data.batching import Batch, CharBatches
from .data.corpus import Corpus
from .errors import NonFiniteError, UserError
from .params import Checkpoint, init_params, save_checkpoint
from .progress import Progress


@dataclass
class Perplexity:
    """Token-weighted perplexity and the textbook's mean of per-batch exp(loss)."""

    token: float
    book: float
    loss: float
    tokens: int


class _Meter:
    def __init__(self) -> None:
        self.loss_sum = 0.0
        self.tokens = 0
        self.batch_ppl: list[float] = []

    def add(self, loss: float, tokens: int) -> None:
        self.loss_sum += loss * tokens
        self.tokens += tokens
        self.batch_ppl.append(math.exp(loss))

    def result(self) -> Perplexity:
        if not self.tokens:
            return Perplexity(float("nan"), float("nan"), float("nan"), 0)
        mean = self.loss_sum / self.tokens
        return Perplexity(math.exp(mean), float(np.mean(self.batch_ppl)), mean, self.tokens)


def evaluate(
    backend: Backend, params: Any, batches: Iterable[Batch], carry_state: bool
) -> Perplexity:
    """Perplexity of ``params`` over ``batches`` (no updates)."""
    meter = _Meter()
    state = None
    for X, Y in batches:
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


def train(
    backend: Backend,
    corpus: Corpus,
    model_config: ModelConfig,
    train_config: TrainConfig,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    params: dict[str, np.ndarray] | None = None,
    on_step: Callable[[int, float, float], None] | None = None,
) -> TrainResult:
    """Train from ``init_params(model_config, seed)`` (or ``params``) and return the result.

    Arguments:
        out_dir: where ``history.json`` and the final ``checkpoint/`` go (nothing written if None).
        progress: show a progress bar (default: when stderr is a terminal).
        on_step: called as ``on_step(step, loss, seconds)`` after every update.
    Raises:
        NonFiniteError: a loss or gradient norm became NaN/Inf (the step is named).
    """
    if model_config.vocab_size != len(corpus.vocab):
        raise UserError(
            f"model vocab_size={model_config.vocab_size} but the corpus vocabulary has "
            f"{len(corpus.vocab)} tokens"
        )
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot create output directory {str(out)!r}: {exc.strerror}"
            ) from None
    batches = CharBatches(corpus.ids, train_config)
    start = (
        params
        if params is not None
        else init_params(model_config, train_config.seed, train_config.dtype)
    )
    native = backend.prepare(start)
    history: dict[str, Any] = {
        "backend": backend.name,
        "variant": backend.variant,
        "device": backend.device,
        "version": backend.version(),
        "corpus": corpus.name,
        "model_config": model_config.to_dict(),
        "train_config": train_config.to_dict(),
        "epochs": [],
        "step_loss": [],
        "step_grad_norm": [],
        "step_seconds": [],
    }
    n_batches = batches.num_train_batches()
    bar = Progress(train_config.max_epochs * n_batches, backend.name, enabled=progress)
    step = 0
    for epoch in range(train_config.max_epochs):
        meter = _Meter()
        state = None
        for X, Y in batches.train_batches(epoch):
            t0 = time.perf_counter()
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
                raise NonFiniteError(
                    f"step {step} (epoch {epoch}) produced a non-finite "
                    f"{'loss' if not math.isfinite(res.loss) else 'gradient'} "
                    f"(loss={res.loss}, grad norm={res.grad_norm}); lower --lr or keep clipping on"
                )
            native, state = res.params, res.state
            meter.add(res.loss, X.size)
            history["step_loss"].append(res.loss)
            history["step_grad_norm"].append(res.grad_norm)
            history["step_seconds"].append(seconds)
            if on_step is not None:
                on_step(step, res.loss, seconds)
            step += 1
            bar.update(1, epoch=epoch + 1, loss=res.loss)
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
    final = backend.export(native)
    ckpt_path = None
    if out is not None:
        ckpt_path = save_checkpoint(
            out / "checkpoint",
            Checkpoint(
                final,
                model_config,
                corpus.vocab,
                train_config,
                step=step,
                extra={"backend": backend.name, "corpus": corpus.name},
            ),
        )
        (out / "history.json").write_text(json.dumps(history, indent=1))
    return TrainResult(params=final, history=history, checkpoint=ckpt_path, native=native)
