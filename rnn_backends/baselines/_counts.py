"""Counts of the m-grams of a training text, their continuation counts and context sums."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError


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
            gid = int(lookup(self.keys[level], code, None)[0])
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


def check_ids(ids: Any, vocab_size: int, what: str) -> np.ndarray:
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


def lookup(table: np.ndarray, code: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
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
    check_order(max_order, minimum=1)
    x = check_ids(train_ids, vocab_size, "train_ids").ravel()
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
    cont_total: np.ndarray  # float64: bincount with weights sums them (its stub says intp)
    cont_types: np.ndarray
    if j + 1 < max_order:
        cont = continuation[j + 1]
        cont_total = np.bincount(prefix, weights=cont, minlength=size)
        cont_types = np.bincount(prefix, weights=(cont > 0).astype(np.float64), minlength=size)
    else:
        cont_total = np.zeros(size)
        cont_types = np.zeros(size)
    return total, types, cont_total, cont_types


def check_order(order: Any, minimum: int) -> int:
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < minimum:
        raise ConfigError(f"an n-gram order must be an integer >= {minimum}, got {order!r}")
    return int(order)
