"""The rounding model: how far a correct float32 computation may be from the float64 oracle.

The model (Higham & Mary, "A new approach to probabilistic rounding error analysis", SIAM J. Sci.
Comput. 2019): every floating-point operation returns its exact result times ``(1 + delta)``,
``|delta| <= u`` (``u = 2^-24`` in float32), and the ``delta`` are independent with mean zero. A
result that goes through at most ``n`` roundings along any chain then satisfies, to first order,

    |computed - exact| <= gamma_n(lambda) * S,
    gamma_n(lambda) = exp(lambda sqrt(n) u + n u^2 / (1 - u)) - 1  (about lambda sqrt(n) u)

with probability at least ``1 - 2 n exp(-lambda^2 (1 - u)^2 / 2)``, where ``S`` is the result's
magnitude, the same computation done with absolute values (:mod:`rnn_backends.magnitude`). The
worst case is ``n u S``; rounding errors of independent signs grow like ``sqrt(n)`` instead.

Nothing here is fitted to data. ``lambda`` follows from the probability of a false alarm we
accept for a whole check (:data:`FALSE_ALARM`, union bound over every entry and every chain), and
``n`` from the model's shape (:func:`rounding_depth`). The data only confirm it: every framework
stays far inside (see the README's figures).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import magnitude

UNIT_ROUNDOFF = {"float32": 2.0**-24, "float64": 2.0**-53}
FALSE_ALARM = 1e-6  # accepted probability that one whole check fails a correct computation


@dataclass(frozen=True)
class Shape:
    """What the rounding depth depends on: batch B, steps T, vocabulary V, hidden H, layers L,
    directions D and gates per cell G (1 for the rnn, 3 for the gru, 4 for the lstm)."""

    B: int
    T: int
    V: int
    H: int
    L: int = 1
    D: int = 1
    G: int = 1

    @staticmethod
    def of(params: dict[str, Any], X: np.ndarray) -> Shape:
        cell, L, D, H = magnitude._structure(params)  # noqa: SLF001 (one reading of the names)
        return Shape(B=X.shape[0], T=X.shape[1], V=params["W_hq"].shape[1], H=H, L=L, D=D,
                     G={"rnn": 1, "gru": 3, "lstm": 4}[cell])  # fmt: skip


def rounding_depth(shape: Shape, what: str) -> int:
    """``n``: the most roundings on any chain from the inputs to a result (``"forward"``: the
    logits and state; ``"loss"``; ``"grads"``: every gradient entry).

    Counted per operation as the worst summation order would round: a sum of ``k`` terms is ``k``
    roundings deep, whatever blocking or tree a framework uses (those only round less).
    Forward, per layer and time step: the gate pre-activation (input width ``I`` plus ``H``
    terms, plus the bias) and at most 8 elementwise operations after it (the lstm's). Output: an
    ``H D``-term matmul and a bias; the softmax: a shift, ``exp``, a ``V``-term sum, ``log``; the
    loss: a mean of ``B T`` terms. Backward: ``(p - y) / N``, a ``V``-term matmul into the top
    layer, per step a ``G H``-term matmul plus 8 elementwise operations, into a lower layer a
    ``G H``-term matmul, and the weight gradients' sum over all ``B T`` tokens.
    """
    s = shape
    N = s.B * s.T
    inputs = [s.V] + [s.H * s.D] * (s.L - 1)
    forward = sum(s.T * (width + s.H + 1 + 8) for width in inputs)
    head = s.H * s.D + 1 + (1 + 1 + s.V + 1)
    if what == "forward":
        return forward + head
    if what == "loss":
        return forward + head + N
    if what == "grads":
        backward = 2 + s.V + s.L * s.T * (s.G * s.H + 8) + (s.L - 1) * s.G * s.H + N
        return forward + head + backward
    raise ValueError(f"unknown result {what!r}; use forward, loss or grads")


def confidence(
    n: int, entries: int, false_alarm: float = FALSE_ALARM, u: float = 2.0**-24
) -> float:
    """``lambda`` such that ``entries`` results of depth ``n`` all stay inside their bounds with
    probability at least ``1 - false_alarm`` (Higham & Mary's tail, union bound)."""
    return math.sqrt(2.0 * math.log(2.0 * n * max(entries, 1) / false_alarm)) / (1.0 - u)


def gamma(n: int, lam: float, u: float) -> float:
    """Higham & Mary's ``gamma~_n(lambda)``, about ``lambda sqrt(n) u``."""
    return math.expm1(lam * math.sqrt(n) * u + n * u * u / (1.0 - u))


@dataclass(frozen=True)
class Bound:
    """A componentwise bound: ``|actual - exact| <= factor * magnitude`` entry by entry."""

    factor: float  # gamma_n(lambda)
    n: int
    lam: float

    def allowed(self, magnitude_: np.ndarray) -> np.ndarray:
        return self.factor * np.asarray(magnitude_, dtype=np.float64)


def bound_for(shape: Shape, what: str, dtype: str, entries: int) -> Bound:
    """The bound for ``entries`` results of kind ``what`` computed in ``dtype``."""
    u = UNIT_ROUNDOFF[dtype]
    n = rounding_depth(shape, what)
    lam = confidence(n, entries, u=u)
    return Bound(gamma(n, lam, u), n, lam)


def reduction_allowance(magnitude: float, batch_tokens: int, batches: int, vocab: int,
                        dtype: str) -> float:  # fmt: skip
    """How far a correct ``dtype`` evaluation's perplexity may be from the float64 one
    (relative) through the rounding of its loss reductions, which every member computes alike.

    Each batch's loss is a mean over its ``N = batch_tokens`` tokens of ``max + log sum exp(o -
    max) - o_y``: per token a shift, ``exp``, a ``V``-term sum, ``log`` and two sums, then the
    ``N``-term sum and the division: ``n = N + V + 5`` roundings deep in the worst order. With
    ``magnitude`` the token-weighted mean of the terms' absolute values (see
    :class:`rnn_backends.truth.Evaluation`), the evaluation's mean loss is within ``gamma_n(lambda)
    magnitude`` (``lambda`` by the union bound over the ``batches``), and its perplexity,
    ``exp`` of it, within ``expm1`` of that, relative.
    """
    u = UNIT_ROUNDOFF[dtype]
    n = batch_tokens + vocab + 5
    return math.expm1(gamma(n, confidence(n, batches, u=u), u) * magnitude)


@dataclass(frozen=True)
class Ratio:
    """The worst entry of a check: ``ratio`` = |actual - exact| / allowed (fails above 1)."""

    ratio: float
    index: tuple[int, ...]
    deviation: float
    allowed: float

    @property
    def ok(self) -> bool:
        return self.ratio <= 1.0


def worst_ratio(actual: Any, exact: Any, allowed: Any) -> Ratio:
    """The entry where ``|actual - exact|`` is largest against ``allowed`` (all the same shape).

    An entry whose allowance is 0 must be exact (its ratio is 0 or inf); NaN is inf.
    """
    actual = np.asarray(actual, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    allowed = np.broadcast_to(np.asarray(allowed, dtype=np.float64), exact.shape)
    if actual.shape != exact.shape:
        raise ValueError(f"shapes differ: {actual.shape} vs {exact.shape}")
    dev = np.abs(actual - exact)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(dev == 0, 0.0, dev / allowed)
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    if ratio.size == 0:
        return Ratio(0.0, (), 0.0, 0.0)
    idx = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
    return Ratio(float(ratio[idx]), tuple(int(i) for i in idx), float(dev[idx]),
                 float(allowed[idx]))  # fmt: skip


@dataclass(frozen=True)
class OneStep:
    """Float64 truth and allowances for one evaluation at given weights (every result the
    backend computes: loss, gradients, logits, final state), from :func:`one_step`."""

    loss: float
    grads: dict[str, np.ndarray]
    logits: np.ndarray
    state: tuple[np.ndarray, ...]
    allowed_loss: float
    allowed_grads: dict[str, np.ndarray]
    allowed_logits: np.ndarray
    allowed_state: tuple[np.ndarray, ...]
    bounds: dict[str, Bound]

    def check_grads(self, grads: dict[str, Any]) -> dict[str, Ratio]:
        """The worst entry of every gradient tensor against its allowance."""
        return {k: worst_ratio(grads[k], self.grads[k], self.allowed_grads[k]) for k in self.grads}

    def check_loss(self, loss: float) -> Ratio:
        return worst_ratio(loss, self.loss, self.allowed_loss)

    def check_logits(self, logits: Any) -> Ratio:
        return worst_ratio(logits, self.logits, self.allowed_logits)

    def check_state(self, state: tuple[Any, ...]) -> list[Ratio]:
        """One ratio per state tensor (``(h,)`` or ``(h, c)``, each (L * D, B, H))."""
        return [worst_ratio(s, t, a)
                for s, t, a in zip(state, self.state, self.allowed_state, strict=True)]  # fmt: skip


def one_step(params: dict[str, Any], X: np.ndarray, Y: np.ndarray, state: Any = None, *,
             dtype: str = "float32", gru_reset_after: bool = True) -> OneStep:  # fmt: skip
    """The float64 oracle's loss, gradients, logits and final state at ``params`` (taken as
    given: pass the float32 weights the backend computes with), and what a correct ``dtype``
    computation may differ from them entry by entry.

    Arguments:
        params: canonical weights; X, Y: int ids (B, T); state: None or the public state tuple.
    """
    mags = magnitude.loss_and_grads(params, X, Y, state, gru_reset_after=gru_reset_after)
    shape = Shape.of(params, X)
    n_grads = sum(int(np.size(p)) for p in params.values())
    bounds = {
        "loss": bound_for(shape, "loss", dtype, 1),
        "grads": bound_for(shape, "grads", dtype, n_grads),
        "forward": bound_for(shape, "forward", dtype,
                             mags.logits.v.size + sum(s.v.size for s in mags.state)),
    }  # fmt: skip
    return OneStep(
        loss=float(mags.loss.v),
        grads={k: g.v for k, g in mags.grads.items()},
        logits=mags.logits.v,
        state=tuple(s.v for s in mags.state),
        allowed_loss=float(bounds["loss"].allowed(mags.loss.s)),
        allowed_grads={k: bounds["grads"].allowed(g.s) for k, g in mags.grads.items()},
        allowed_logits=bounds["forward"].allowed(mags.logits.s),
        allowed_state=tuple(bounds["forward"].allowed(s.s) for s in mags.state),
        bounds=bounds,
    )


__all__ = [
    "FALSE_ALARM",
    "UNIT_ROUNDOFF",
    "Bound",
    "OneStep",
    "Ratio",
    "Shape",
    "bound_for",
    "confidence",
    "gamma",
    "one_step",
    "reduction_allowance",
    "rounding_depth",
    "worst_ratio",
]
