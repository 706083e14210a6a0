"""What the verdict compares against: float64 oracle computations and the float32 ensemble.

Everything here runs the NumPy backend in the orchestrator's process (NumPy is everywhere), from
the very numbers a framework started from:

* :func:`trajectories`: the float64 oracle's whole run from the float32 initial weights, and the
  ensemble members' float32 runs (optional: a preset whose oracle run would take too long skips
  them, and the verdict then rests on the step-0 and single-step checks);
* :func:`initial`: the step-0 loss and gradients at the initial weights, with the componentwise
  bound, and the members' step-0 results;
* :func:`replay`: one saved training step of a framework, replayed in float64 and by the members;
* :func:`evaluate_checkpoint`: a checkpoint's validation perplexity in float64, and
  :func:`member_evaluations`: the same checkpoint evaluated by the members.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import numerics, shadow
from .backends.registry import get_backend
from .checkpointing import load_checkpoint
from .config import ModelConfig, TrainConfig
from .data.batching import CharBatches
from .data.corpus import Corpus
from .ensemble import Member
from .metrics import Meter
from .params import init_params
from .train import evaluate, train


def _oracle(dtype: str, model: ModelConfig) -> Any:
    return get_backend("numpy", dtype=dtype, gru_reset_after=model.gru_reset_after)


def members(model: ModelConfig, count: int, dtype: str = "float32") -> list[Member]:
    """``count`` ensemble members; seed 0 is the plain oracle, the others permuted."""
    return [Member(_oracle(dtype, model), seed) for seed in range(count)]


def _as64(params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}


def trajectories(corpus: Corpus, model: ModelConfig, config: TrainConfig,
                 member_count: int) -> dict[str, Any]:  # fmt: skip
    """The float64 oracle's run from the float32 initial weights, and the runs of members
    1 .. ``member_count`` - 1 in float32 (member 0, the plain float32 oracle, is the ``numpy``
    row of the job itself): per-step losses and final validation perplexity of each."""
    start = init_params(model, config.seed, config.dtype)
    f64 = TrainConfig.from_dict({**config.to_dict(), "dtype": "float64"})
    run = train(_oracle("float64", model), corpus, model, f64, params=_as64(start),
                progress=False)  # fmt: skip
    out: dict[str, Any] = {"float64": _summary(run), "members": []}
    for member in members(model, member_count, config.dtype)[1:]:
        out["members"].append(_summary(train(member, corpus, model, config, progress=False)))
    return out


def _summary(run: Any) -> dict[str, Any]:
    return {"step_loss": run.history["step_loss"], "val_ppl": run.history["epochs"][-1]["val_ppl"]}


@dataclass(frozen=True)
class Initial:
    """Step 0 at the initial weights on the first batch: the float64 truth with its
    componentwise allowances (``one``), and each member's loss and gradients."""

    one: numerics.OneStep
    member_losses: list[float]
    member_grads: list[dict[str, np.ndarray]]


def initial(corpus: Corpus, model: ModelConfig, config: TrainConfig, member_count: int) -> Initial:
    start = init_params(model, config.seed, config.dtype)
    X, Y = next(CharBatches(corpus.ids, config).train_batches(0))
    one = numerics.one_step(start, X, Y, dtype=config.dtype,
                            gru_reset_after=model.gru_reset_after)  # fmt: skip
    losses, grads = [], []
    for member in members(model, member_count, config.dtype):
        loss, g = member.loss_and_grads(start, X, Y)
        losses.append(loss)
        grads.append(g)
    return Initial(one, losses, grads)


@dataclass(frozen=True)
class Replayed:
    """A saved step, replayed: the float64 truth and every member's float32 step."""

    step: int
    before: dict[str, np.ndarray]
    actual: dict[str, np.ndarray]
    truth: dict[str, np.ndarray]
    loss: float
    grad_norm: float
    members: list[dict[str, np.ndarray]]
    member_losses: list[float]
    member_norms: list[float]


def replay(out: Path, record: dict[str, Any], model: ModelConfig, dtype: str,
           member_count: int, step_kwargs: Any) -> Replayed:  # fmt: skip
    """Replay one step the framework saved (``record`` from its index) from its saved start."""
    saved = shadow.load_step(out, record)
    states = 2 if model.cell == "lstm" else 1
    X, Y = saved["X"], saved["Y"]
    params64, state64, slots64 = shadow.step_inputs(saved, "float64", states)
    res = _oracle("float64", model).train_step(params64, X, Y, state64,
                                               **step_kwargs(record, slots64))  # fmt: skip
    runs = []
    if dtype != "float64":
        params32, state32, slots32 = shadow.step_inputs(saved, dtype, states)
        for member in members(model, member_count, dtype):
            runs.append(member.train_step(params32, X, Y, state32,
                                          **step_kwargs(record, slots32)))  # fmt: skip
    return Replayed(
        step=int(record["step"]),
        before=saved["before"],
        actual=saved["after"],
        truth=shadow.step_outputs(res),
        loss=float(res.loss),
        grad_norm=float(res.grad_norm),
        members=[shadow.step_outputs(r) for r in runs],
        member_losses=[float(r.loss) for r in runs],
        member_norms=[float(r.grad_norm) for r in runs],
    )


@dataclass(frozen=True)
class Evaluation:
    """A checkpoint's validation perplexity computed in float64 (``val_ppl``), with what the
    rounding model needs to bound a float32 evaluation's loss reductions: ``magnitude``, the
    token-weighted mean over every token of ``|max_j o_j| + log sum_j exp(o_j - max) + |o_y|``
    (the terms of its cross-entropy in absolute value), ``batch_tokens`` (the most tokens one
    batch's mean reduces) and ``batches``."""

    val_ppl: float
    magnitude: float
    batch_tokens: int
    batches: int


def evaluate_checkpoint(folder: Path, corpus: Corpus, model: ModelConfig,
                        config: TrainConfig) -> Evaluation:  # fmt: skip
    """Validation perplexity of the checkpoint in ``folder`` computed in float64, the way
    :func:`rnn_backends.train.evaluate` computes it (one batch's loss after another, the
    state carried when the batching carries it), and the magnitude of its reductions."""
    ckpt = load_checkpoint(folder)
    batches = CharBatches(corpus.ids, config)
    oracle, params = _oracle("float64", model), _as64(ckpt.params)
    meter, state, size, count, mag = Meter(), None, 0, 0, 0.0
    for X, Y in batches.val_batches():
        logits, final = oracle.forward(params, X, state)
        state = final if batches.carries_state else None
        logits = np.asarray(logits)
        top = logits.max(axis=-1)
        log_total = np.log(np.exp(logits - top[..., None]).sum(axis=-1))
        picked = np.take_along_axis(logits, Y[..., None], axis=-1)[..., 0]
        meter.add(float(np.mean(top + log_total - picked)), X.size)
        mag += float(np.sum(np.abs(top) + log_total + np.abs(picked)))
        size, count = max(size, X.size), count + 1
    ppl = meter.result()
    return Evaluation(ppl.token, mag / max(ppl.tokens, 1), size, count)


def member_evaluations(folder: Path, corpus: Corpus, model: ModelConfig, config: TrainConfig,
                       member_count: int) -> list[float]:  # fmt: skip
    """Validation perplexity of the checkpoint in ``folder`` computed by members 1 ..
    ``member_count`` - 1 in ``config.dtype`` (member 0, the plain float32 oracle, is the numpy
    worker's own evaluation). Forward passes only: a few evaluations of the validation split."""
    ckpt = load_checkpoint(folder)
    batches = CharBatches(corpus.ids, config)
    params = {k: np.asarray(v, dtype=config.dtype) for k, v in ckpt.params.items()}
    return [evaluate(member, params, batches.val_batches(), batches.carries_state).token
            for member in members(model, member_count, config.dtype)[1:]]  # fmt: skip


__all__ = ["Evaluation", "Initial", "Replayed", "evaluate_checkpoint", "initial",
           "member_evaluations", "members", "replay", "trajectories"]  # fmt: skip
