"""The shared suite: every framework and every variant against the NumPy oracle.

A new framework joins by adding its adapter; these tests then run for it unchanged.
float64 results match the oracle to 1e-10 (relative, per tensor), and a 50-step float64 training
run reproduces its loss curve to 1e-9. float32 results are judged against the float64 oracle on the
same (float32) weights with the compare job's own bound: every entry within the rounding model's
componentwise allowance (``rnn_backends.numerics``).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_backend, rel_err

from rnn_backends import ModelConfig, init_params, numerics, reference

F64_TOL = 1e-10


def _oracle(params, X, Y, h0=None):
    p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    logits, h_last, _ = reference.forward(p64, X, h0)
    loss, grads, _ = reference.loss_and_grads(p64, X, Y, h0)
    return logits, h_last, loss, grads


def test_forward_loss_grads_match_oracle(framework_variant, small_model):
    name, variant = framework_variant
    _, params, X, Y = small_model
    backend = make_backend(name, "float64", variant)
    logits, h_last, loss, grads = _oracle(params, X, Y)

    got_logits, (got_h,) = backend.forward(params, X)
    assert got_logits.dtype == np.float64
    assert rel_err(got_logits, logits) <= F64_TOL
    assert got_h.shape == (1, *h_last.shape)
    assert rel_err(got_h[0], h_last) <= F64_TOL

    got_loss, got_grads = backend.loss_and_grads(params, X, Y)
    assert abs(got_loss - loss) / loss <= F64_TOL
    assert set(got_grads) == set(grads)
    for k in grads:
        assert got_grads[k].shape == grads[k].shape, k
        assert rel_err(got_grads[k], grads[k]) <= F64_TOL, k


def test_float32_within_the_rounding_bound(framework_variant, small_model):
    """float32 logits, state, loss and gradients against the float64 oracle on the same float32
    weights, entry by entry, with the compare job's componentwise bound."""
    name, variant = framework_variant
    _, params, X, Y = small_model
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    one = numerics.one_step(p32, X, Y, dtype="float32")
    backend = make_backend(name, "float32", variant)

    got_logits, state = backend.forward(p32, X)
    assert got_logits.dtype == np.float32
    assert one.check_logits(got_logits).ok, one.check_logits(got_logits)
    assert all(r.ok for r in one.check_state(state)), one.check_state(state)
    got_loss, got_grads = backend.loss_and_grads(p32, X, Y)
    assert one.check_loss(got_loss).ok, one.check_loss(got_loss)
    assert set(got_grads) == set(one.grads)
    for k, ratio in one.check_grads(got_grads).items():
        assert got_grads[k].dtype == np.float32, k
        assert ratio.ok, (k, ratio)


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


# Each optimizer with a schedule and a warmup (every schedule is used); the peak rates make the
# 50-step run learn while clipping at 0.3 engages on many steps.
OPTIMIZER_RUNS = [
    ("sgd", 2.0, {}, "step", 5),
    ("momentum", 0.4, {"momentum": 0.8}, "cosine", 10),
    ("nesterov", 0.3, {"momentum": 0.9}, "constant", 5),
    ("adam", 0.05, {"beta2": 0.99}, "cosine", 10),
    ("adamw", 0.05, {"weight_decay": 0.5}, "step", 5),
]


def run_with_optimizer(backend, params, batches, kind, lr, hyper, schedule, warmup, clip):
    """50 steps of ``backend`` and of the oracle; the backend's rates come from optim.Schedule,
    the oracle's from its own schedule_lr. Returns (final tensors, oracle params, rows of (loss,
    oracle loss, norm, oracle norm))."""
    from rnn_backends import optim

    opt = optim.Optimizer(kind, **hyper)
    plan = optim.Schedule(schedule, warmup, len(batches), None, 0.5)
    native, opt_state = backend.prepare(params), None
    oracle = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    o_state = reference.optimizer_state(oracle, kind)
    rows = []
    for step, (X, Y) in enumerate(batches):
        res = backend.train_step(native, X, Y, lr=plan.lr(lr, step), grad_clip=clip,
                                 optimizer=opt, opt_state=opt_state)  # fmt: skip
        native, opt_state = res.params, res.opt_state
        o_lr = reference.schedule_lr(schedule, lr, step, warmup_steps=warmup,
                                     total_steps=len(batches), decay_rate=0.5)  # fmt: skip
        oracle, o_loss, o_norm, _, o_state = reference.model_optimizer_step(
            oracle, X, Y, None, o_lr, clip, o_state, kind, **hyper
        )
        rows.append((res.loss, o_loss, res.grad_norm, o_norm))
    assert opt_state.step == o_state["step"] == len(batches)
    return native, oracle, np.array(rows)


@pytest.mark.parametrize("kind,lr,hyper,schedule,warmup", OPTIMIZER_RUNS,
                         ids=[r[0] for r in OPTIMIZER_RUNS])  # fmt: skip
def test_fifty_float64_steps_of_each_optimizer_reproduce_oracle(
    framework_variant, kind, lr, hyper, schedule, warmup
):
    name, variant = framework_variant
    cfg = ModelConfig(vocab_size=13, hidden_size=9, init_sigma=0.3)
    params = init_params(cfg, seed=2)
    backend = make_backend(name, "float64", variant)
    native, oracle, rows = run_with_optimizer(backend, params, _batches(13, 50), kind, lr, hyper,
                                              schedule, warmup, clip=0.3)  # fmt: skip
    losses, o_losses, norms, o_norms = rows.T
    assert o_losses[-1] < o_losses[0] - 0.5  # it learns
    assert (o_norms > 0.3).sum() >= 10  # and clipping engages
    assert np.max(np.abs(losses - o_losses)) <= 1e-9
    assert np.max(np.abs(norms - o_norms) / o_norms) <= 1e-9
    final = backend.export(native)
    for k in params:
        assert rel_err(final[k], oracle[k]) <= 1e-9, k


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


def test_carried_state_continues_the_sequence(framework_variant, small_model):
    """The state ``train_step`` and ``loss`` return starts the next batch where the last one
    ended: over two halves of a batch it gives what the oracle gets over the whole batch."""
    name, variant = framework_variant
    _, params, X, Y = small_model
    backend = make_backend(name, "float64", variant)
    (X1, X2), (Y1, Y2) = np.split(X, [2], axis=1), np.split(Y, [2], axis=1)
    logits, h_end, _ = reference.forward(params, X)
    second_half = reference.cross_entropy(logits[:, 2:], Y2)
    # From the zero state the second half's loss is another number: the state matters here.
    assert abs(reference.cross_entropy(reference.forward(params, X2)[0], Y2) - second_half) > 1e-3

    _, state = backend.loss(params, X1, Y1)
    loss, state = backend.loss(params, X2, Y2, state)
    assert abs(loss - second_half) / second_half <= F64_TOL
    # lr=0 leaves the weights as they were, so two carried steps are the whole batch too.
    res = backend.train_step(params, X1, Y1, lr=0.0, grad_clip=1.0)
    res = backend.train_step(res.params, X2, Y2, res.state, lr=0.0, grad_clip=1.0)
    assert abs(res.loss - second_half) / second_half <= F64_TOL
    assert rel_err(backend.to_numpy(res.state[0]), h_end) <= F64_TOL


def test_clip_of_a_zero_gradient_is_no_step_and_no_nan(framework_name):
    """``max_norm / ||g||`` is inf for a zero gradient, also with max_norm = inf (no clipping):
    the scale is then 1, the update 0, and nothing turns into NaN."""
    from rnn_backends import optim

    backend = make_backend(framework_name, "float64")
    params = {"a": backend.asarray(np.arange(6.0).reshape(2, 3)), "b": backend.asarray(np.ones(3))}
    zeros = {k: backend.asarray(np.zeros(backend.to_numpy(v).shape)) for k, v in params.items()}
    for kind in optim.OPTIMIZERS:
        opt = optim.Optimizer(kind)
        slots = backend.init_opt_state(opt, params).slots
        rates = optim.step_rates(opt, 0, 0.7)
        for max_norm in (0.5, float("inf")):
            new, new_slots, norm = optim.update(backend.ops, opt, params, zeros, slots, rates,
                                                max_norm)  # fmt: skip
            assert float(backend.to_numpy(norm)) == 0.0
            for k in params:
                got = backend.to_numpy(new[k])
                assert np.array_equal(got, backend.to_numpy(params[k])), (kind, k)
                for slot in new_slots.values():
                    assert not np.any(backend.to_numpy(slot[k])), (kind, k)


def test_strict_refuses_the_fallback_that_the_default_takes(framework_name):
    """A model the fast step does not cover (here a GRU) runs the generic step by default, and is
    refused by a strict backend, so that a run labelled "fast" times the fast step or nothing."""
    from rnn_backends import get_backend
    from rnn_backends.errors import ConfigError

    make_backend(framework_name)  # skips if missing
    cfg = ModelConfig(vocab_size=5, hidden_size=3, cell="gru", init_sigma=0.5)
    params = init_params(cfg, seed=1)
    X, Y = _batches(5, 1, B=2, T=4)[0]
    oracle, o_loss, _, _ = reference.model_train_step(params, X, Y, None, 0.5, 1.0)
    loose = get_backend(framework_name, device="cpu", variant="fast")
    res = loose.train_step(params, X, Y, lr=0.5, grad_clip=1.0)
    assert abs(res.loss - o_loss) / o_loss <= F64_TOL
    for k, v in loose.export(res.params).items():
        assert rel_err(v, oracle[k]) <= F64_TOL, k
    strict = get_backend(framework_name, device="cpu", variant="fast", strict=True)
    with pytest.raises(ConfigError, match=r"strict=True .*one-layer tanh RNN.*strict=False"):
        strict.train_step(params, X, Y, lr=0.5, grad_clip=1.0)
    rnn = init_params(ModelConfig(vocab_size=5, hidden_size=3), seed=1)
    strict.train_step(rnn, X, Y, lr=0.5, grad_clip=1.0)  # covered: runs


def test_negative_grad_clip_is_refused(backend_name, small_model):
    from rnn_backends.errors import ConfigError

    _, params, X, Y = small_model
    backend = make_backend(backend_name)
    with pytest.raises(ConfigError, match="grad_clip must be a number >= 0"):
        backend.train_step(params, X, Y, lr=0.1, grad_clip=-1.0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_concat_trick_identity(backend_name, dtype):
    """Integer-valued inputs small enough that every product and partial sum is exact in float32:
    both sides must then equal the integer result exactly, computed here in Python integers."""
    backend = make_backend(backend_name, dtype)
    rng = np.random.default_rng(0)
    X, H = rng.integers(-8, 9, size=(5, 7)), rng.integers(-8, 9, size=(5, 4))
    W_xh, W_hh = rng.integers(-8, 9, size=(7, 4)), rng.integers(-8, 9, size=(4, 4))
    expected = [
        [
            sum(int(X[i, k]) * int(W_xh[k, j]) for k in range(7))
            + sum(int(H[i, k]) * int(W_hh[k, j]) for k in range(4))
            for j in range(4)
        ]
        for i in range(5)
    ]
    left, right = backend.concat_trick(*(a.astype(dtype) for a in (X, W_xh, H, W_hh)))
    assert left.dtype == right.dtype == np.dtype(dtype)
    assert left.tolist() == expected
    assert right.tolist() == expected


def test_unknown_variant_is_a_clear_error(backend_name):
    from rnn_backends.errors import ConfigError

    make_backend(backend_name)  # skips if missing
    from rnn_backends import get_backend

    with pytest.raises(ConfigError, match="no variant 'bogus'"):
        get_backend(backend_name, variant="bogus")
