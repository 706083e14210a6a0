"""The fast step of ``rnn_backends.fastpath`` in every framework, against the NumPy oracle.

The shared suite already runs every ``fast`` training step through it (``train_step``); this file
checks its loss, every gradient and the final state directly, from a carried initial state, and
that a model it does not cover is refused so the generic step runs.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_backend, rel_err

from rnn_backends import fastpath, reference


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_fast_loss_grads_and_state_match_oracle(framework_name, dtype, tol, small_model):
    cfg, params, X, Y = small_model
    params = {k: v.astype(dtype) for k, v in params.items()}
    h0 = np.random.default_rng(2).uniform(-0.9, 0.9, size=(X.shape[0], cfg.hidden_size))
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    loss, grads, h_last = reference.loss_and_grads(p64, X, Y, h0)

    backend = make_backend(framework_name, dtype, "fast")
    native = backend.prepare(params)
    got_loss, got_grads, got_h = fastpath.loss_and_grads(
        backend._make_fast_ops(), native, backend._ids(X), backend._ids(Y),
        backend.asarray(h0.astype(dtype)),
    )
    assert abs(float(backend.to_numpy(got_loss)) - loss) / loss <= tol
    assert rel_err(backend.to_numpy(got_h), h_last) <= tol
    for k, g in grads.items():
        got = backend.to_numpy(got_grads[k])
        assert got.shape == g.shape, k
        assert rel_err(got, g) <= tol, k


def test_other_models_are_refused_so_the_generic_step_runs():
    params = {k: np.zeros(1) for k in ("W_xh", "W_hh", "b_h", "l1.W_xh", "W_hq", "b_q")}
    with pytest.raises(NotImplementedError, match="one-layer tanh RNN"):
        fastpath.check_applies(params)


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-10), ("float32", 1e-5)])
def test_fast_evaluation_loss_and_state_match_oracle(framework_name, dtype, tol, small_model):
    """``backend.loss`` of the fast variant runs the fast step's forward pass alone."""
    cfg, params, X, Y = small_model
    params = {k: v.astype(dtype) for k, v in params.items()}
    h0 = np.random.default_rng(2).uniform(-0.9, 0.9, size=(X.shape[0], cfg.hidden_size))
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    logits, h_last, _ = reference.forward(p64, X, h0)
    want = reference.cross_entropy(logits, Y)

    backend = make_backend(framework_name, dtype, "fast")
    got, got_h = fastpath.loss(backend._make_fast_ops(), backend.prepare(params),
                               backend._ids(X), backend._ids(Y), backend.asarray(h0.astype(dtype)))
    assert abs(float(backend.to_numpy(got)) - want) / want <= tol
    assert rel_err(backend.to_numpy(got_h), h_last) <= tol
    value, state = backend.loss(params, X, Y, (h0[None].astype(dtype),))
    assert abs(value - want) / want <= tol
    assert rel_err(backend.to_numpy(state[0]), h_last) <= tol


def test_evaluation_of_other_models_falls_back_unless_strict(framework_name):
    from rnn_backends import ModelConfig, get_backend, init_params
    from rnn_backends.errors import ConfigError

    make_backend(framework_name)  # skips if missing
    params = init_params(ModelConfig(vocab_size=5, hidden_size=3, cell="gru", init_sigma=0.5),
                         seed=1)
    rng = np.random.default_rng(0)
    X, Y = rng.integers(0, 5, (2, 4)), rng.integers(0, 5, (2, 4))
    logits, _, _ = reference.model_forward(params, X)
    want = reference.cross_entropy(logits, Y)
    loose = get_backend(framework_name, device="cpu", variant="fast")
    assert abs(loose.loss(params, X, Y)[0] - want) / want <= 1e-10
    strict = get_backend(framework_name, device="cpu", variant="fast", strict=True)
    with pytest.raises(ConfigError, match=r"strict=True .*one-layer tanh RNN"):
        strict.loss(params, X, Y)
