"""The benchmark's stock baselines (rnn_backends/stock/) against the NumPy oracle, and the
bench's own check that a baseline which departs from the oracle cannot be ranked.

Every stock path is the code a user would write from the book; the bench times it, so it has to
compute the oracle's numbers: here in float64, per step, with clipping engaged on some steps and
not on others. Timings are never asserted.
"""

from __future__ import annotations

import numpy as np
import pytest

from rnn_backends import ModelConfig, init_params, reference, stock
from rnn_backends.errors import ConfigError

LR, CLIP = 1.0, 0.45  # with these weights the gradient norm is 0.37..0.57: clipped on most steps


def _problem() -> tuple[dict[str, np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    params = init_params(ModelConfig(vocab_size=11, hidden_size=7, init_sigma=0.4), seed=3)
    rng = np.random.default_rng(5)
    batches = [(rng.integers(0, 11, (4, 6)), rng.integers(0, 11, (4, 6))) for _ in range(3)]
    return params, batches


def _oracle(params, batches, steps: int) -> tuple[list[float], list[float]]:
    """Per-step losses and gradient norms of the oracle's training run."""
    p, losses, norms = dict(params), [], []
    for k in range(steps):
        X, Y = batches[k % len(batches)]
        p, loss, norm, _ = reference.train_step(p, X, Y, None, LR, CLIP)
        losses.append(loss)
        norms.append(norm)
    return losses, norms


def test_every_stock_path_trains_as_the_oracle(framework_name):
    """Six steps of every stock path of the framework, float64: every loss within 1e-9."""
    params, batches = _problem()
    want, norms = _oracle(params, batches, 6)
    assert any(n > CLIP for n in norms) and any(n <= CLIP for n in norms[1:])  # both branches
    names = stock.paths(framework_name)
    assert names, f"{framework_name} has no stock path"
    for name in names:
        if (framework_name, name) == ("torch", "stock:compiled"):
            continue  # stock:book's loss under torch.compile: a minute of compiling; the bench
            # checks its loss against the oracle every time it runs
        try:
            step = stock.make_step(framework_name, name, params, dtype="float64", device="cpu",
                                   lr=LR, grad_clip=CLIP)
        except ImportError as exc:  # a companion (Flax, Keras, optax) missing here
            pytest.skip(f"{name}: {exc}")
        got = [step(*batches[k % len(batches)]) for k in range(6)]
        err = max(abs(g - w) / w for g, w in zip(got, want, strict=True))
        assert err <= 1e-9, (name, got, want)


def test_stock_paths_refuse_an_unknown_name():
    with pytest.raises(ConfigError, match="torch has no stock path 'stock:scan'; it has "
                                          "stock:book, stock:compiled, stock:layer"):
        stock.make_step("torch", "stock:scan", {}, dtype="float32", device="cpu", lr=1.0,
                        grad_clip=1.0)


def test_bench_flags_a_run_that_leaves_the_oracle(monkeypatch):
    """The bench's oracle check, on the NumPy backend, float32 as the bench runs: its own step
    passes; a step whose learning rate is 1% off is marked wrong, and so is one that leaves W_hh
    untrained (as the book's deep MXNet RNN left whole layers)."""
    from rnn_backends import bench

    cfg = {"V": 11, "H": 8, "B": 16, "T": 6}
    kwargs = dict(dtype="float32", device="cpu", warmup=1, steps=3, options={})
    ok = bench.bench_one("numpy", "reference", cfg, **kwargs)
    assert ok["correct"] and ok["loss_rel_diff"] <= ok["loss_bound"]
    # The bound must be tight enough to see a real bug in as few steps as the bench takes.
    for bad_lr, frozen in ((1.01, ()), (1.0, ("W_hh",))):
        def wrong(framework, variant, params, *, lr, grad_clip, bad_lr=bad_lr, frozen=frozen,
                  **_):
            p = dict(params)

            def step(X, Y):
                nonlocal p
                new, loss, _, _ = reference.train_step(p, X, Y, None, lr * bad_lr, grad_clip)
                p = {k: p[k] if k in frozen else v for k, v in new.items()}
                return loss

            return step

        monkeypatch.setattr(stock, "make_step", wrong)
        row = bench.bench_one("numpy", "stock:wrong", cfg, **kwargs)
        assert not row["correct"], (bad_lr, frozen, row["loss_rel_diff"])


def test_presets_expand_stock_per_framework():
    from rnn_backends.benchrun import framework_variants

    assert framework_variants("jax", ["fast", "stock", "stock:book"]) == [
        "fast", "stock:compiled", "stock:scan", "stock:layer"]
    assert framework_variants("torch", ["stock:scan", "stock:layer", "native"]) == [
        "stock:layer", "native"]
