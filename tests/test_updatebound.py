"""The derived bounds of the float32 verdict that are not magnitudes: Adam's element-wise update
(:mod:`rnn_backends.updatebound`) and a checkpoint evaluation's loss reductions
(:func:`rnn_backends.numerics.reduction_allowance`), each against float32 computed in many
orders (brute force) and a hand count."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnn_backends import numerics
from rnn_backends.updatebound import adam_allowance

U = 2.0**-24
F = np.float32
B1, B2, EPS = 0.9, 0.999, 1e-8


def _adam64(p, m, v, lr, t, decay=0.0):
    """The float64 truth of one Adam(W) update from the new slots m, v."""
    c1, c2 = 1 - B1**t, 1 - B2**t
    return p * (1 - lr * decay) - lr * (m / c1) / (np.sqrt(v / c2) + EPS)


def _adam32_orders(p, m, v, lr, t, decay=0.0):
    """The update computed in float32 from float32 slots, in every order we could think of:
    the frameworks' and the oracle's, reciprocal-then-multiply, a fused multiply-add for the
    denominator (float64 product and sum rounded once), the rate applied first, v scaled by a
    reciprocal. Returns a list of float32 results."""
    c1, c2 = 1 - B1**t, 1 - B2**t
    ss, root, eps = F(lr / c1), F(1 / math.sqrt(c2)), F(EPS)
    dens = [
        np.sqrt(v) * root + eps,
        np.sqrt(v / F(c2)) + eps,
        np.sqrt(v * (F(1) / F(c2))) + eps,
        (np.sqrt(v).astype(np.float64) * float(root) + float(eps)).astype(F),  # FMA-like
    ]
    deltas = []
    for den in dens:
        deltas += [ss * (m / den), (ss * m) / den, m * (F(1) / den) * ss,
                   F(lr) * (m / F(c1)) / den, (F(lr) * m) / F(c1) / den]  # fmt: skip
    starts = [p]
    if decay:
        starts = [p * F(1 - lr * decay), p - F(lr * decay) * p]
    return [start - d for start in starts for d in deltas]


def _slots(rng, n):
    """Slots of every kind an update meets: large, small after cancellation, tiny v near eps^2,
    exactly zero (a parameter that never had a gradient)."""
    g = rng.normal(0, 1, n) * 10.0 ** rng.uniform(-6, -1, n)
    m = g * rng.uniform(0.05, 1, n)
    m[: n // 8] *= 1e-3  # a first moment that cancelled
    v = g**2 * rng.uniform(1, 4, n)
    v[n // 8 : n // 4] = rng.uniform(0, 1, n // 8) * 1e-17  # sqrt(v) near eps
    m[-3:], v[-3:] = 0.0, 0.0
    p = rng.normal(0, 0.3, n)
    return p.astype(F).astype(np.float64), m, v


@pytest.mark.parametrize("kind", ["adam", "adamw"])
@pytest.mark.parametrize("t,lr", [(1, 1e-3), (40, 0.03), (120, 6e-6)])
def test_adam_allowance_covers_float32_in_many_orders(kind, t, lr):
    """Slots off by up to their allowance (both signs, the extremes included), then the update
    in every order: each result within the allowance beyond the rounding of the stored result;
    and some order comes close to it (the bound is not vacuous: a slot off by its whole
    allowance moves the update by nearly what the bound propagates)."""
    rng = np.random.default_rng(t)
    n = 4000
    p, m, v = _slots(rng, n)
    decay = 0.01 if kind == "adamw" else 0.0
    A_m = 1e-4 * np.abs(m).max()  # a tensor-wide slot allowance, as the band gives one
    A_v = 1e-5 * v.max()
    # What the slots below may differ by: the allowance and the rounding of storing them.
    e_m, e_v = U * np.abs(m) + A_m * (1 + U), U * np.abs(v) + A_v * (1 + U)
    allowed = adam_allowance(kind=kind, lr=lr, step=t - 1, beta1=B1, beta2=B2, eps=EPS,
                             weight_decay=decay, before=p, m=m, v=v, e_m=e_m, e_v=e_v,
                             u=U)  # fmt: skip
    truth = _adam64(p, m, v, lr, t, decay)
    worst = 0.0
    for r_m, r_v in [(-1, -1), (-1, 1), (1, -1), (1, 1), (0, 0), ("rand", "rand")]:
        rm = rng.uniform(-1, 1, n) if r_m == "rand" else r_m
        rv = rng.uniform(-1, 1, n) if r_v == "rand" else r_v
        m32 = (m + rm * A_m).astype(F)
        v32 = np.maximum(v + rv * A_v, 0).astype(F)
        for got in _adam32_orders(p.astype(F), m32, v32, lr, t, decay):
            excess = np.abs(got.astype(np.float64) - truth) - U * np.abs(truth)
            assert np.all(excess <= allowed), (kind, t, r_m, r_v, float(np.max(excess / allowed)))
            worst = max(worst, float(np.max(excess / allowed)))
    assert worst > 0.9, worst


def test_adam_allowance_by_hand():
    """Exact slots and eps far below sqrt(v): the bound is the rounding count of the longest
    chain times u |update|. Counted by hand for the oracle's order ``lr (m / c1) / (sqrt(v /
    c2) + eps)`` with every division a reciprocal and a multiply: ``v / c2`` 3 (c2 rounded,
    its reciprocal, the product), ``sqrt`` halves that and adds 1 (2.5), ``+ eps`` 1 (3.5),
    its reciprocal 1 (4.5); ``m / c1`` 3, ``lr`` times it 2 (5); the last product 1: 10.5 u.
    (The frameworks' order has 8: ``lr / c1`` 2, ``sqrt`` 1, ``* root`` 2, ``+ eps`` 1, the
    reciprocal 1, the product 1.)"""
    p = np.array([0.5, -0.25])
    m, v = np.array([3e-3, -1e-4]), np.array([4e-6, 1e-8])
    lr, t = 0.01, 7
    allowed = adam_allowance(kind="adam", lr=lr, step=t - 1, beta1=B1, beta2=B2, eps=EPS,
                             weight_decay=0.0, before=p, m=m, v=v, e_m=0.0, e_v=0.0,
                             u=U)  # fmt: skip
    update = np.abs(_adam64(p, m, v, lr, t) - p)
    np.testing.assert_allclose(allowed / (U * update), 10.5, rtol=2e-3)


def _per_token_losses(rng, N, V):
    logits = rng.normal(0, 1.5, (N, V))
    y = rng.integers(0, V, N)
    top = logits.max(1)
    log_total = np.log(np.exp(logits - top[:, None]).sum(1))
    picked = logits[np.arange(N), y]
    return top + log_total - picked, float(np.mean(np.abs(top) + log_total + np.abs(picked)))


def _means32(losses):
    """A batch mean of float32 per-token losses in many orders: one token after another (both
    ways, sorted both ways), NumPy's pairwise sum, blocks of 128 then their sum."""
    x = losses.astype(F)
    N = F(x.size)
    seq = lambda a: np.cumsum(a, dtype=F)[-1]  # noqa: E731 (strictly one after another)
    blocks = x.reshape(-1, 128)
    return [seq(x) / N, seq(x[::-1]) / N, seq(np.sort(x)) / N, seq(np.sort(x)[::-1]) / N,
            np.mean(x, dtype=F), seq(np.array([seq(b) for b in blocks], dtype=F)) / N]


def test_reduction_allowance_covers_float32_sums_in_many_orders():
    """A validation split of 4 batches of 8192 tokens: every order's evaluation within the
    allowance. And the reason it is derived, not sampled: summing one token after another
    rounds far more than NumPy's pairwise sum, which every ensemble member uses."""
    rng = np.random.default_rng(3)
    V, N, batches = 28, 8192, 4
    parts = [_per_token_losses(rng, N, V) for _ in range(batches)]
    magnitude = float(np.mean([mag for _, mag in parts]))
    allowed = numerics.reduction_allowance(magnitude, N, batches, V, "float32")
    exact = math.exp(np.mean([np.mean(x) for x, _ in parts]))
    per_order = zip(*[_means32(x) for x, _ in parts], strict=True)
    devs = [abs(math.exp(np.mean([float(b) for b in order])) - exact) / exact
            for order in per_order]  # fmt: skip
    assert max(devs) <= allowed, (max(devs), allowed)
    assert min(devs[:4]) > 4 * devs[4], devs


def test_reduction_allowance_by_hand():
    """gamma_n(lambda) of Higham and Mary with n = N + V + 5 and the union bound over the
    batches, times the magnitude, through exp: for N = 8192, V = 28 (n = 8225), one batch and
    a false alarm of 1e-6, lambda = sqrt(2 ln(2 n 1e6)) = 6.859, gamma = expm1(6.859 * 90.69
    u) = 3.708e-5; with a magnitude of 5, expm1(1.854e-4)."""
    lam = math.sqrt(2 * math.log(2 * 8225 / 1e-6))
    assert lam == pytest.approx(6.859, abs=1e-3)
    gamma = math.expm1(lam * math.sqrt(8225) * U)  # Higham and Mary's exp(...) - 1
    expected = math.expm1(gamma * 5)
    got = numerics.reduction_allowance(5.0, 8192, 1, 28, "float32")
    assert got == pytest.approx(expected, rel=1e-6)  # (their 1 - u and n u^2: below 1e-7)
    assert got == pytest.approx(1.854e-4, rel=1e-3)
