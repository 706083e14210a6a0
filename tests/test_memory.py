"""The memory estimate that refuses a run before anything is allocated."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_backends import ConfigError, ModelConfig, TrainConfig, init_params, memory
from rnn_backends.params import param_shapes


@settings(max_examples=80, deadline=None)
@given(V=st.integers(1, 60), H=st.integers(1, 40), L=st.integers(1, 4),
       cell=st.sampled_from(["rnn", "gru", "lstm"]), bidirectional=st.booleans())
def test_the_parameter_count_is_what_param_shapes_lists(V, H, L, cell, bidirectional):
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=L, cell=cell,
                         bidirectional=bidirectional)
    shapes = param_shapes(config)
    assert memory.param_count(config) == (sum(math.prod(s) for s in shapes.values()), len(shapes))


def test_the_estimate_holds_the_parameters_three_times_and_the_logits():
    """Against the arrays themselves: the parameters init_params makes (times three: the
    weights, their gradients, the update) and the (B, T, V) logits (times three)."""
    model = ModelConfig(vocab_size=28, hidden_size=32)
    train = TrainConfig(batch_size=64, num_steps=16, dtype="float32")
    need = memory.estimate(model, train)
    params = init_params(model, seed=0, dtype="float32")
    assert need.parameters == 3 * sum(p.nbytes for p in params.values())
    assert need.logits == 3 * 64 * 16 * 28 * 4
    assert need.total > need.parameters + need.logits


def test_a_run_beyond_the_memory_available_is_refused_with_the_figures(monkeypatch):
    model = ModelConfig(vocab_size=28, hidden_size=32)
    train = TrainConfig(batch_size=64, num_steps=16)
    need = memory.estimate(model, train).total
    monkeypatch.setattr(memory, "available_bytes", lambda: need)
    assert memory.check_fits(model, train).total == need  # exactly fits
    monkeypatch.setattr(memory, "available_bytes", lambda: need - 1)
    with pytest.raises(ConfigError, match=r"need at least [\d.]+ MB .* but [\d.]+ MB of memory"):
        memory.check_fits(model, train)
    monkeypatch.setattr(memory, "available_bytes", lambda: None)  # unknown: not refused
    memory.check_fits(model, train)
