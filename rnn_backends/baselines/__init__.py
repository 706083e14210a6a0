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

The test split (:meth:`CharBatches.test_batches`) is scored the same way, by the models chosen
on validation, and is used for nothing else.

Choosing: for each order the discounts are tuned on the validation tokens only, by coordinate
descent with a golden-section search of each ``D_m`` in ``[0.001, 1]`` (the validation
log-likelihood is concave in any single discount, since every probability is affine in it), from
0.75 everywhere, until a sweep improves the validation perplexity by less than 1e-9 relative. The
best order of 2..5 is the one with the lowest tuned validation perplexity.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import TrainConfig
from ..data.batching import CharBatches
from ..data.corpus import Corpus
from ._counts import NgramCounts, count_ngrams
from ._kneser_ney import DEFAULT_DISCOUNT, DISCOUNT_RANGE, KNModel, fit_kneser_ney
from ._plan import ScoringPlan, held_out_plan, plan_from_batches, validation_plan
from ._tuning import PlanScorer, perplexity

__all__ = [
    "DEFAULT_DISCOUNT",
    "DISCOUNT_RANGE",
    "KN_ORDERS",
    "Baselines",
    "KNModel",
    "NgramChoice",
    "NgramCounts",
    "PlanScorer",
    "ScoringPlan",
    "baselines",
    "count_ngrams",
    "fit_kneser_ney",
    "perplexity",
    "plan_from_batches",
    "held_out_plan",
    "validation_plan",
]

KN_ORDERS = (2, 3, 4, 5)


@dataclass(frozen=True)
class NgramChoice:
    """The n-gram chosen on validation: its order, discounts (D_1..D_n) and perplexity."""

    order: int
    discounts: tuple[float, ...]
    val_ppl: float


@dataclass(frozen=True)
class Baselines:
    """Validation (and test) perplexities of the baselines of one corpus split.

    Attributes:
        uniform: perplexity of 1/V (equals V).
        unigram: the order-1 model, its discount tuned on validation.
        kn: order -> perplexity of Kneser-Ney with discounts tuned on validation (orders 2..5).
        kn_fixed: order -> perplexity with D = 0.75 at every order, for reference.
        discounts: order -> tuned discounts D_1..D_n (order 1 is the unigram's).
        best: the order of 2..5 with the lowest tuned validation perplexity (None without
            validation tokens).
        models: order -> the tuned model, to score another split later.
        test_tokens: tokens of the test split (0 without one).
        test: the same models on the test split (nothing chosen there): ``{"uniform",
            "unigram", "kn": {n: ppl}, "best": ppl of the order chosen on validation}``; empty
            without a test split.
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
    test_tokens: int = 0
    test: dict[str, Any] = field(default_factory=dict)

    @property
    def best_test(self) -> float | None:
        """Test perplexity of the n-gram chosen on validation (None without either split)."""
        return self.test.get("best") if self.best is not None else None

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
            "test_tokens": self.test_tokens,
            "test": {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.test.items()},
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
            models[order] = KNModel(counts, order, (DEFAULT_DISCOUNT,) * order)
        fixed[order] = scorer.perplexity(KNModel(counts, order, (DEFAULT_DISCOUNT,) * order))
    ppl = {order: scorer.perplexity(m) for order, m in models.items()}
    best = None
    if scorer.tokens:
        order = min(KN_ORDERS, key=lambda n: ppl[n])
        best = NgramChoice(order, models[order].discounts, ppl[order])
    held_out = held_out_plan(batches)
    test = _score_test(counts, held_out, models, best)
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
        test_tokens=held_out.num_tokens,
        test=test,
    )


def _score_test(counts: NgramCounts, plan: ScoringPlan, models: dict[int, KNModel],
                best: NgramChoice | None) -> dict[str, Any]:  # fmt: skip
    """The validation-chosen ``models`` scored on the test ``plan`` (empty plan: ``{}``)."""
    if not plan.num_tokens:
        return {}
    scorer = PlanScorer(counts, plan)
    ppl = {order: scorer.perplexity(m) for order, m in models.items()}
    return {
        "uniform": ppl[0],
        "unigram": ppl[1],
        "kn": {n: ppl[n] for n in KN_ORDERS},
        "best": ppl[best.order] if best is not None else None,
    }
