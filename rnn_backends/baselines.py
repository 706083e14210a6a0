"""Baselines a character language model should beat: uniform, unigram and Kneser-Ney n-grams.

Every baseline is fitted on the training text only (the tokens the training windows cover,
:attr:`CharBatches.train_ids`) and scored on exactly the validation tokens the RNN is scored on,
with no more context than the RNN is given (see :func:`plan_from_batches`):

* ``windows`` batching: each validation window is a sequence of its own (the RNN's state starts at
  zero in every batch), so a token's context stops at its window's first token. Overlapping
  windows score a token once per window, as the RNN does.
* ``sequential`` batching: the RNN reads the validation span as rows, left to right, carrying its
  state across batches, so a token's context is everything before it in its row.

Perplexity is exp of the token-weighted mean negative log-probability, as in ``train.evaluate``.

Kneser-Ney is Chen & Goodman's interpolated form with one absolute discount ``D_m`` per order m.
For the last ``m - 1`` tokens ``h`` of the context and a next token ``w``::

    P_m(w | h) = (max(c(h w) - D_m, 0) + D_m * N1+(h .) * P'_{m-1}(w | h[1:])) / c(h .)

where ``c(h .)`` sums ``c(h u)`` over every token ``u`` and ``N1+(h .)`` counts the ``u`` with
``c(h u) > 0``. The highest order uses raw counts ``c``; the lower orders ``P'`` use the
continuation count ``N1+(. g)`` (how many distinct tokens were seen right before ``g``) in place of
``c(g)``, so a token that follows many different contexts weighs more as a novel continuation than
one that follows a single context often. The recursion ends at the uniform distribution ``1 / V``
over the whole vocabulary, ``<unk>`` included, so every token has probability > 0. A context
never seen in training passes all of its weight to the order below it. Because ``0 < D_m <= 1``
and counts are integers, each seen n-gram gives up exactly ``D_m``, which is what makes every
distribution sum to one.

A token whose context is shorter than ``n - 1`` (the first tokens of a window or row) is scored by
the model of order ``len(context) + 1``: its top level uses raw counts, since the text before the
window is unknown rather than absent (continuation counts estimate the probability of a *novel*
continuation, not of a token after a context of that length).

Order 0 is the uniform distribution, order 1 the unigram model (absolute discounting interpolated
with uniform, so unseen tokens keep probability > 0).

Choosing: for each order the discounts are tuned on the validation tokens only, by coordinate
descent with a golden-section search of each ``D_m`` in ``[0.001, 1]`` (the validation
log-likelihood is concave in any single discount, since every probability is affine in it), from
0.75 everywhere, until a sweep improves the validation perplexity by less than 1e-9 relative. The
best order of 2..5 is the one with the lowest tuned validation perplexity.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .config import TrainConfig
from .data.batching import Batch, CharBatches
from .data.corpus import Corpus
from .errors import ConfigError

DEFAULT_DISCOUNT = 0.75
KN_ORDERS = (2, 3, 4, 5)
DISCOUNT_RANGE = (0.001, 1.0)
_GOLDEN_TOL = 1e-4
_MAX_SWEEPS = 6
_SWEEP_RTOL = 1e-9


# --- counting -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NgramCounts:
    """Counts of every m-gram (m = 1..max_order) of a training text, stored per level m.

    An m-gram ``g = (g_1, ..., g_m)`` has the code ``id(g_1..g_{m-1}) * V + g_m`` where ``id`` is
    the index of the prefix in ``keys[m - 1]`` (the empty 0-gram has id 0); ``keys[m]`` holds the
    sorted codes of the distinct m-grams, and the index of a code in it is the m-gram's id. Codes
    stay below (distinct grams) * V, so they never overflow int64.

    Attributes (arrays indexed by the ids of one level):
        keys[m]: (G_m,) sorted int64 codes, m = 0..max_order (``keys[0] == [0]``).
        counts[m]: (G_m,) occurrences c(g).
        continuation[m]: (G_m,) N1+(. g), distinct tokens seen right before g (m < max_order;
            the top level is all zeros and never used).
        ctx_total[j], ctx_types[j]: (G_j,) for a j-gram context h: c(h .) and N1+(h .),
            j = 0..max_order - 1.
        ctx_cont_total[j], ctx_cont_types[j]: the same sums over continuation counts
            (zeros for j = max_order - 1).
    """

    vocab_size: int
    max_order: int
    num_tokens: int
    keys: tuple[np.ndarray, ...]
    counts: tuple[np.ndarray, ...]
    continuation: tuple[np.ndarray, ...]
    ctx_total: tuple[np.ndarray, ...]
    ctx_types: tuple[np.ndarray, ...]
    ctx_cont_total: tuple[np.ndarray, ...]
    ctx_cont_types: tuple[np.ndarray, ...]

    def gram_id(self, gram: Sequence[int]) -> int:
        """The id of ``gram`` at level ``len(gram)``, or -1 if it never occurs in training."""
        gid = 0
        for level, tok in enumerate(gram, start=1):
            code = np.array([gid * self.vocab_size + int(tok)], dtype=np.int64)
            gid = int(_lookup(self.keys[level], code, None)[0])
            if gid < 0:
                return -1
        return gid

    def count(self, gram: Sequence[int]) -> int:
        """c(gram): how often ``gram`` occurs in the training text (0 < len(gram) <= max_order)."""
        gid = self.gram_id(_check_gram(gram, self.max_order))
        return int(self.counts[len(gram)][gid]) if gid >= 0 else 0

    def context_sums(self, context: Sequence[int]) -> tuple[int, int, int, int]:
        """For a context h (len(h) < max_order): c(h .), N1+(h .), N1+(. h .) and the number of
        tokens u with N1+(. h u) > 0 (the last two need len(h) < max_order - 1; else 0)."""
        if len(context) >= self.max_order:
            raise ConfigError(f"a context here has at most {self.max_order - 1} tokens")
        hid = self.gram_id(context)
        if hid < 0:
            return 0, 0, 0, 0
        j = len(context)
        arrays = (self.ctx_total, self.ctx_types, self.ctx_cont_total, self.ctx_cont_types)
        return tuple(int(a[j][hid]) for a in arrays)  # type: ignore[return-value]

    def continuation_count(self, gram: Sequence[int]) -> int:
        """N1+(. gram): distinct tokens seen right before ``gram`` (len(gram) < max_order)."""
        _check_gram(gram, self.max_order - 1)
        gid = self.gram_id(gram)
        return int(self.continuation[len(gram)][gid]) if gid >= 0 else 0


def _check_gram(gram: Sequence[int], longest: int) -> Sequence[int]:
    if not 0 < len(gram) <= longest:
        raise ConfigError(f"an n-gram here needs 1..{longest} tokens, got {len(gram)}: {gram!r}")
    return gram


def _check_ids(ids: Any, vocab_size: int, what: str) -> np.ndarray:
    arr = np.asarray(ids)
    if arr.size and arr.dtype.kind not in "iu":
        raise ConfigError(
            f"{what} must be integer token ids, got dtype {arr.dtype}; encode text with the "
            "corpus's Vocab"
        )
    if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
        raise ConfigError(
            f"{what} must be token ids in [0, {vocab_size}), got values in "
            f"[{arr.min()}, {arr.max()}]; use the vocabulary the ids were encoded with"
        )
    return arr.astype(np.int64)


def _lookup(table: np.ndarray, code: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """Index of each ``code`` in the sorted ``table``, or -1 where absent or not ``valid``."""
    if len(table) == 0:
        return np.full(code.shape, -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(table, code), len(table) - 1)
    found = table[pos] == code
    if valid is not None:
        found &= valid
    return np.where(found, pos, -1)


def count_ngrams(train_ids: Any, vocab_size: int, max_order: int) -> NgramCounts:
    """Count the m-grams (m = 1..max_order) of ``train_ids`` (N,) and their continuations."""
    _check_order(max_order, minimum=1)
    x = _check_ids(train_ids, vocab_size, "train_ids").ravel()
    n, v = len(x), vocab_size
    keys: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
    counts: list[np.ndarray] = [np.array([n], dtype=np.int64)]
    # ends[m][s]: the id of the m-gram x[s-m+1 .. s], or -1 when it would start before x[0].
    ends: list[np.ndarray] = [np.zeros(n, dtype=np.int64)]
    for m in range(1, max_order + 1):
        prefix = np.full(n, -1, dtype=np.int64)
        prefix[m - 1 :] = ends[m - 1][: n - m + 1] if m == 1 else ends[m - 1][m - 2 : n - 1]
        valid = prefix >= 0
        uniq, inverse, cnt = np.unique(
            prefix[valid] * v + x[valid], return_inverse=True, return_counts=True
        )
        ids = np.full(n, -1, dtype=np.int64)
        ids[valid] = inverse.ravel()
        keys.append(uniq.astype(np.int64))
        counts.append(cnt.astype(np.int64))
        ends.append(ids)
    continuation = [np.zeros(len(k), dtype=np.int64) for k in keys]
    for m in range(1, max_order):
        # Each distinct (m+1)-gram adds one left neighbour to the m-gram that ends where it ends.
        longer = ends[m + 1]
        where = np.flatnonzero(longer >= 0)
        _, first = np.unique(longer[where], return_index=True)
        continuation[m] = np.bincount(ends[m][where[first]], minlength=len(keys[m]))
    ctx = [_context_sums(keys, counts, continuation, j, v, max_order) for j in range(max_order)]
    return NgramCounts(
        vocab_size=v,
        max_order=max_order,
        num_tokens=n,
        keys=tuple(keys),
        counts=tuple(counts),
        continuation=tuple(continuation),
        ctx_total=tuple(c[0] for c in ctx),
        ctx_types=tuple(c[1] for c in ctx),
        ctx_cont_total=tuple(c[2] for c in ctx),
        ctx_cont_types=tuple(c[3] for c in ctx),
    )


def _context_sums(
    keys: list[np.ndarray],
    counts: list[np.ndarray],
    continuation: list[np.ndarray],
    j: int,
    v: int,
    max_order: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """For every j-gram context h: c(h .), N1+(h .) and the same over continuation counts."""
    prefix = keys[j + 1] // v  # the id of each (j+1)-gram's first j tokens
    size = len(keys[j])
    total = np.bincount(prefix, weights=counts[j + 1], minlength=size)
    types = np.bincount(prefix, minlength=size).astype(np.float64)
    if j + 1 < max_order:
        cont = continuation[j + 1]
        cont_total = np.bincount(prefix, weights=cont, minlength=size)
        cont_types = np.bincount(prefix, weights=(cont > 0).astype(np.float64), minlength=size)
    else:
        cont_total = np.zeros(size)
        cont_types = np.zeros(size)
    return total, types, cont_total, cont_types


def _check_order(order: Any, minimum: int) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < minimum:
        raise ConfigError(f"an n-gram order must be an integer >= {minimum}, got {order!r}")
    return int(order)


# --- what is scored -------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class _Queries:
    """Distinct (context, next token) pairs with their multiplicities.

    context: (U, W) the last W context tokens, right-aligned; -1 where the context is shorter.
    avail: (U,) real context tokens (<= W). target: (U,). weight: (U,) float64 multiplicity.
    """

    context: np.ndarray
    avail: np.ndarray
    target: np.ndarray
    weight: np.ndarray


def _plan_queries(plan: ScoringPlan, width: int, vocab_size: int) -> _Queries:
    """The plan's (context truncated to ``width`` tokens, target) pairs, deduplicated."""
    s = np.arange(plan.num_tokens, dtype=np.int64)
    avail = np.minimum(s - plan.starts + 1, width)
    context = np.full((len(s), width), -1, dtype=np.int64)
    for col in range(width):
        back = width - 1 - col  # column col holds the token `back` steps before s
        ok = back < avail
        context[ok, col] = plan.inputs[s[ok] - back]
    return _dedupe(context, avail, plan.targets, vocab_size)


def _dedupe(context: np.ndarray, avail: np.ndarray, target: np.ndarray, v: int) -> _Queries:
    rows = np.concatenate([context + 1, target[:, None]], axis=1)  # digits in [0, V]
    if (v + 1) ** rows.shape[1] < 2**62:
        code = rows @ ((v + 1) ** np.arange(rows.shape[1], dtype=np.int64))
        _, first, weight = np.unique(code, return_index=True, return_counts=True)
    else:  # too many digits for one int64: compare whole rows
        _, first, weight = np.unique(rows, axis=0, return_index=True, return_counts=True)
    return _Queries(context[first], avail[first], target[first], weight.astype(np.float64))


@dataclass(frozen=True)
class _Level:
    """Per query, the statistics of one level j (context of j tokens) of the recursion.

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


def _query_levels(counts: NgramCounts, q: _Queries, levels: int) -> list[_Level]:
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
        gram = _lookup(counts.keys[j + 1], safe * v + q.target, seen)
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
        out.append(_Level(raw, cont))
        if j + 1 < levels and width > j:
            # Extend every gram by the token in the next column: length j -> j + 1.
            prev = np.full_like(chain, -1)
            prev[:, 1:] = chain[:, :-1]
            tok = np.concatenate([np.full((len(q.target), 1), -1), q.context], axis=1)
            ok = (prev >= 0) & (tok >= 0)
            chain = _lookup(counts.keys[j + 1], np.where(ok, prev, 0) * v + tok, ok)
    return out


# --- the model ------------------------------------------------------------------------------------

_Terms = list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]


def _order_terms(levels: list[_Level], avail: np.ndarray, order: int) -> _Terms:
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


def _interpolate(
    terms: _Terms, discounts: Sequence[float], p: np.ndarray, first: int
) -> np.ndarray:
    """Run the recursion from level ``first`` up, starting from the probabilities ``p`` (U,)."""
    for j in range(first, len(terms)):
        num, den, typ, use = terms[j]
        d = discounts[j]
        p = np.where(use, (np.maximum(num - d, 0.0) + d * typ * p) / den, p)
    return p


def _check_discounts(discounts: float | Sequence[float], order: int) -> tuple[float, ...]:
    ds = (discounts,) * order if isinstance(discounts, (int, float)) else tuple(discounts)
    lo = DISCOUNT_RANGE[0]
    bad = [d for d in ds if not (isinstance(d, (int, float)) and 0 < d <= 1)]
    if len(ds) != order or bad:
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
        _check_order(self.order, minimum=0)
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
        ctx = _check_ids(contexts, v, "contexts")
        nxt = _check_ids(next_ids, v, "next_ids").ravel()
        if ctx.ndim != 2 or len(ctx) != len(nxt):
            raise ConfigError(
                f"contexts must have shape (N, k) and next_ids (N,); got {ctx.shape} and "
                f"{nxt.shape}"
            )
        width = max(self.order - 1, 0)
        k = min(ctx.shape[1], width)
        padded = np.full((len(nxt), width), -1, dtype=np.int64)
        padded[:, width - k :] = ctx[:, ctx.shape[1] - k :]
        q = _Queries(padded, np.full(len(nxt), k), nxt, np.ones(len(nxt)))
        return np.log(_query_probs(self, q))

    def distribution(self, context: Sequence[int]) -> np.ndarray:
        """P(w | context) for every token w of the vocabulary: shape (V,), sums to 1."""
        v = self.vocab_size
        ctx = np.tile(np.asarray(context, dtype=np.int64).reshape(1, -1), (v, 1))
        return np.exp(self.log_prob(ctx, np.arange(v)))


def _query_probs(model: KNModel, q: _Queries) -> np.ndarray:
    levels = _query_levels(model.counts, q, model.order)
    terms = _order_terms(levels, q.avail, model.order)
    p0 = np.full(len(q.target), 1.0 / model.vocab_size)
    return _interpolate(terms, model.discounts, p0, 0)


def fit_kneser_ney(
    train_ids: Any,
    vocab_size: int,
    order: int,
    discounts: float | Sequence[float] = DEFAULT_DISCOUNT,
) -> KNModel:
    """Interpolated Kneser-Ney of ``order`` on ``train_ids`` (N,) over ``vocab_size`` tokens.

    ``discounts``: one D for every order, or one per order 1..order, each in (0, 1].
    """
    _check_order(order, minimum=0)
    return KNModel(count_ngrams(train_ids, vocab_size, max(order, 1)), order, discounts)


# --- scoring and choosing -------------------------------------------------------------------------


class PlanScorer:
    """Scores models of any order up to ``counts.max_order`` on one plan.

    The plan's distinct (context, target) pairs and their count statistics are computed once;
    each evaluation is then a few vectorised passes over those pairs, which is what makes the
    discount search cheap.
    """

    def __init__(self, counts: NgramCounts, plan: ScoringPlan) -> None:
        self.counts = counts
        self.queries = _plan_queries(plan, counts.max_order - 1, counts.vocab_size)
        self.levels = _query_levels(counts, self.queries, counts.max_order)
        self.tokens = plan.num_tokens

    def _terms(self, order: int) -> _Terms:
        return _order_terms(self.levels, self.queries.avail, order)

    def _uniform(self) -> np.ndarray:
        return np.full(len(self.queries.target), 1.0 / self.counts.vocab_size)

    def _nll(self, p: np.ndarray) -> float:
        if not self.tokens:
            return math.nan
        w = self.queries.weight
        return float(-(w @ np.log(p)) / self.tokens)

    def perplexity(self, model: KNModel) -> float:
        """exp of the token-weighted mean negative log-probability of ``model`` on the plan."""
        if model.counts is not self.counts:
            raise ConfigError("this scorer was built for other counts; build one per model")
        p = _interpolate(self._terms(model.order), model.discounts, self._uniform(), 0)
        return math.exp(self._nll(p))

    def tune(self, order: int) -> KNModel:
        """The discounts of ``order`` that minimise the plan's perplexity (see module docs)."""
        terms = self._terms(order)
        ds = [DEFAULT_DISCOUNT] * order
        best = self._nll(_interpolate(terms, ds, self._uniform(), 0))
        for _ in range(_MAX_SWEEPS):
            before = best
            for j in range(order):
                below = _interpolate(terms[:j], ds, self._uniform(), 0)

                def nll(d: float, j: int = j, below: np.ndarray = below) -> float:
                    trial = [*ds[:j], d, *ds[j + 1 :]]
                    return self._nll(_interpolate(terms, trial, below, j))

                d, value = _golden_min(nll, *DISCOUNT_RANGE)
                if value < best:
                    ds[j], best = d, value
            if not before - best > _SWEEP_RTOL * abs(before):
                break
        return KNModel(self.counts, order, tuple(ds))


def _golden_min(f: Any, lo: float, hi: float) -> tuple[float, float]:
    """Minimise the unimodal ``f`` on [lo, hi] to within _GOLDEN_TOL; (argmin, min)."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    while b - a > _GOLDEN_TOL:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    # The optimum may sit on an end of the range (e.g. D = 1 for a sparse top order).
    value, arg = min((fc, c), (fd, d), (f(lo), lo), (f(hi), hi))
    return arg, value


def perplexity(model: KNModel, plan: ScoringPlan) -> float:
    """Perplexity of ``model`` on ``plan``, as ``train.evaluate`` measures the RNN's."""
    return PlanScorer(model.counts, plan).perplexity(model)


@dataclass(frozen=True)
class NgramChoice:
    """The n-gram chosen on validation: its order, discounts (D_1..D_n) and perplexity."""

    order: int
    discounts: tuple[float, ...]
    val_ppl: float


@dataclass(frozen=True)
class Baselines:
    """Validation perplexities of the baselines of one corpus split.

    Attributes:
        uniform: perplexity of 1/V (equals V).
        unigram: the order-1 model, its discount tuned on validation.
        kn: order -> perplexity of Kneser-Ney with discounts tuned on validation (orders 2..5).
        kn_fixed: order -> perplexity with D = 0.75 at every order, for reference.
        discounts: order -> tuned discounts D_1..D_n (order 1 is the unigram's).
        best: the order of 2..5 with the lowest tuned validation perplexity (None without
            validation tokens).
        models: order -> the tuned model, to score another split (e.g. a test split) later.
    """

    corpus: str
    vocab_size: int
    val_tokens: int
    uniform: float
    unigram: float
    kn: dict[int, float]
    kn_fixed: dict[int, float]
    discounts: dict[int, tuple[float, ...]]
    best: NgramChoice | None
    models: dict[int, KNModel] = field(repr=False, compare=False, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"uniform", "unigram", "kn": {n: ppl}, "best": {...}, ...}``."""
        best = None
        if self.best is not None:
            best = {
                "order": self.best.order,
                "discounts": list(self.best.discounts),
                "val_ppl": self.best.val_ppl,
            }
        return {
            "corpus": self.corpus,
            "vocab_size": self.vocab_size,
            "val_tokens": self.val_tokens,
            "uniform": self.uniform,
            "unigram": self.unigram,
            "kn": dict(self.kn),
            "kn_fixed": dict(self.kn_fixed),
            "discounts": {n: list(d) for n, d in self.discounts.items()},
            "best": best,
        }


def baselines(corpus: Corpus, train_config: TrainConfig) -> Baselines:
    """Fit every baseline on the training split of ``corpus`` under ``train_config`` and score
    it on the validation split, exactly as the RNN is scored; tune discounts on validation.
    """
    batches = CharBatches(corpus.ids, train_config)
    v = len(corpus.vocab)
    top = max(KN_ORDERS)
    counts = count_ngrams(batches.train_ids, v, top)
    scorer = PlanScorer(counts, validation_plan(batches))
    models = {0: KNModel(counts, 0, ())}
    fixed: dict[int, float] = {}
    for order in range(1, top + 1):
        if scorer.tokens:
            models[order] = scorer.tune(order)
        else:  # nothing to choose on: keep the default discounts
            models[order] = KNModel(counts, order, DEFAULT_DISCOUNT)
        fixed[order] = scorer.perplexity(KNModel(counts, order, DEFAULT_DISCOUNT))
    ppl = {order: scorer.perplexity(m) for order, m in models.items()}
    best = None
    if scorer.tokens:
        order = min(KN_ORDERS, key=lambda n: ppl[n])
        best = NgramChoice(order, models[order].discounts, ppl[order])
    return Baselines(
        corpus=corpus.name,
        vocab_size=v,
        val_tokens=scorer.tokens,
        uniform=ppl[0],
        unigram=ppl[1],
        kn={n: ppl[n] for n in KN_ORDERS},
        kn_fixed={n: fixed[n] for n in KN_ORDERS},
        discounts={n: models[n].discounts for n in range(1, top + 1)},
        best=best,
        models=models,
    )
