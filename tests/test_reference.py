"""The oracle itself, checked against independent sources: central finite differences in float64,
the concatenation identity, and properties of clipping and SGD."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_backends import ModelConfig, init_params, reference


def finite_difference_grads(params, X, Y, h0=None, eps=1e-6):
    grads = {}
    for name, value in params.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            orig = value[idx]
            value[idx] = orig + eps
            plus = reference.cross_entropy(reference.forward(params, X, h0)[0], Y)
            value[idx] = orig - eps
            minus = reference.cross_entropy(reference.forward(params, X, h0)[0], Y)
            value[idx] = orig
            g[idx] = (plus - minus) / (2 * eps)
        grads[name] = g
    return grads


@pytest.mark.parametrize("with_state", [False, True])
def test_bptt_matches_finite_differences_on_every_tensor(small_model, with_state):
    cfg, params, X, Y = small_model
    h0 = (
        np.random.default_rng(1).uniform(-0.5, 0.5, (X.shape[0], cfg.hidden_size))
        if with_state
        else None
    )
    loss, grads, _ = reference.loss_and_grads(params, X, Y, h0)
    numeric = finite_difference_grads(params, X, Y, h0)
    for name in params:
        assert rel_err(grads[name], numeric[name]) < 1e-6, name
    # Every tensor's gradient is far from zero, so the relative check has teeth.
    assert all(np.abs(grads[k]).max() > 1e-3 for k in grads)


@settings(max_examples=15, deadline=None)
@given(
    V=st.integers(2, 6),
    H=st.integers(1, 5),
    B=st.integers(1, 3),
    T=st.integers(1, 5),
    seed=st.integers(0, 10_000),
)
def test_bptt_matches_finite_differences_on_random_small_models(V, H, B, T, seed):
    cfg = ModelConfig(vocab_size=V, hidden_size=H, init_sigma=0.5)
    params = init_params(cfg, seed)
    rng = np.random.default_rng(seed)
    params["b_h"] = rng.normal(0, 0.5, H)
    X = rng.integers(0, V, (B, T))
    Y = rng.integers(0, V, (B, T))
    _, grads, _ = reference.loss_and_grads(params, X, Y)
    numeric = finite_difference_grads(params, X, Y)
    for name in params:
        scale = max(np.abs(numeric[name]).max(), 1e-3)
        assert np.abs(grads[name] - numeric[name]).max() / scale < 1e-6, name


def test_forward_equals_explicit_one_hot_formula(small_model):
    cfg, params, X, _ = small_model
    logits, h_last, hs = reference.forward(params, X)
    h = np.zeros((X.shape[0], cfg.hidden_size))
    eye = np.eye(cfg.vocab_size)
    for t in range(X.shape[1]):
        h = np.tanh(eye[X[:, t]] @ params["W_xh"] + h @ params["W_hh"] + params["b_h"])
        np.testing.assert_allclose(logits[:, t], h @ params["W_hq"] + params["b_q"], rtol=1e-13)
    np.testing.assert_allclose(h_last, h, rtol=1e-13)


def test_loss_of_uniform_logits_is_log_vocab():
    V = 9
    logits = np.zeros((2, 3, V))
    assert reference.cross_entropy(logits, np.zeros((2, 3), dtype=int)) == pytest.approx(np.log(V))


def test_concat_trick_identity():
    rng = np.random.default_rng(0)
    X, H = rng.normal(size=(4, 6)), rng.normal(size=(4, 3))
    W_xh, W_hh = rng.normal(size=(6, 3)), rng.normal(size=(3, 3))
    left, right = reference.concat_trick(X, W_xh, H, W_hh)
    np.testing.assert_allclose(left, right, rtol=1e-12, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(scale=st.floats(1e-3, 1e3), max_norm=st.floats(0.1, 10))
def test_clipping_caps_the_global_norm(scale, max_norm):
    rng = np.random.default_rng(0)
    grads = {"a": rng.normal(size=(3, 4)) * scale, "b": rng.normal(size=5) * scale}
    clipped, norm = reference.clip_grads(grads, max_norm)
    assert norm == pytest.approx(np.sqrt(sum((g**2).sum() for g in grads.values())))
    new_norm = reference.grad_norm(clipped)
    assert new_norm == pytest.approx(min(norm, max_norm), rel=1e-12)
    # direction is kept
    assert np.allclose(clipped["a"] * norm, grads["a"] * new_norm)


def test_float32_oracle_stays_float32(small_model):
    _, params, X, Y = small_model
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    logits, h, _ = reference.forward(p32, X)
    loss, grads, _ = reference.loss_and_grads(p32, X, Y)
    assert logits.dtype == np.float32 and h.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads.values())
    _, g64, _ = reference.loss_and_grads(params, X, Y)
    assert all(rel_err(grads[k], g64[k]) < 1e-5 for k in grads)
