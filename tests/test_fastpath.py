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
