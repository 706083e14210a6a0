"""What a baseline is scored on: the RNN's validation tokens, each with the context it may use."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ..data.batching import Batch, CharBatches
from ._kneser_ney import Queries


@dataclass(frozen=True)
class ScoringPlan:
    """The tokens a model is scored on and the context each may use.

    Attributes:
        inputs: (S,) int64 token ids the model reads, in order.
        targets: (S,) int64 the token predicted at each position (the RNN's ``Y``).
        starts: (S,) int64: the context of position s is ``inputs[starts[s] : s + 1]``
            (``starts[s] <= s``), i.e. the RNN's inputs up to and including step s since its
            state was last reset.
    """

    inputs: np.ndarray
    targets: np.ndarray
    starts: np.ndarray

    @property
    def num_tokens(self) -> int:
        return len(self.targets)

    def context(self, s: int) -> np.ndarray:
        """The context of scored position ``s``: shape (s - starts[s] + 1,)."""
        return self.inputs[self.starts[s] : s + 1]


def plan_from_batches(batches: Iterable[Batch], carries_state: bool) -> ScoringPlan:
    """What the RNN sees when ``train.evaluate`` runs over ``batches`` (X, Y), each (B, T).

    Without carried state each row of each batch is scored from a zero state, so it is its own
    sequence. With carried state row b of batch i + 1 continues row b of batch i (the state
    starts at zero once, before the first batch), so a row's sequence is the concatenation of
    its rows across all batches.
    """
    xs, ys = [], []
    for X, Y in batches:
        xs.append(np.asarray(X, dtype=np.int64))
        ys.append(np.asarray(Y, dtype=np.int64))
    if not xs:
        empty = np.zeros(0, dtype=np.int64)
        return ScoringPlan(empty, empty, empty)
    if carries_state:
        if len({x.shape[0] for x in xs}) != 1:
            raise ValueError("batches that carry state must all have the same number of rows")
        X, Y = np.concatenate(xs, axis=1), np.concatenate(ys, axis=1)
    else:
        X, Y = np.concatenate(xs, axis=0), np.concatenate(ys, axis=0)
    rows, length = X.shape
    starts = np.repeat(np.arange(rows, dtype=np.int64) * length, length)
    return ScoringPlan(X.ravel(), Y.ravel(), starts)


def validation_plan(batches: CharBatches) -> ScoringPlan:
    """The validation tokens and contexts of ``batches``, exactly as the RNN is evaluated."""
    return plan_from_batches(batches.val_batches(), batches.carries_state)


def held_out_plan(batches: CharBatches) -> ScoringPlan:
    """The test tokens and contexts of ``batches``, exactly as the RNN is evaluated on them."""
    return plan_from_batches(batches.test_batches(), batches.carries_state)


def plan_queries(plan: ScoringPlan, width: int, vocab_size: int) -> Queries:
    """The plan's (context truncated to ``width`` tokens, target) pairs, deduplicated."""
    s = np.arange(plan.num_tokens, dtype=np.int64)
    avail = np.minimum(s - plan.starts + 1, width)
    context = np.full((len(s), width), -1, dtype=np.int64)
    for col in range(width):
        back = width - 1 - col  # column col holds the token `back` steps before s
        ok = back < avail
        context[ok, col] = plan.inputs[s[ok] - back]
    return _dedupe(context, avail, plan.targets, vocab_size)


def _dedupe(context: np.ndarray, avail: np.ndarray, target: np.ndarray, v: int) -> Queries:
    rows = np.concatenate([context + 1, target[:, None]], axis=1)  # digits in [0, V]
    if (v + 1) ** rows.shape[1] < 2**62:
        code = rows @ ((v + 1) ** np.arange(rows.shape[1], dtype=np.int64))
        _, first, weight = np.unique(code, return_index=True, return_counts=True)
    else:  # too many digits for one int64: compare whole rows
        _, first, weight = np.unique(rows, axis=0, return_index=True, return_counts=True)
    return Queries(context[first], avail[first], target[first], weight.astype(np.float64))
