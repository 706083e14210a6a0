"""Perplexity: exp of the token-weighted mean cross-entropy, and the textbook's figure beside it.

The textbook reports the mean of per-batch exp(loss); the two differ when batches differ in size
or loss (by Jensen's inequality the book's figure is the larger for equal-size batches).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Perplexity:
    """Token-weighted perplexity (``token``), the book's mean of per-batch exp(loss) (``book``),
    the mean loss and the number of tokens it covers."""

    token: float
    book: float
    loss: float
    tokens: int


def exp_saturating(x: float) -> float:
    """exp that saturates at inf: a diverging run has losses past 709, where math.exp raises."""
    return math.exp(x) if x < 709.0 else math.inf


@dataclass
class Meter:
    """Accumulates batch losses into a :class:`Perplexity`; a training checkpoint saves its three
    fields, so an epoch interrupted mid-way ends with the figures of an unbroken one."""

    loss_sum: float = 0.0  # sum over batches of mean loss * tokens
    tokens: int = 0
    batch_ppl: list[float] = field(default_factory=list)

    def add(self, loss: float, tokens: int) -> None:
        """Count one batch of ``tokens`` tokens whose mean cross-entropy is ``loss``."""
        self.loss_sum += loss * tokens
        self.tokens += tokens
        self.batch_ppl.append(exp_saturating(loss))

    def result(self) -> Perplexity:
        if not self.tokens:
            return Perplexity(float("nan"), float("nan"), float("nan"), 0)
        mean = self.loss_sum / self.tokens
        return Perplexity(exp_saturating(mean), float(np.mean(self.batch_ppl)), mean, self.tokens)
