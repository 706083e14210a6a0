"""Perplexity of a model on a scoring plan, and the discount search on it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError
from ._counts import NgramCounts
from ._kneser_ney import (
    DEFAULT_DISCOUNT,
    DISCOUNT_RANGE,
    KNModel,
    Terms,
    interpolate,
    order_terms,
    query_levels,
)
from ._plan import ScoringPlan, plan_queries

_GOLDEN_TOL = 1e-4
_MAX_SWEEPS = 6
_SWEEP_RTOL = 1e-9


class PlanScorer:
    """Scores models of any order up to ``counts.max_order`` on one plan.

    The plan's distinct (context, target) pairs and their count statistics are computed once;
    each evaluation is then a few vectorised passes over those pairs, which is what makes the
    discount search cheap.
    """

    def __init__(self, counts: NgramCounts, plan: ScoringPlan) -> None:
        self.counts = counts
        self.queries = plan_queries(plan, counts.max_order - 1, counts.vocab_size)
        self.levels = query_levels(counts, self.queries, counts.max_order)
        self.tokens = plan.num_tokens

    def _terms(self, order: int) -> Terms:
        return order_terms(self.levels, self.queries.avail, order)

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
        p = interpolate(self._terms(model.order), model.discounts, self._uniform(), 0)
        return math.exp(self._nll(p))

    def tune(self, order: int) -> KNModel:
        """The discounts of ``order`` that minimise the plan's perplexity (see module docs)."""
        terms = self._terms(order)
        ds = [DEFAULT_DISCOUNT] * order
        best = self._nll(interpolate(terms, ds, self._uniform(), 0))
        for _ in range(_MAX_SWEEPS):
            before = best
            for j in range(order):
                below = interpolate(terms[:j], ds, self._uniform(), 0)

                def nll(d: float, j: int = j, below: np.ndarray = below) -> float:
                    trial = [*ds[:j], d, *ds[j + 1 :]]
                    return self._nll(interpolate(terms, trial, below, j))

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
