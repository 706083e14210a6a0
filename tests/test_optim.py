"""Optimizers and schedules: the oracle's against formulas written out by hand, the shared
``optim.update`` against the oracle, the oracle against PyTorch's own ``torch.optim``, and the
training loop's per-step learning rates and updates against a loop of oracle steps.

The framework adapters against the oracle over 50 steps per optimizer are in test_backends.py
(and deep models in test_cells.py); the compiled steps' trace counts in the JAX and TensorFlow
specific files; resuming with optimizer state in test_reliability.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import make_backend, rel_err

from rnn_backends import ModelConfig, TrainConfig, init_params, load_corpus, optim, reference
from rnn_backends.data.batching import CharBatches
from rnn_backends.errors import ConfigError
from rnn_backends.train import train

# Two parameters of one element each and two gradient steps: small enough to write out.
P0 = {"a": np.array([1.0]), "b": np.array([-2.0])}
G1 = {"a": np.array([0.5]), "b": np.array([-2.0])}
G2 = {"a": np.array([0.1]), "b": np.array([3.0])}


def _two_steps(kind: str, lr: float, **hyper: float) -> list[dict[str, np.ndarray]]:
    state = reference.optimizer_state(P0, kind)
    p1, state = reference.optimizer_update(P0, G1, state, kind, lr, **hyper)
    p2, state = reference.optimizer_update(p1, G2, state, kind, lr, **hyper)
    assert state["step"] == 2
    return [p1, p2]


def _by_hand_adam(p: float, g1: float, g2: float, lr: float, wd: float = 0.0) -> list[float]:
    """Adam (AdamW for wd > 0) with b1 = 0.9, b2 = 0.999, eps = 1e-8, written out per step."""
    p = p - lr * wd * p
    m1, v1 = 0.1 * g1, 0.001 * g1 * g1  # m = 0.9 * 0 + 0.1 g, v = 0.999 * 0 + 0.001 g^2
    p1 = p - lr * (m1 / 0.1) / (math.sqrt(v1 / 0.001) + 1e-8)  # c1 = 1 - 0.9, c2 = 1 - 0.999
    p = p1 - lr * wd * p1
    m2, v2 = 0.9 * m1 + 0.1 * g2, 0.999 * v1 + 0.001 * g2 * g2
    c1, c2 = 1 - 0.9**2, 1 - 0.999**2  # 0.19 and 0.001999
    p2 = p - lr * (m2 / c1) / (math.sqrt(v2 / c2) + 1e-8)
    return [p1, p2]


@pytest.mark.parametrize("kind,wd", [("adam", 0.0), ("adamw", 0.3)])
def test_oracle_adam_matches_the_formulas_by_hand(kind, wd):
    lr = 0.1
    got = _two_steps(kind, lr, weight_decay=wd)
    for name in P0:
        expected = _by_hand_adam(P0[name][0], G1[name][0], G2[name][0], lr, wd)
        for step in range(2):
            assert got[step][name][0] == pytest.approx(expected[step], rel=1e-14, abs=1e-15)
    # The first Adam step moves each weight by lr against the sign of its gradient (to eps).
    assert got[0]["a"][0] == pytest.approx(1.0 * (1 - lr * wd) - lr, rel=1e-7)
    assert got[0]["b"][0] == pytest.approx(-2.0 * (1 - lr * wd) + lr, rel=1e-7)


def test_oracle_momentum_and_nesterov_match_the_formulas_by_hand():
    lr, mu = 0.1, 0.5
    heavy = _two_steps("momentum", lr, momentum=mu)
    nesterov = _two_steps("nesterov", lr, momentum=mu)
    for name in P0:
        p, g1, g2 = P0[name][0], G1[name][0], G2[name][0]
        b1 = g1  # b = mu * 0 + g
        b2 = mu * b1 + g2
        assert heavy[0][name][0] == pytest.approx(p - lr * b1, rel=1e-15)
        assert heavy[1][name][0] == pytest.approx(p - lr * b1 - lr * b2, rel=1e-15)
        n1 = p - lr * (g1 + mu * b1)
        assert nesterov[0][name][0] == pytest.approx(n1, rel=1e-15)
        assert nesterov[1][name][0] == pytest.approx(n1 - lr * (g2 + mu * b2), rel=1e-15)
    sgd = _two_steps("sgd", lr)
    assert sgd[1]["a"][0] == pytest.approx(1.0 - lr * 0.5 - lr * 0.1, rel=1e-15)


# --- schedules -----------------------------------------------------------------------------------


def test_schedules_at_points_computed_by_hand():
    lr = 0.8
    warm = optim.Schedule("cosine", warmup_steps=4, total_steps=24)
    assert [warm.lr(lr, s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert warm.lr(lr, 4) == pytest.approx(0.8)  # the cosine starts at the peak
    assert warm.lr(lr, 14) == pytest.approx(0.4)  # halfway through the 20 after the warmup
    assert warm.lr(lr, 19) == pytest.approx(0.8 * (1 + math.cos(math.pi * 15 / 20)) / 2)
    assert warm.lr(lr, 24) == pytest.approx(0.0, abs=1e-15)  # the end; never rises again
    assert warm.lr(lr, 30) == pytest.approx(0.0, abs=1e-15)
    step = optim.Schedule("step", warmup_steps=2, decay_steps=5, decay_rate=0.5)
    assert [step.lr(lr, s) for s in (0, 1, 2, 6, 7, 11, 12)] == pytest.approx(
        [0.4, 0.8, 0.8, 0.8, 0.4, 0.4, 0.2]
    )
    thirds = optim.Schedule("step", total_steps=30)  # decay_steps None: every 10 steps
    assert [thirds.lr(1.0, s) for s in (9, 10, 19, 20, 29)] == pytest.approx(
        [1, 0.1, 0.1, 0.01, 0.01]
    )
    assert [optim.Schedule().lr(lr, s) for s in (0, 100)] == [lr, lr]


@pytest.mark.parametrize("kind", optim.SCHEDULES)
@pytest.mark.parametrize("warmup", [0, 1, 7])
def test_schedule_equals_the_oracles(kind, warmup):
    """optim.Schedule and the oracle's schedule_lr are written independently."""
    for total, decay in ((50, None), (50, 6), (9, None), (3, 1)):
        s = optim.Schedule(kind, warmup, total, decay, 0.3)
        for step in range(total):
            expected = reference.schedule_lr(kind, 0.7, step, warmup_steps=warmup,
                                             total_steps=total, decay_steps=decay,
                                             decay_rate=0.3)  # fmt: skip
            assert s.lr(0.7, step) == pytest.approx(expected, rel=1e-14, abs=1e-16), step


def test_schedule_refuses_settings_it_cannot_use():
    with pytest.raises(ConfigError, match="cosine schedule needs the run's total"):
        optim.Schedule("cosine", 3)
    with pytest.raises(ConfigError, match="schedule must be one of"):
        optim.Schedule("exponential")
    with pytest.raises(ConfigError, match="optimizer must be one of"):
        optim.Optimizer("lion")
    with pytest.raises(ConfigError, match="optimizer must be an rnn_backends.optim.Optimizer"):
        optim.as_optimizer(3)


# --- the shared update against the oracle --------------------------------------------------------


class NumpyOps:
    """The three array functions optim.update needs, in NumPy."""

    sqrt = staticmethod(np.sqrt)
    sum = staticmethod(np.sum)
    minimum = staticmethod(np.minimum)


@pytest.mark.parametrize("kind", optim.OPTIMIZERS)
@pytest.mark.parametrize("max_norm", [0.3, math.inf])
def test_shared_update_over_numpy_equals_the_oracle(kind, max_norm):
    """Ten updates on random gradients (clipping engaged, or off), float64: optim.update (over
    NumPy here, over every framework in test_backends.py) against the oracle's optimizer."""
    rng = np.random.default_rng(7)
    params = {"W": rng.normal(size=(3, 4)), "b": rng.normal(size=(4,))}
    opt = optim.Optimizer(kind, momentum=0.8, beta2=0.99, weight_decay=0.2 * (kind == "adamw"))
    hyper = {"momentum": 0.8, "beta1": 0.9, "beta2": 0.99, "eps": 1e-8,
             "weight_decay": opt.weight_decay}  # fmt: skip
    slots = {s: {k: np.zeros_like(p) for k, p in params.items()} for s in opt.slots}
    state, oracle, mine = reference.optimizer_state(params, kind), dict(params), dict(params)
    clipped_any = False
    for step in range(10):
        grads = {k: rng.normal(size=p.shape) for k, p in params.items()}
        lr = 0.05 * (step + 1)
        rates = optim.step_rates(opt, step, lr)
        mine, slots, norm = optim.update(NumpyOps(), opt, mine, grads, slots, rates, max_norm)
        clipped, o_norm = reference.clip_grads(grads, max_norm)
        oracle, state = reference.optimizer_update(oracle, clipped, state, kind, lr, **hyper)
        clipped_any |= o_norm > max_norm
        assert norm == pytest.approx(o_norm, rel=1e-14)
        for k in params:
            assert rel_err(mine[k], oracle[k]) <= 1e-14, (step, k)
        for s in opt.slots:
            for k in params:
                assert rel_err(slots[s][k], state[s][k]) <= 1e-14, (step, s, k)
    assert clipped_any == (max_norm < math.inf)


def test_optimizer_state_of_another_optimizer_or_model_is_refused():
    params = {"W": np.zeros((2, 3))}
    adam = optim.OptState(0, {s: {"W": np.zeros((2, 3))} for s in ("m", "v")})
    with pytest.raises(ConfigError, match=r"slots \(m, v\) but optimizer 'momentum' keeps \(buf\)"):
        adam.check(optim.Optimizer("momentum"), {"W": (2, 3)})
    with pytest.raises(ConfigError, match="slot 'm' does not match the parameters"):
        adam.check(optim.Optimizer("adam"), {"W": (3, 2)})
    adam.check(optim.Optimizer("adamw"), {k: v.shape for k, v in params.items()})
    backend = make_backend("numpy")
    X = np.zeros((1, 2), dtype=np.int64)
    with pytest.raises(ConfigError, match="opt_state"):
        rnn = {"W_xh": np.zeros((3, 2)), "W_hh": np.zeros((2, 2)), "b_h": np.zeros(2),
               "W_hq": np.zeros((2, 3)), "b_q": np.zeros(3)}  # fmt: skip
        backend.train_step(rnn, X, X, lr=0.1, grad_clip=1.0, optimizer="sgd", opt_state=adam)


# --- PyTorch's own optimizers as a second, independent source ------------------------------------

TORCH_CASES = [
    ("sgd", {}, {}),
    ("momentum", {"momentum": 0.7}, {"momentum": 0.7}),
    ("nesterov", {"momentum": 0.7}, {"momentum": 0.7, "nesterov": True}),
    ("adam", {"beta1": 0.8, "beta2": 0.95}, {"betas": (0.8, 0.95)}),
    ("adamw", {"weight_decay": 0.3}, {"weight_decay": 0.3}),
]


@pytest.mark.parametrize("kind,hyper,torch_kwargs", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_oracle_optimizers_equal_torch_optim(framework_name, kind, hyper, torch_kwargs):
    """torch.optim.SGD (plain, momentum, Nesterov), Adam and AdamW, with
    torch.nn.utils.clip_grad_norm_, on the same gradients as the oracle, 20 float64 steps with
    a changing learning rate."""
    if framework_name != "torch":
        pytest.skip("PyTorch's own optimizers are the reference here")
    import torch

    rng = np.random.default_rng(3)
    params = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=(3,))}
    leaves = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
              for k, v in params.items()}  # fmt: skip
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(kind, torch.optim.SGD)
    opt = cls(list(leaves.values()), lr=0.1, **torch_kwargs)
    state, oracle = reference.optimizer_state(params, kind), dict(params)
    for step in range(20):
        grads = {k: rng.normal(size=p.shape) * 3 for k, p in params.items()}
        lr = 0.02 * (1 + step % 5)
        for group in opt.param_groups:
            group["lr"] = lr
        for k, leaf in leaves.items():
            leaf.grad = torch.tensor(grads[k])
        torch.nn.utils.clip_grad_norm_(list(leaves.values()), max_norm=2.0)
        opt.step()
        clipped, _ = reference.clip_grads(grads, 2.0)
        oracle, state = reference.optimizer_update(oracle, clipped, state, kind, lr, **hyper)
        for k, leaf in leaves.items():
            # torch's clip multiplies by max_norm / (norm + 1e-6), ours by max_norm / norm.
            assert rel_err(leaf.detach().numpy(), oracle[k]) <= 1e-6, (step, k)
    for k, leaf in leaves.items():
        assert rel_err(leaf.detach().numpy(), oracle[k]) <= 1e-6, k


@pytest.mark.parametrize("kind,hyper,torch_kwargs", TORCH_CASES, ids=[c[0] for c in TORCH_CASES])
def test_oracle_optimizers_equal_torch_optim_without_clipping(framework_name, kind, hyper,
                                                             torch_kwargs):  # fmt: skip
    """The same without clipping (so without torch's 1e-6 in the clip), to 1e-13."""
    if framework_name != "torch":
        pytest.skip("PyTorch's own optimizers are the reference here")
    import torch

    rng = np.random.default_rng(4)
    params = {"W": rng.normal(size=(4, 3))}
    leaf = torch.tensor(params["W"], dtype=torch.float64, requires_grad=True)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(kind, torch.optim.SGD)
    opt = cls([leaf], lr=0.05, **torch_kwargs)
    state, oracle = reference.optimizer_state(params, kind), dict(params)
    for _ in range(20):
        g = rng.normal(size=(4, 3))
        leaf.grad = torch.tensor(g)
        opt.step()
        oracle, state = reference.optimizer_update(oracle, {"W": g}, state, kind, 0.05, **hyper)
    assert rel_err(leaf.detach().numpy(), oracle["W"]) <= 1e-13


# --- the training loop: the schedule's rate at every step, the state carried across epochs -------


@pytest.mark.parametrize("kind,schedule", [("adamw", "cosine"), ("nesterov", "step")])
def test_train_loop_equals_a_loop_of_oracle_steps(kind, schedule):
    """train() with the NumPy oracle (float64, sequential batching so the state is carried)
    against the same batches fed by hand to the oracle's functions at the oracle's schedule."""
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=6)
    cfg = TrainConfig(
        batch_size=4, num_steps=8, num_train=200, num_val=40, max_epochs=3, dtype="float64",
        batching="sequential", optimizer=kind, lr=0.05, schedule=schedule, warmup_steps=3,
        weight_decay=0.1 * (kind == "adamw"),
    )
    result = train(make_backend("numpy"), corpus, model, cfg, progress=False)
    batches = CharBatches(corpus.ids, cfg)
    total = batches.total_train_batches()
    params = init_params(model, cfg.seed, "float64")
    state = reference.optimizer_state(params, kind)
    losses, lrs, step = [], [], 0
    for epoch in range(cfg.max_epochs):
        carry = None
        for X, Y in batches.train_batches(epoch):
            lr = reference.schedule_lr(schedule, 0.05, step, warmup_steps=3, total_steps=total)
            params, loss, _, carry, state = reference.model_optimizer_step(
                params, X, Y, carry, lr, 1.0, state, kind, weight_decay=cfg.weight_decay
            )
            losses.append(loss)
            lrs.append(lr)
            step += 1
    assert step == total == len(result.history["step_loss"])
    assert result.history["step_lr"] == pytest.approx(lrs, rel=1e-14)
    assert result.history["step_loss"] == pytest.approx(losses, rel=1e-12)
    for k in params:
        assert rel_err(result.params[k], params[k]) <= 1e-12, k
    assert result.history["train_config"]["optimizer"] == kind
