"""Interpolated Kneser-Ney over :class:`NgramCounts`: the recursion, vectorised over queries."""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._counts import NgramCounts, check_ids, check_order, count_ngrams, lookup

DEFAULT_DISCOUNT = 0.75
DISCOUNT_RANGE = (0.001, 1.0)


@dataclass(frozen=True)
class Queries:
    """Distinct (context, next token) pairs with their multiplicities.

    context: (U, W) the last W context tokens, right-aligned; -1 where the context is shorter.
    avail: (U,) real context tokens (<= W). target: (U,). weight: (U,) float64 multiplicity.
    """

    context: np.ndarray
    avail: np.ndarray
    target: np.ndarray
    weight: np.ndarray


@dataclass(frozen=True)
class Level:
    """Per query, the statistics of one level j (context of j tokens) of the recursion.

    Both variants share the discount D_{j+1} of order j + 1.

    Raw (top-level) and continuation (lower-level) variants of: the numerator count of the
    (context, target) gram, the context total and the context's number of distinct successors.
    All (U,) float64, zero where the context (or gram) was not seen in training.
    """

    raw: tuple[np.ndarray, np.ndarray, np.ndarray]
    cont: tuple[np.ndarray, np.ndarray, np.ndarray]


def _pick(arr: np.ndarray, idx: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``arr[idx]`` where ``mask``, else 0, as float64 (``arr`` may be empty: a training text
    shorter than the order has no grams of that length)."""
    if len(arr) == 0:
        return np.zeros(idx.shape)
    return np.where(mask, arr[idx], 0).astype(np.float64)


def query_levels(counts: NgramCounts, q: Queries, levels: int) -> list[Level]:
    """Statistics of levels 0..levels-1 for every query (levels <= counts.max_order)."""
    v = counts.vocab_size
    width = q.context.shape[1]
    # chain[c]: id of the gram of the current length that ends at column c (-1: unseen/padding).
    chain = np.zeros((len(q.target), width + 1), dtype=np.int64)  # length 0: the empty gram
    out = []
    for j in range(levels):
        ctx_id = chain[:, width]  # the last j context tokens
        if j > 0:
            ctx_id = np.where(q.avail >= j, ctx_id, -1)
        seen = ctx_id >= 0
        safe = np.where(seen, ctx_id, 0)
        gram = lookup(counts.keys[j + 1], safe * v + q.target, seen)
        has = gram >= 0
        g = np.where(has, gram, 0)
        raw = (
            _pick(counts.counts[j + 1], g, has),
            _pick(counts.ctx_total[j], safe, seen),
            _pick(counts.ctx_types[j], safe, seen),
        )
        cont = (
            _pick(counts.continuation[j + 1], g, has),
            _pick(counts.ctx_cont_total[j], safe, seen),
            _pick(counts.ctx_cont_types[j], safe, seen),
        )
        out.append(Level(raw, cont))
        if j + 1 < levels and width > j:
            # Extend every gram by the token in the next column: length j -> j + 1.
            prev = np.full_like(chain, -1)
            prev[:, 1:] = chain[:, :-1]
            tok = np.concatenate([np.full((len(q.target), 1), -1), q.context], axis=1)
            ok = (prev >= 0) & (tok >= 0)
            chain = lookup(counts.keys[j + 1], np.where(ok, prev, 0) * v + tok, ok)
    return out


Terms = list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def order_terms(levels: list[Level], avail: np.ndarray, order: int) -> Terms:
    """Per level j < order: (numerator, denominator, successor types, in use), each (U,).

    Level ``min(order - 1, avail)`` is a query's top level and takes raw counts; the levels below
    take continuation counts; the levels above are not used. A level whose context total is 0
    (context unseen) is not used either, which passes the probability from below unchanged.
    """
    top = np.minimum(order - 1, avail)
    terms = []
    for j in range(order):
        is_top = top == j
        num, den, typ = (
            np.where(is_top, r, c) for r, c in zip(levels[j].raw, levels[j].cont, strict=True)
        )
        use = (j <= top) & (den > 0)
        terms.append((num, np.where(use, den, 1.0), typ, use))
    return terms


def interpolate(terms: Terms, discounts: Sequence[float], p: np.ndarray, first: int) -> np.ndarray:
    """Run the recursion from level ``first`` up, starting from the probabilities ``p`` (U,)."""
    for j in range(first, len(terms)):
        num, den, typ, use = terms[j]
        d = discounts[j]
        p = np.where(use, (np.maximum(num - d, 0.0) + d * typ * p) / den, p)
    return p


def _is_discount(d: Any) -> bool:
    # NaN fails the comparison.
    return isinstance(d, numbers.Real) and not isinstance(d, bool) and 0 < float(d) <= 1


def _check_discounts(discounts: Any, order: int) -> tuple[float, ...]:
    if isinstance(discounts, numbers.Real):
        ds: tuple[Any, ...] = (discounts,) * order
    else:
        ds = tuple(discounts) if isinstance(discounts, Iterable) else (discounts,)
    lo = DISCOUNT_RANGE[0]
    if len(ds) != order or not all(_is_discount(d) for d in ds):
        raise ConfigError(
            f"Kneser-Ney of order {order} needs {order} discount(s), each in (0, 1]; got "
            f"{discounts!r}; pass one number (e.g. {DEFAULT_DISCOUNT}) or one per order "
            f"(tuning searches [{lo}, 1])"
        )
    return tuple(float(d) for d in ds)


@dataclass(frozen=True)
class KNModel:
    """An interpolated Kneser-Ney model of ``order`` (0: uniform, 1: unigram) over ``counts``.

    ``discounts[m - 1]`` is the discount D_m of order m (m = 1..order), each in (0, 1].
    """

    counts: NgramCounts
    order: int
    discounts: tuple[float, ...]

    def __post_init__(self) -> None:
        check_order(self.order, minimum=0)
        if self.order > self.counts.max_order:
            raise ConfigError(
                f"order {self.order} needs counts up to {self.order}-grams, but these stop at "
                f"{self.counts.max_order}; count with max_order >= {self.order}"
            )
        object.__setattr__(self, "discounts", _check_discounts(self.discounts, self.order))

    @property
    def vocab_size(self) -> int:
        return self.counts.vocab_size

    def log_prob(self, contexts: Any, next_ids: Any) -> np.ndarray:
        """Natural-log probabilities of ``next_ids`` (N,) after ``contexts`` (N, k), k >= 0.

        Only the last ``order - 1`` context tokens matter; a shorter context is scored by the
        model of order k + 1 (see the module docstring).
        """
        v = self.vocab_size
        ctx = check_ids(contexts, v, "contexts")
        nxt = check_ids(next_ids, v, "next_ids").ravel()
        if ctx.ndim != 2 or len(ctx) != len(nxt):
            raise ConfigError(
                f"contexts must have shape (N, k) and next_ids (N,); got {ctx.shape} and "
                f"{nxt.shape}"
            )
        width = max(self.order - 1, 0)
        k = min(ctx.shape[1], width)
        padded = np.full((len(nxt), width), -1, dtype=np.int64)
        padded[:, width - k :] = ctx[:, ctx.shape[1] - k :]
        q = Queries(padded, np.full(len(nxt), k), nxt, np.ones(len(nxt)))
        return np.log(_query_probs(self, q))

    def distribution(self, context: Sequence[int]) -> np.ndarray:
        """P(w | context) for every token w of the vocabulary: shape (V,), sums to 1."""
        v = self.vocab_size
        ctx = np.tile(np.asarray(context, dtype=np.int64).reshape(1, -1), (v, 1))
        return np.exp(self.log_prob(ctx, np.arange(v)))


def _query_probs(model: KNModel, q: Queries) -> np.ndarray:
    levels = query_levels(model.counts, q, model.order)
    terms = order_terms(levels, q.avail, model.order)
    p0 = np.full(len(q.target), 1.0 / model.vocab_size)
    return interpolate(terms, model.discounts, p0, 0)


def fit_kneser_ney(
    train_ids: Any,
    vocab_size: int,
    order: int,
    discounts: float | Sequence[float] = DEFAULT_DISCOUNT,
) -> KNModel:
    """Interpolated Kneser-Ney of ``order`` on ``train_ids`` (N,) over ``vocab_size`` tokens.

    ``discounts``: one D for every order, or one per order 1..order, each in (0, 1].
    """
    check_order(order, minimum=0)
    counts = count_ngrams(train_ids, vocab_size, max(order, 1))
    return KNModel(counts, order, _check_discounts(discounts, order))
