"""What only the JAX backend has: lax.scan unrolling, the jit-compiled step and its cache, x64 and
precision flags, device placement, and Flax's SimpleCell as the native layer.

Every number is checked against the NumPy oracle or a mathematical identity.
"""

from __future__ import annotations

import importlib.metadata
from functools import partial

import numpy as np
import pytest

jax = pytest.importorskip("jax")

import jax.numpy as jnp  # noqa: E402
from conftest import adamw_steps_match_the_oracle, rel_err  # noqa: E402

from rnn_backends import ModelConfig, init_params, reference  # noqa: E402
from rnn_backends.backends.jax_backend import JaxBackend  # noqa: E402
from rnn_backends.errors import BackendUnavailableError, ConfigError  # noqa: E402

F64_TOL = 1e-10
F32_TOL = 1e-5


def _oracle_loss_and_grads(params, X, Y, h0=None):
    p64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    loss, grads, _ = reference.loss_and_grads(p64, X, Y, h0)
    return loss, grads


def _assert_grads_match(backend, params, X, Y, tol, h0=None):
    loss, grads = _oracle_loss_and_grads(params, X, Y, h0)
    state = None if h0 is None else (h0[None],)
    got_loss, got_grads = backend.loss_and_grads(params, X, Y, state)
    assert abs(got_loss - loss) / loss <= tol
    for k in grads:
        assert rel_err(got_grads[k], grads[k]) <= tol, k


@pytest.mark.parametrize("variant", ["fast", "native"])
def test_every_scan_unroll_gives_the_oracle_numbers(variant, small_model):
    """Unrolling is a cost knob: 1, a value that does not divide T, and more than T all agree."""
    if variant == "native":
        pytest.importorskip("flax")
    _, params, X, Y = small_model
    T = X.shape[1]
    h0 = np.random.default_rng(1).uniform(-0.9, 0.9, size=(X.shape[0], params["W_hh"].shape[0]))
    backend = JaxBackend("float64", device="cpu", variant=variant, unroll=1)
    for unroll in (1, 4, T + 3):
        backend.unroll = unroll  # changed on the instance: the compiled functions must follow
        _assert_grads_match(backend, params, X, Y, F64_TOL, h0)
        logits, _, _ = reference.forward(params, X, h0)
        got, _ = backend.forward(params, X, (h0[None],))
        assert rel_err(got, logits) <= F64_TOL


def test_jit_step_is_traced_once_and_matches_oracle_on_reuse(small_model, monkeypatch):
    """One compiled step serves every learning rate and every clip threshold (clipping off
    included), and stays exact each time."""
    _, params, X, Y = small_model
    backend = JaxBackend("float64", device="cpu", variant="fast")
    traces = []
    step = backend._step

    def counting(*args, **kwargs):
        traces.append(1)  # Python runs only while jax.jit traces, not on cached calls
        return step(*args, **kwargs)

    monkeypatch.setattr(backend, "_step", counting)
    native = backend.prepare(params)
    oracle = {k: v.copy() for k, v in params.items()}
    state, o_state = None, None
    for lr, clip in ((0.5, 1.0), (0.25, 0.05), (0.125, 0), (0.3, 7.0)):
        res = backend.train_step(native, X, Y, state, lr=lr, grad_clip=clip)
        oracle, o_loss, o_norm, o_state = reference.train_step(oracle, X, Y, o_state, lr, clip)
        native, state = res.params, res.state
        assert abs(res.loss - o_loss) / o_loss <= F64_TOL
        assert abs(res.grad_norm - o_norm) / o_norm <= F64_TOL
        assert rel_err(np.asarray(state[0]), o_state) <= F64_TOL
        for k, v in backend.export(native).items():
            assert rel_err(v, oracle[k]) <= F64_TOL, k
    assert len(traces) == 1
    # A new batch shape is a new program.
    backend.train_step(native, X[:, :3], Y[:, :3], lr=0.1, grad_clip=1.0)
    assert len(traces) == 2


@pytest.mark.parametrize("variant", ["fast", "concat"])
def test_jit_step_with_adam_and_a_schedule_is_traced_once(small_model, monkeypatch, variant):
    """The learning rate, the update count (Adam's bias corrections) and the clip threshold are
    traced values: six steps of AdamW at changing rates and thresholds compile one program and
    match the oracle; the optimizer is static, so another one compiles its own."""

    _, params, X, Y = small_model
    backend = JaxBackend("float64", device="cpu", variant=variant)
    traces = []
    step = backend._step

    def counting(*args, **kwargs):
        traces.append(kwargs["optimizer"].kind)
        return step(*args, **kwargs)

    monkeypatch.setattr(backend, "_step", counting)
    native, _ = adamw_steps_match_the_oracle(backend, params, X, Y, F64_TOL)
    assert traces == ["adamw"]
    backend.train_step(native, X, Y, lr=0.1, grad_clip=1.0, optimizer="momentum")
    backend.train_step(native, X, Y, lr=0.2, grad_clip=1.0, optimizer="momentum")
    assert traces == ["adamw", "momentum"]


def test_flax_native_layer_is_tanh_and_matches_oracle(small_model):
    """Large weights push the state into tanh's saturation, where relu or identity would differ
    from the oracle by orders of magnitude more than the tolerance."""
    pytest.importorskip("flax")
    _, params, X, Y = small_model
    params = dict(params, W_hh=params["W_hh"] * 5, W_xh=params["W_xh"] * 5)
    backend = JaxBackend("float64", device="cpu", variant="native")
    logits, h_last, hs = reference.forward(params, X)
    assert np.max(np.abs(hs)) > 0.99  # saturated: a non-tanh cell could not match
    got_logits, (got_h,) = backend.forward(params, X)
    assert np.all(np.abs(got_h) < 1)
    assert rel_err(got_logits, logits) <= F64_TOL
    assert rel_err(got_h[0], h_last) <= F64_TOL
    _assert_grads_match(backend, params, X, Y, F64_TOL)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_flax_parameter_tree_is_the_one_the_adapter_fills(cell):
    """If Flax renames or reshapes its cells' parameters, apply() would fail or misread them:
    compare the tree the adapter fills from canonical weights with the one Flax initialises."""
    nn = pytest.importorskip("flax.linen")
    from rnn_backends.backends.jax_backend import flax_cell_params

    cfg = ModelConfig(vocab_size=6, hidden_size=4, cell=cell)
    make = {"rnn": nn.SimpleCell, "gru": nn.GRUCell, "lstm": nn.LSTMCell}[cell]
    inputs = jnp.zeros((2, 3, cfg.vocab_size), jnp.float32)  # Flax's default param dtype
    tree = nn.RNN(make(features=cfg.hidden_size)).init(jax.random.key(0), inputs)["params"]
    filled = {"cell": flax_cell_params(cell, init_params(cfg))}
    shapes = partial(jax.tree_util.tree_map, lambda a: a.shape)
    assert shapes(filled) == shapes(tree)


@pytest.mark.parametrize("variant", JaxBackend.variants)
def test_float32_stays_float32(variant, small_model):
    """Enabling x64 must not promote float32 work to float64 (weakly typed lr and scalars)."""
    if variant == "native":
        pytest.importorskip("flax")
    _, params, X, Y = small_model
    params = {k: v.astype(np.float32) for k, v in params.items()}
    backend = JaxBackend("float32", device="cpu", variant=variant)
    native = backend.prepare(params)
    assert all(v.dtype == jnp.float32 for v in native.values())
    res = backend.train_step(native, X, Y, lr=0.1, grad_clip=1.0)
    assert all(v.dtype == jnp.float32 for v in res.params.values())
    assert res.state[0].dtype == jnp.float32
    logits, (h,) = backend.forward(params, X)
    assert logits.dtype == np.float32 and h.dtype == np.float32
    _assert_grads_match(backend, params, X, Y, F32_TOL)


def test_float64_is_really_float64_with_full_precision(small_model):
    """x64 on and matmul precision "highest", or the float64 tolerance could not be met."""
    _, params, X, _ = small_model
    backend = JaxBackend("float64", device="cpu")
    assert jax.config.jax_enable_x64
    assert str(jax.config.jax_default_matmul_precision).lower() == "highest"
    native = backend.prepare(params)
    assert all(v.dtype == jnp.float64 for v in native.values())
    assert backend._ids(X).dtype == jnp.int64
    # A difference below float32 resolution survives only in float64.
    tiny = backend.asarray(np.array([1.0 + 1e-12]))
    assert float(backend.to_numpy(tiny - 1.0)[0]) == pytest.approx(1e-12, rel=1e-3)


def test_cpu_device_places_every_array_on_the_cpu(small_model):
    _, params, X, Y = small_model
    backend = JaxBackend("float64", device="cpu")
    cpu = jax.devices("cpu")[0]
    assert backend.device == "cpu"
    native = backend.prepare(params)
    res = backend.train_step(native, X, Y, lr=0.1, grad_clip=1.0)
    for v in (*native.values(), *res.params.values(), res.state[0]):
        assert v.devices() == {cpu}


def test_gpu_request_without_a_gpu_is_a_clear_error():
    try:
        has_gpu = bool(jax.devices("gpu"))
    except RuntimeError:
        has_gpu = False
    if has_gpu:
        pytest.skip("a GPU is present here")
    with pytest.raises(BackendUnavailableError, match="no GPU"):
        JaxBackend(device="gpu")


def test_version_is_the_installed_distributions():
    version = JaxBackend(device="cpu").version()
    assert version.split()[0] == importlib.metadata.version("jax")
    try:
        flax = importlib.metadata.version("flax")
    except importlib.metadata.PackageNotFoundError:
        assert "flax" not in version
    else:
        assert version.endswith(f"(flax {flax})")


def test_options_are_validated():
    with pytest.raises(ConfigError, match="option unroll must be a positive integer, got 0"):
        JaxBackend(device="cpu", unroll=0)
    with pytest.raises(ConfigError, match="no option 'unrol'; it accepts gru_reset_after, strict, "
                                          "unroll"):
        JaxBackend(device="cpu", unrol=2)
