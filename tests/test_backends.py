"""The shared suite: every framework and every variant against the NumPy oracle.

A new framework joins by adding its adapter; these tests then run for it unchanged.
Tolerances (relative, per tensor): float64 1e-10, float32 1e-5; a 50-step float64 training run
reproduces the oracle's loss curve to 1e-9.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_backend, rel_err

from rnn_backends import ModelConfig, init_params, reference

F64_TOL = 1e-10
F32_TOL = 1e-5


def _oracle(params, X, Y, h0=None):
    p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    logits, h_last, _ = reference.forward(p64, X, h0)
    loss, grads, _ = reference.loss_and_grads(p64, X, Y, h0)
    return logits, h_last, loss, grads


@pytest.mark.parametrize("dtype,tol", [("float64", F64_TOL), ("float32", F32_TOL)])
def test_forward_loss_grads_match_oracle(framework_variant, dtype, tol, small_model):
    name, variant = framework_variant
    _, params, X, Y = small_model
    params = {k: v.astype(dtype) for k, v in params.items()}  # oracle sees the same values
    backend = make_backend(name, dtype, variant)
    logits, h_last, loss, grads = _oracle(params, X, Y)

    got_logits, (got_h,) = backend.forward(params, X)
    assert got_logits.dtype == np.dtype(dtype)
    assert rel_err(got_logits, logits) <= tol
    assert got_h.shape == (1, *h_last.shape)
    assert rel_err(got_h[0], h_last) <= tol

    got_loss, got_grads = backend.loss_and_grads(params, X, Y)
    assert abs(got_loss - loss) / loss <= tol
    assert set(got_grads) == set(grads)
    for k in grads:
        assert got_grads[k].shape == grads[k].shape, k
        assert rel_err(got_grads[k], grads[k]) <= tol, k


def test_initial_state_is_used_and_matches_oracle(framework_variant, small_model):
    name, variant = framework_variant
    cfg, params, X, Y = small_model
    h0 = np.random.default_rng(9).uniform(-0.9, 0.9, size=(X.shape[0], cfg.hidden_size))
    backend = make_backend(name, "float64", variant)
    logits, h_last, loss, grads = _oracle(params, X, Y, h0)
    zero_logits, _, _, _ = _oracle(params, X, Y)
    assert rel_err(zero_logits, logits) > 1e-3  # the state really changes the output

    got_logits, (got_h,) = backend.forward(params, X, (h0[None],))
    assert rel_err(got_logits, logits) <= F64_TOL
    assert rel_err(got_h[0], h_last) <= F64_TOL
    got_loss, got_grads = backend.loss_and_grads(params, X, Y, (h0[None],))
    assert abs(got_loss - loss) / loss <= F64_TOL
    for k in grads:
        assert rel_err(got_grads[k], grads[k]) <= F64_TOL, k


def test_state_carried_across_calls_equals_one_long_call(framework_variant, small_model):
    """Truncated BPTT relies on this: the final state of one batch starts the next."""
    name, variant = framework_variant
    _, params, X, _ = small_model
    backend = make_backend(name, "float64", variant)
    whole, (h_whole,) = backend.forward(params, X)
    first, state = backend.forward(params, X[:, :2])
    second, (h_end,) = backend.forward(params, X[:, 2:], state)
    assert rel_err(np.concatenate([first, second], axis=1), whole) <= F64_TOL
    assert rel_err(h_end, h_whole) <= F64_TOL


def _clipping_run(backend, params, batches, lr, clip):
    oracle_params = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    native = backend.prepare(params)
    rows = []
    for X, Y in batches:
        res = backend.train_step(native, X, Y, lr=lr, grad_clip=clip)
        native = res.params
        oracle_params, o_loss, o_norm, _ = reference.train_step(oracle_params, X, Y, None, lr, clip)
        rows.append((res.loss, o_loss, res.grad_norm, o_norm))
    return native, oracle_params, np.array(rows)


def _batches(vocab, n, seed=11, B=8, T=10):
    rng = np.random.default_rng(seed)
    # A learnable stream (a repeating pattern with noise) so the loss moves.
    out = []
    for _ in range(n):
        start = rng.integers(0, vocab, size=(B, 1))
        X = (start + np.arange(T)) % vocab
        Y = (X + 1) % vocab
        noise = rng.random((B, T)) < 0.1
        X = np.where(noise, rng.integers(0, vocab, size=(B, T)), X)
        out.append((X, Y))
    return out


def test_fifty_float64_steps_reproduce_oracle_loss_curve(framework_variant):
    name, variant = framework_variant
    cfg = ModelConfig(vocab_size=13, hidden_size=9, init_sigma=0.3)
    params = init_params(cfg, seed=2)
    backend = make_backend(name, "float64", variant)
    native, oracle_params, rows = _clipping_run(backend, params, _batches(13, 50), lr=2.0, clip=0.3)
    losses, o_losses, norms, o_norms = rows.T
    # The run must actually learn and actually clip, or it proves nothing about clipping.
    assert o_losses[-1] < o_losses[0] - 0.5
    assert (o_norms > 0.3).sum() >= 10
    assert np.max(np.abs(losses - o_losses)) <= 1e-9
    assert np.max(np.abs(norms - o_norms) / o_norms) <= 1e-9
    final = backend.export(native)
    for k in params:
        assert rel_err(final[k], oracle_params[k]) <= 1e-9, k


def test_clipping_is_applied(framework_variant):
    """One step with a gradient norm far above the threshold: the update must be scaled down."""
    name, variant = framework_variant
    cfg = ModelConfig(vocab_size=6, hidden_size=5, init_sigma=1.5)
    params = init_params(cfg, seed=4)
    X, Y = _batches(6, 1, seed=3, B=4, T=5)[0]
    backend = make_backend(name, "float64", variant)
    _, grads, _ = reference.loss_and_grads(params, X, Y)
    norm = reference.grad_norm(grads)
    clip = norm / 10
    res = backend.train_step(params, X, Y, lr=1.0, grad_clip=clip)
    new = backend.export(res.params)
    step_norm = np.sqrt(sum(np.sum((params[k] - new[k]) ** 2) for k in params))
    assert res.grad_norm == pytest.approx(norm, rel=1e-10)
    assert step_norm == pytest.approx(clip, rel=1e-10)
    unclipped = backend.export(backend.train_step(params, X, Y, lr=1.0, grad_clip=0).params)
    step_norm = np.sqrt(sum(np.sum((params[k] - unclipped[k]) ** 2) for k in params))
    assert step_norm == pytest.approx(norm, rel=1e-10)


def test_train_step_keeps_params_native_and_exports_canonical(framework_variant, small_model):
    name, variant = framework_variant
    _, params, X, Y = small_model
    backend = make_backend(name, "float32", variant)
    native = backend.prepare(params)
    assert not any(isinstance(v, np.ndarray) for v in native.values())
    res = backend.train_step(native, X, Y, lr=0.1, grad_clip=1.0)
    assert not any(isinstance(v, np.ndarray) for v in res.params.values())
    out = backend.export(res.params)
    assert {k: v.shape for k, v in out.items()} == {k: v.shape for k, v in params.items()}
    assert all(v.dtype == np.float32 for v in out.values())
    # Carried state has the batch's shape and continues the next step.
    res2 = backend.train_step(res.params, X, Y, res.state, lr=0.1, grad_clip=1.0)
    assert np.isfinite(res2.loss)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-6)])
def test_concat_trick_identity(backend_name, dtype, tol):
    backend = make_backend(backend_name, dtype)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5, 7))
    H = rng.normal(size=(5, 4))
    W_xh = rng.normal(size=(7, 4))
    W_hh = rng.normal(size=(4, 4))
    left, right = backend.concat_trick(X, W_xh, H, W_hh)
    expected = X @ W_xh + H @ W_hh  # float64 NumPy, outside the backend
    assert left.dtype == np.dtype(dtype)
    assert rel_err(left, right) <= tol
    assert rel_err(left, expected) <= tol


def test_unknown_variant_is_a_clear_error(backend_name):
    from rnn_backends.errors import ConfigError

    make_backend(backend_name)  # skips if missing
    from rnn_backends import get_backend

    with pytest.raises(ConfigError, match="no variant 'bogus'"):
        get_backend(backend_name, variant="bogus")
