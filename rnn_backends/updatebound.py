"""The rounding bound of Adam's element-wise update, entry by entry.

A replayed Adam step (:mod:`rnn_backends.shadow`) ends with new slots ``m``, ``v`` and new
parameters ``p - lr m_hat / (sqrt(v_hat) + eps)``. The slots are judged against the ensemble band
like every other array (:func:`rnn_backends.verdict.band_check`), so what each slot may differ by
is known: ``e_m = u |m| + A_m`` with ``A_m`` the slot's allowance (and the same for ``v``). The
update divides ``m`` by ``sqrt(v_hat)``: an entry whose ``m`` is a small difference (a gradient
that changed sign, a small gradient after large ones) keeps the slot's absolute error but a much
larger relative one, and so does its update. A tensor-wide band cannot follow that, so the
parameters get a bound of their own, entry by entry, from the rounding model:

* each operation returns its exact result times ``(1 + d)``, ``|d| <= u``, and each constant
  (``lr / c1``, ``1 / sqrt(c2)``, ``eps``, ...) is a float64 number rounded once to float32;
* an :class:`Approx` carries a value (the float64 truth) and a bound ``e`` on how far a computed
  number may be from it, through ``+``, ``*``, ``/`` and ``sqrt``, not only to first order: a
  product adds ``e_a e_b``, a reciprocal divides by the least the computed number can be, a
  square root takes ``min(e / (sqrt(a) + sqrt(a - e)), sqrt(e))``;
* the update is written in both orders this project's code uses (the frameworks' shared
  ``optim.update``: ``(lr / c1) (m / (sqrt(v) / sqrt(c2) + eps))``; the oracle's: ``lr (m / c1)
  / (sqrt(v / c2) + eps)``), every division counted as a reciprocal and a multiply (XLA may
  rewrite it so); another order of the same products and quotients rounds no more often on any
  chain, and for a chain of products the bound depends only on how many roundings it has.

Nothing is fitted: the only measured inputs are the slots' allowances, which the slot checks
enforce themselves. A correct framework's parameter then differs from the float64 one by at most
``(e_update + e_decay) (1 + u)`` beyond the rounding of storing it (:func:`adam_allowance`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Approx:
    """A computed array: ``v`` its exact value (float64), ``e`` a bound on ``|computed - v|``
    (same shape, or broadcastable); ``u`` the unit roundoff of the computation."""

    v: np.ndarray
    e: np.ndarray
    u: float
    low: Any = 0.0  # a lower bound on the computed number's absolute value, when one is known

    @staticmethod
    def given(value: Any, error: Any, u: float) -> Approx:
        """An input known to within ``error`` (0: exact, as a saved float32 array is)."""
        v = np.asarray(value, dtype=np.float64)
        return Approx(v, np.broadcast_to(np.asarray(error, dtype=np.float64), v.shape), u)

    @staticmethod
    def constant(c: float, u: float) -> Approx:
        """A float64 constant rounded once to the computation's precision."""
        return Approx(np.asarray(c, dtype=np.float64), np.asarray(u * abs(c), dtype=np.float64), u)

    def _rounded(self, value: np.ndarray, propagated: np.ndarray) -> Approx:
        """The result of one operation: the propagated error plus the rounding of the result,
        ``u`` times the computed number (at most ``|value| + propagated``)."""
        return Approx(value, propagated + self.u * (np.abs(value) + propagated), self.u)

    def __add__(self, o: Approx) -> Approx:
        return self._rounded(self.v + o.v, self.e + o.e)

    def __mul__(self, o: Approx) -> Approx:
        return self._rounded(self.v * o.v, np.abs(self.v) * o.e + self.e * np.abs(o.v)
                             + self.e * o.e)  # fmt: skip

    def at_least(self, low: float) -> Approx:
        """The same, known never to be computed below ``low`` > 0 in absolute value (a sum of
        a square root and a positive constant, say)."""
        return Approx(self.v, self.e, self.u, low)

    def reciprocal(self) -> Approx:
        """``1 / self``: ``|1/b' - 1/b| = |b' - b| / (|b| |b'|)`` with ``|b'|`` at least
        ``max(|b| - e, low)``; infinite where the computed number could be zero."""
        a = np.abs(self.v)
        least = np.maximum(a - self.e, self.low)
        with np.errstate(divide="ignore", invalid="ignore"):
            e = np.where(least > 0, self.e / (a * least), np.inf)
            return self._rounded(1.0 / self.v, e)

    def __truediv__(self, o: Approx) -> Approx:
        """As a reciprocal and a multiply: two roundings, at least as many as a true divide."""
        return self * o.reciprocal()

    def sqrt(self) -> Approx:
        """``sqrt`` of a non-negative array: ``|sqrt(a + d) - sqrt(a)|`` is
        ``|d| / (sqrt(a + d) + sqrt(a))``, at most ``e / (sqrt(a) + sqrt(max(a - e, 0)))`` and
        at most ``sqrt(e)``."""
        root = np.sqrt(self.v)
        with np.errstate(divide="ignore", invalid="ignore"):
            first = np.where(root > 0, self.e / (root + np.sqrt(np.maximum(self.v - self.e, 0))),
                             np.inf)  # fmt: skip
        return self._rounded(root, np.minimum(first, np.sqrt(self.e)))


def adam_allowance(
    *,
    kind: str,
    lr: float,
    step: int,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    before: np.ndarray,
    m: np.ndarray,
    v: np.ndarray,
    e_m: np.ndarray,
    e_v: np.ndarray,
    u: float,
) -> np.ndarray:
    """How far a correct parameter after an Adam (or AdamW) update may be from the float64 one,
    beyond the rounding of storing it, entry by entry.

    Arguments:
        kind: ``"adam"`` or ``"adamw"``; lr: the step's rate; step: updates before this one
            (the update is number ``step + 1``); beta1, beta2, eps, weight_decay: as
            :class:`rnn_backends.optim.Optimizer`.
        before: the parameter before the step (exact: the framework's saved float32 array).
        m, v: the float64 truth's new slots; e_m, e_v: what the computed slots may differ from
            them by (arrays of the parameter's shape, or scalars).
        u: the unit roundoff of the computation.
    Returns:
        an array of the parameter's shape.
    """
    t = step + 1
    c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
    M, V = Approx.given(m, e_m, u), Approx.given(v, e_v, u)
    C = lambda c: Approx.constant(c, u)  # noqa: E731
    eps_ = C(eps)
    # The frameworks' shared optim.update, and the oracle's reference.optimizer_update.
    # Either denominator is a square root (>= 0) plus eps, so never computed below
    # eps (1 - u)^2: eps rounded, then the sum rounded.
    low = eps * (1 - u) ** 2
    shared_den = (V.sqrt() * C(1.0 / math.sqrt(c2)) + eps_).at_least(low)
    oracle_den = ((V / C(c2)).sqrt() + eps_).at_least(low)
    shared = C(lr / c1) * (M / shared_den)
    oracle = C(lr) * (M / C(c1)) / oracle_den
    e_update = np.maximum(shared.e, oracle.e)
    e_decay: Any = 0.0
    if kind == "adamw":
        # p (1 - lr wd) (shared: the rounded factor and the product) or p - (lr wd) p (oracle:
        # the rounded factor, the product and the difference): at most two roundings of |p|.
        p = np.abs(np.asarray(before, dtype=np.float64))
        e_decay = 2 * u * p + u * u * p
    return (e_update + e_decay) * (1 + u)


__all__ = ["Approx", "adam_allowance"]
