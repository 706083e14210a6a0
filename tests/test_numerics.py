"""The rounding model, the absolute-value pass, the ensemble and the single-step replays, each
against an independent source: the oracle's own numbers, exact equivariance, hand-counted depths,
the closed form of the tail bound, and float32 computations that must sit inside the bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnn_backends import ModelConfig, get_backend, init_params, magnitude, numerics, reference
from rnn_backends.ensemble import Member, Permutation
from rnn_backends.shadow import public_state, sampled_steps
from rnn_backends.verdict import MARGIN, Band, Check, band_check

MODELS = [("rnn", 1, False, True), ("gru", 1, False, True), ("gru", 1, False, False),
          ("lstm", 1, False, True), ("rnn", 2, True, True), ("gru", 2, True, True),
          ("lstm", 2, False, True)]  # fmt: skip
V, H, B, T = 7, 4, 3, 5


def _model(cell, layers, bi, after, seed=1):
    cfg = ModelConfig(V, H, cell=cell, num_layers=layers, bidirectional=bi,
                      gru_reset_after=after, init_sigma=0.6)  # fmt: skip
    params = init_params(cfg, seed)
    rng = np.random.default_rng(seed + 7)
    for k in params:
        if k.split(".")[-1].startswith("b_"):
            params[k] = rng.normal(0, 0.4, params[k].shape)
    X, Y = rng.integers(0, V, (B, T)), rng.integers(0, V, (B, T))
    LD = layers * (2 if bi else 1)
    state = tuple(rng.uniform(-0.8, 0.8, (LD, B, H)) for _ in range(2 if cell == "lstm" else 1))
    return cfg, params, X, Y, state


@pytest.mark.parametrize("model", MODELS, ids=["-".join(map(str, m)) for m in MODELS])
def test_magnitude_pass_walks_the_oracles_computation(model):
    """The values the pass carries are the oracle's loss, gradients, logits and state; every
    magnitude is finite and at least the value it belongs to."""
    cfg, params, X, Y, state = _model(*model)
    after = cfg.gru_reset_after
    loss, grads, final = reference.model_loss_and_grads(params, X, Y, state, gru_reset_after=after)
    logits, _, _ = reference.model_forward(params, X, state, gru_reset_after=after)
    m = magnitude.loss_and_grads(params, X, Y, state, gru_reset_after=after)
    assert abs(m.loss.v - loss) <= 1e-13 * abs(loss)
    assert set(m.grads) == set(grads)
    for k, g in grads.items():
        assert np.abs(m.grads[k].v - g).max() <= 1e-13 * np.abs(g).max(), k
        assert np.all(np.isfinite(m.grads[k].s)) and np.all(m.grads[k].s >= np.abs(g)), k
    assert np.abs(m.logits.v - logits).max() <= 1e-13 * np.abs(logits).max()
    for got, want in zip(m.state, final, strict=True):
        assert np.abs(got.v - want).max() <= 1e-13


def test_magnitude_of_a_difference_is_the_sum():
    """A bias gradient that is a small difference of large sums gets the sums' magnitude."""
    a, b = magnitude.Dual.exact(np.array([1.0, 3.0])), magnitude.Dual.exact(np.array([1.0, 2.0]))
    d = a - b
    assert d.v.tolist() == [0.0, 1.0]
    assert d.s.tolist() == [0.0, 1.0]  # exact inputs: only the subtraction's own rounding
    total = (a * b).sum()  # 1 + 6, each product rounded, then the sum of |terms| 7
    assert total.v == 7.0 and total.s == 7.0 + 7.0


@pytest.mark.parametrize("model", MODELS, ids=["-".join(map(str, m)) for m in MODELS])
def test_float32_oracle_and_members_stay_inside_the_bound(model):
    """Legitimate float32 computations (the NumPy oracle, and under permutations) are inside the
    componentwise bound; a relative 10% error in one gradient is not (at these large weights and
    short sequences the bound is loose; the compare job's own figures are in the README)."""
    cfg, params, X, Y, state = _model(*model)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    one = numerics.one_step(p32, X, Y, dtype="float32", gru_reset_after=cfg.gru_reset_after)
    f32 = get_backend("numpy", dtype="float32", gru_reset_after=cfg.gru_reset_after)
    for seed in range(4):
        loss, grads = Member(f32, seed).loss_and_grads(p32, X, Y)
        assert one.check_loss(loss).ok
        assert all(r.ok for r in one.check_grads(grads).values()), one.check_grads(grads)
    wrong = {**grads, "b_q": grads["b_q"] * np.float32(1.1)}
    assert not one.check_grads(wrong)["b_q"].ok


def test_rounding_depth_by_hand():
    s = numerics.Shape(B=2, T=3, V=5, H=4)
    forward = 3 * (5 + 4 + 1 + 8)  # per step: V input terms, H recurrent terms, bias, 8 more
    head = 4 + 1 + (1 + 1 + 5 + 1)  # output matmul and bias; shift, exp, V-term sum, log
    assert numerics.rounding_depth(s, "forward") == forward + head
    assert numerics.rounding_depth(s, "loss") == forward + head + 6
    backward = 2 + 5 + 3 * (4 + 8) + 6
    assert numerics.rounding_depth(s, "grads") == forward + head + backward
    with pytest.raises(ValueError, match="unknown result"):
        numerics.rounding_depth(s, "logits")


def test_confidence_meets_the_false_alarm_rate():
    """Higham & Mary's tail with the union bound: 2 n m exp(-lambda^2 (1-u)^2 / 2) = p."""
    u = 2.0**-24
    for n, m in ((100, 1), (11740, 2900), (10**6, 10**5)):
        lam = numerics.confidence(n, m, 1e-6, u)
        assert 2 * n * m * math.exp(-((lam * (1 - u)) ** 2) / 2) == pytest.approx(1e-6)
    assert numerics.gamma(10**4, 8.0, u) == pytest.approx(8.0 * 100 * u, rel=1e-4)


def test_permutation_round_trip_and_equivariance():
    """A member relabels and puts back exactly; in float64 it computes the oracle's numbers."""
    cfg, params, X, Y, state = _model("lstm", 2, False, True)
    perm = Permutation.draw(3, H, 2, B)
    back = perm.params(perm.params(params), inverse=True)
    assert all(np.array_equal(back[k], params[k]) for k in params)
    assert not np.array_equal(perm.params(params)["W_hi"], params["W_hi"])
    member = Member(get_backend("numpy", dtype="float64"), 3)
    new, loss, norm, final = reference.model_train_step(params, X, Y, state, 0.5, 1.0)
    res = member.train_step(params, X, Y, state, lr=0.5, grad_clip=1.0)
    assert res.loss == pytest.approx(loss, rel=1e-13)
    assert res.grad_norm == pytest.approx(norm, rel=1e-13)
    for k in new:
        assert np.abs(res.params[k] - new[k]).max() <= 1e-14, k
    for got, want in zip(res.state, final, strict=True):
        assert np.abs(got - want).max() <= 1e-14


def test_sampled_steps_and_public_state():
    assert sampled_steps(600, 12)[:3] == [0, 1, 2] and sampled_steps(600, 12)[-1] == 599
    assert len(sampled_steps(600, 12)) <= 12
    assert sampled_steps(2, 12) == [0, 1]
    assert sampled_steps(0, 5) == [] and sampled_steps(9, 0) == []
    h = np.arange(12.0).reshape(2, 3, 2)
    (one,) = public_state([h[0]], 1)
    assert one.shape == (1, 3, 2)
    hc = public_state([np.concatenate([h, h + 100])], 2)  # an LSTM's (2 * L, B, H) carry
    assert [p.shape for p in hc] == [(2, 3, 2), (2, 3, 2)] and hc[1][0, 0, 0] == 100.0


def test_checks_and_band():
    c = Check("x", 3, 2.0, 1.0, "rule")
    assert c.ratio == 2.0 and not c.ok and "x at step 3" in c.describe()
    assert Check("x", None, 0.0, 0.0, "rule").ok
    assert not Check("x", None, float("nan"), 1.0, "rule").ok
    truth = np.array([1.0, 2.0])
    members = [truth + np.array([1e-6, 0.0])]
    inside = band_check("t", 0, truth + 5e-6, truth, members, "float32")
    outside = band_check("t", 0, truth + 2e-5, truth, members, "float32")
    assert inside.ok and not outside.ok
    assert outside.allowed == pytest.approx(MARGIN * (1e-6 - 2.0**-24))
    band = Band.of(np.ones(4), [np.array([1.0, 1.0 + 1e-7, 1.0 + 2e-3, 1.0])], 1e-9)
    assert band.cut == 2 and band.allowed()[1] == pytest.approx(MARGIN * 1e-7)
