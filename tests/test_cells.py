"""GRU, LSTM, deep and bidirectional models: the oracle's hand-written BPTT against finite
differences, then every framework and variant (the native fused layers included) against the
oracle, with the vanilla RNN's bounds (float64 1e-10, 50 float64 steps 1e-9; float32 the compare
job's componentwise rounding bound)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_backend, rel_err

from rnn_backends import ModelConfig, init_params, numerics, reference
from rnn_backends.config import CELL_SPECS
from rnn_backends.errors import ConfigError
from rnn_backends.params import infer_model, param_shapes

F64_TOL = 1e-10

# (cell, layers, bidirectional, gru_reset_after): small, but every cell, both GRU conventions,
# depth and both directions. (The one-layer rnn is test_backends.py's.) Each framework compiles
# every model once per variant and dtype (JAX and TensorFlow take seconds each), so the list is
# short: a deep bidirectional model exercises a one-layer one-direction model's code too.
MODELS = {
    "gru": ("gru", 1, False, True),
    "gru_before": ("gru", 1, False, False),
    "lstm": ("lstm", 1, False, True),
    "rnn_2l_bi": ("rnn", 2, True, True),
    "gru_2l_bi": ("gru", 2, True, True),
    "gru_before_2l": ("gru", 2, False, False),
    "lstm_2l": ("lstm", 2, False, True),
    "lstm_2l_bi": ("lstm", 2, True, True),
}
FORWARD = ("gru_before", "rnn_2l_bi", "gru_2l_bi", "lstm_2l_bi")  # float64, from a given state
FLOAT32 = ("gru_2l_bi", "lstm_2l_bi")
TRAINABLE = ("gru", "gru_before_2l", "lstm_2l")  # 50 steps with the state carried
V, H, B, T = 7, 4, 3, 5


def _config(key: str, sigma: float = 0.6) -> ModelConfig:
    cell, layers, bi, after = MODELS[key]
    return ModelConfig(V, H, cell=cell, num_layers=layers, bidirectional=bi,
                       gru_reset_after=after, init_sigma=sigma)


def _model(key: str, seed: int = 0):
    """Weights, nonzero biases, ids and a random initial state for model ``key``."""
    cfg = _config(key)
    params = init_params(cfg, seed)
    rng = np.random.default_rng(seed + 100)
    for k in params:
        if k.split(".")[-1].startswith("b_"):
            params[k] = rng.normal(0, 0.4, params[k].shape)
    X = rng.integers(0, V, (B, T))
    Y = rng.integers(0, V, (B, T))
    LD = cfg.num_layers * cfg.num_directions
    state = tuple(rng.uniform(-0.8, 0.8, (LD, B, H)) for _ in CELL_SPECS[cfg.cell].states)
    return cfg, params, X, Y, state


# The native layers that compute the GRU with the reset gate after the matmul only: torch.nn.GRU,
# Gluon's rnn.GRU and Flax's GRUCell. (Keras's GRU does both.)
NO_RESET_BEFORE = {"torch", "mxnet", "jax"}


def _backend(framework_variant, dtype, cfg):
    name, variant = framework_variant
    if variant == "native" and not cfg.gru_reset_after and name in NO_RESET_BEFORE:
        pytest.skip(f"{name}'s native layer cannot express the reset-before GRU "
                    "(test_native_layer_refuses_or_computes_the_reset_before_gru)")
    backend = make_backend(name, dtype, variant)
    if backend.gru_reset_after != cfg.gru_reset_after:
        backend = type(backend)(dtype=dtype, device="cpu", variant=variant,
                                gru_reset_after=cfg.gru_reset_after)
    return backend


def test_native_layer_refuses_or_computes_the_reset_before_gru(framework_name):
    """A native layer either computes the reset-before GRU exactly or refuses it with the reason;
    it never approximates it with the other convention."""
    cfg, params, X, _, state = _model("gru_before")
    backend = type(make_backend(framework_name))(device="cpu", variant="native",
                                                  gru_reset_after=False)
    if framework_name in NO_RESET_BEFORE:
        with pytest.raises(ConfigError, match="reset-before GRU.*gru_reset_after=True"):
            backend.forward(params, X, state)
    else:
        logits, _, _ = reference.model_forward(params, X, state, gru_reset_after=False)
        assert rel_err(backend.forward(params, X, state)[0], logits) <= F64_TOL


# --- the oracle --------------------------------------------------------------------------------


def _finite_differences(params, X, Y, state, after, eps=1e-6):
    grads = {}
    for name, value in params.items():
        g = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            orig = value[idx]
            losses = []
            for x in (orig + eps, orig - eps):
                value[idx] = x
                logits = reference.model_forward(params, X, state, gru_reset_after=after)[0]
                losses.append(reference.cross_entropy(logits, Y))
            value[idx] = orig
            g[idx] = (losses[0] - losses[1]) / (2 * eps)
        grads[name] = g
    return grads


@pytest.mark.parametrize("key", list(MODELS))
def test_oracle_bptt_matches_finite_differences(key):
    cfg, params, X, Y, state = _model(key)
    _, grads, _ = reference.model_loss_and_grads(
        params, X, Y, state, gru_reset_after=cfg.gru_reset_after
    )
    numeric = _finite_differences(params, X, Y, state, cfg.gru_reset_after)
    assert set(grads) == set(param_shapes(cfg))
    for name in params:
        assert np.abs(grads[name]).max() > 1e-4, name  # the relative check has teeth
        assert rel_err(grads[name], numeric[name]) < 1e-6, name


def test_gru_conventions_differ_and_match_the_book_equations():
    cfg, params, X, _, (h0,) = _model("gru")
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    eye = np.eye(V)
    for after in (True, False):
        logits, (h_last,), _ = reference.model_forward(params, X, (h0,), gru_reset_after=after)
        h = h0[0]
        for t in range(T):
            x = eye[X[:, t]]
            z = sig(x @ params["W_xz"] + h @ params["W_hz"] + params["b_z"])
            r = sig(x @ params["W_xr"] + h @ params["W_hr"] + params["b_r"])
            rec = r * (h @ params["W_hh"]) if after else (r * h) @ params["W_hh"]
            h = z * h + (1 - z) * np.tanh(x @ params["W_xh"] + rec + params["b_h"])
        np.testing.assert_allclose(h_last[0], h, rtol=1e-13)
        np.testing.assert_allclose(logits[:, -1], h @ params["W_hq"] + params["b_q"], rtol=1e-12)
    before = reference.model_forward(params, X, (h0,), gru_reset_after=False)[0]
    after_ = reference.model_forward(params, X, (h0,), gru_reset_after=True)[0]
    assert rel_err(before, after_) > 1e-3


def test_bidirectional_backward_direction_reads_the_future():
    """Changing the last token changes the first step's output only through the backward
    direction: a bidirectional model sees the future (which is why it cannot be trained here)."""
    cfg, params, X, _, _ = _model("gru_2l_bi")
    X2 = X.copy()
    X2[:, -1] = (X2[:, -1] + 1) % V
    first = reference.model_forward(params, X)[0][:, 0]
    assert rel_err(reference.model_forward(params, X2)[0][:, 0], first) > 1e-6
    cfg, params, X, _, _ = _model("gru_before_2l")  # one direction: the past only
    X2 = X.copy()
    X2[:, -1] = (X2[:, -1] + 1) % V
    before = reference.model_forward(params, X, gru_reset_after=False)[0][:, :-1]
    after = reference.model_forward(params, X2, gru_reset_after=False)[0][:, :-1]
    assert np.array_equal(before, after)


def test_parameter_names_and_shapes():
    shapes = param_shapes(_config("lstm_2l_bi"))
    assert list(shapes)[:3] == ["W_xi", "W_hi", "b_i"]
    assert shapes["W_xc"] == (V, H) and shapes["rev.W_xc"] == (V, H)
    assert shapes["l1.W_xi"] == (2 * H, H) and shapes["l1.rev.W_hc"] == (H, H)
    assert shapes["W_hq"] == (2 * H, V)
    assert len(shapes) == 2 * 2 * 12 + 2
    rnn = param_shapes(ModelConfig(V, H))
    assert list(rnn) == ["W_xh", "W_hh", "b_h", "W_hq", "b_q"]  # old checkpoints still load
    for key in MODELS:
        cfg = _config(key, sigma=0.01)
        assert infer_model(init_params(cfg), cfg.gru_reset_after) == cfg


def test_bidirectional_model_refuses_training():
    from rnn_backends.data.corpus import load_corpus
    from rnn_backends.train import train

    cfg = ModelConfig(V, H, bidirectional=True)
    with pytest.raises(ConfigError, match="bidirectional.*cannot be trained.*predict"):
        cfg.check_trainable()
    corpus = load_corpus("default")
    model = ModelConfig(len(corpus.vocab), 4, cell="gru", bidirectional=True)
    from rnn_backends import TrainConfig, get_backend

    with pytest.raises(ConfigError, match="bidirectional"):
        train(get_backend("numpy"), corpus, model, TrainConfig(max_epochs=1, batch_size=8,
                                                               num_steps=4, num_train=16,
                                                               num_val=8), progress=False)
    ModelConfig(V, H, cell="lstm", num_layers=3).check_trainable()  # deep is fine
    before = ModelConfig(V, H, cell="gru", gru_reset_after=False)
    with pytest.raises(ConfigError, match="gru_reset_after=False"):
        before.check_trainable(get_backend("numpy"))
    before.check_trainable(get_backend("numpy", gru_reset_after=False))


# --- every framework and variant against the oracle ---------------------------------------------


@pytest.mark.parametrize("key", FORWARD)
def test_forward_loss_grads_and_state_match_oracle(framework_variant, key):
    cfg, params, X, Y, state = _model(key)
    after = cfg.gru_reset_after
    logits, final, _ = reference.model_forward(params, X, state, gru_reset_after=after)
    loss, grads, _ = reference.model_loss_and_grads(params, X, Y, state, gru_reset_after=after)

    backend = _backend(framework_variant, "float64", cfg)
    got_logits, got_state = backend.forward(params, X, state)
    assert rel_err(got_logits, logits) <= F64_TOL
    assert len(got_state) == len(final)
    for got, want in zip(got_state, final, strict=True):
        assert got.shape == want.shape == (cfg.num_layers * cfg.num_directions, B, H)
        assert rel_err(got, want) <= F64_TOL
    got_loss, got_grads = backend.loss_and_grads(params, X, Y, state)
    assert abs(got_loss - loss) / loss <= F64_TOL
    assert set(got_grads) == set(grads)
    for k in grads:
        assert rel_err(got_grads[k], grads[k]) <= F64_TOL, k


@pytest.mark.parametrize("key", FLOAT32)
def test_float32_loss_and_grads_match_oracle(framework_variant, key):
    """From the zero state, against the float64 oracle on the same (rounded) weights, entry by
    entry within the compare job's componentwise rounding bound."""
    cfg, params, X, Y, _ = _model(key)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    one = numerics.one_step(p32, X, Y, dtype="float32", gru_reset_after=cfg.gru_reset_after)
    backend = _backend(framework_variant, "float32", cfg)
    got_loss, got_grads = backend.loss_and_grads(p32, X, Y)
    assert one.check_loss(got_loss).ok, one.check_loss(got_loss)
    for k, ratio in one.check_grads(got_grads).items():
        assert got_grads[k].dtype == np.float32
        assert ratio.ok, (k, ratio)


def _batches(n, seed=11, B=6, T=8):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        X = (rng.integers(0, V, size=(B, 1)) + np.arange(T)) % V
        noise = rng.random((B, T)) < 0.1
        out.append((np.where(noise, rng.integers(0, V, size=(B, T)), X), (X + 1) % V))
    return out


@pytest.mark.parametrize("key", TRAINABLE)
def test_fifty_float64_steps_with_carried_state_reproduce_oracle(framework_variant, key):
    cfg, params, _, _, _ = _model(key)
    backend = _backend(framework_variant, "float64", cfg)
    after = cfg.gru_reset_after
    native, state = backend.prepare(params), None
    oracle, o_state = dict(params), None
    rows = []
    for X, Y in _batches(50):
        res = backend.train_step(native, X, Y, state, lr=4.0, grad_clip=0.15)
        native, state = res.params, res.state
        oracle, o_loss, o_norm, o_state = reference.model_train_step(
            oracle, X, Y, o_state, 4.0, 0.15, gru_reset_after=after
        )
        rows.append((res.loss, o_loss, res.grad_norm, o_norm))
    losses, o_losses, norms, o_norms = np.array(rows).T
    assert o_losses[-1] < o_losses[0] - 0.3  # it learns
    assert (o_norms > 0.15).sum() >= 10  # and clipping engages
    assert np.max(np.abs(losses - o_losses)) <= 1e-9
    assert np.max(np.abs(norms - o_norms) / o_norms) <= 1e-9
    final = backend.export(native)
    for k in params:
        assert rel_err(final[k], oracle[k]) <= 1e-9, k


@pytest.mark.parametrize("key", ["gru_before_2l", "lstm_2l"])
def test_fifty_float64_adamw_steps_of_deep_models_reproduce_oracle(framework_variant, key):
    """AdamW with warmup and a cosine schedule on stacked gated cells, the state carried: every
    layer's moments and updates as the oracle's (a layer the optimizer missed would drift)."""
    from rnn_backends import optim

    cfg, params, _, _, _ = _model(key)
    backend = _backend(framework_variant, "float64", cfg)
    opt = optim.Optimizer("adamw", beta2=0.99, weight_decay=0.3)
    plan = optim.Schedule("cosine", warmup_steps=10, total_steps=50)
    native, state, opt_state = backend.prepare(params), None, None
    oracle, o_state = dict(params), None
    o_opt = reference.optimizer_state(params, "adamw")
    rows = []
    for step, (X, Y) in enumerate(_batches(50)):
        res = backend.train_step(native, X, Y, state, lr=plan.lr(0.05, step), grad_clip=0.15,
                                 optimizer=opt, opt_state=opt_state)  # fmt: skip
        native, state, opt_state = res.params, res.state, res.opt_state
        lr = reference.schedule_lr("cosine", 0.05, step, warmup_steps=10, total_steps=50)
        oracle, o_loss, o_norm, o_state, o_opt = reference.model_optimizer_step(
            oracle, X, Y, o_state, lr, 0.15, o_opt, "adamw", gru_reset_after=cfg.gru_reset_after,
            beta2=0.99, weight_decay=0.3,
        )
        rows.append((res.loss, o_loss, res.grad_norm, o_norm))
    losses, o_losses, norms, o_norms = np.array(rows).T
    assert o_losses[-1] < o_losses[0] - 0.3  # it learns
    assert (o_norms > 0.15).sum() >= 10  # and clipping engages
    assert np.max(np.abs(losses - o_losses)) <= 1e-9
    assert np.max(np.abs(norms - o_norms) / o_norms) <= 1e-9
    final = backend.export(native)
    for k in params:
        assert rel_err(final[k], oracle[k]) <= 1e-9, k
