"""Configs: the textbook's defaults and validation with actionable messages."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from rnn_backends import CharBatches, ModelConfig, TrainConfig, optim
from rnn_backends.errors import ConfigError


def test_textbook_defaults():
    m = ModelConfig(vocab_size=28)
    assert (m.hidden_size, m.init_sigma, m.cell, m.num_layers) == (32, 0.01, "rnn", 1)
    t = TrainConfig().resolved(m)  # the tanh RNN's: the book's SGD at lr 1, clipping at 1
    assert (t.batch_size, t.num_steps, t.lr, t.grad_clip) == (1024, 32, 1.0, 1.0)
    assert (t.optimizer, t.schedule, t.warmup_steps) == ("sgd", "constant", 0)
    assert t.num_val == 5000
    ids = np.arange(40000) % 28
    assert CharBatches(ids, t).num_train == 10000  # num_train None: the book's 10,000 windows


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_gated_cells_default_to_adam_with_a_cosine_schedule(cell):
    model = ModelConfig(vocab_size=28, cell=cell)
    t = TrainConfig().resolved(model)
    assert (t.optimizer, t.lr, t.schedule, t.warmup_steps) == ("adam", 0.03, "cosine", 10)
    # What is given stays; a learning rate left out follows an optimizer given by name.
    t = TrainConfig(optimizer="sgd", schedule="step", warmup_steps=0).resolved(model)
    assert (t.optimizer, t.lr, t.schedule, t.warmup_steps) == ("sgd", 1.0, "step", 0)
    assert TrainConfig(optimizer="momentum").resolved(model).lr == 0.1
    assert TrainConfig(lr=0.003).resolved(model).lr == 0.003
    # Resolving is idempotent, and the rnn keeps the book's whatever the other cells do.
    assert TrainConfig().resolved(model).resolved(ModelConfig(vocab_size=28)) == (
        TrainConfig().resolved(model))


def test_unresolved_config_refuses_to_make_the_optimizer():
    with pytest.raises(ConfigError, match=r"resolved\(model_config\)"):
        TrainConfig().optimizer_spec()
    t = TrainConfig(optimizer="adamw", weight_decay=0.1, lr=0.002, schedule="constant",
                    warmup_steps=3)  # fmt: skip
    assert t.optimizer_spec() == optim.Optimizer("adamw", weight_decay=0.1)
    assert t.schedule_spec(100) == optim.Schedule("constant", 3, 100)


def test_a_checkpoint_config_from_before_optimizers_continues_as_plain_sgd():
    old = {k: v for k, v in TrainConfig(lr=0.5).to_dict().items()
           if k in ("batch_size", "num_steps", "lr", "max_epochs", "grad_clip", "seed", "dtype",
                    "batching", "num_train", "num_val")}  # fmt: skip
    t = TrainConfig.from_saved(old).resolved(ModelConfig(vocab_size=5, cell="gru"))
    assert (t.optimizer, t.lr, t.schedule, t.warmup_steps) == ("sgd", 0.5, "constant", 0)


def test_frozen_and_round_trip():
    t = TrainConfig(lr=0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.lr = 2  # type: ignore[misc]
    assert TrainConfig.from_dict(t.to_dict()) == t
    m = ModelConfig(vocab_size=5)
    assert ModelConfig.from_dict(m.to_dict()) == m
    with pytest.raises(ConfigError, match="no field"):
        TrainConfig.from_dict({"learning_rate": 1})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"num_steps": -3}, "num_steps"),
        ({"max_epochs": 1.5}, "max_epochs"),
        ({"lr": math.nan}, "lr must be a finite number > 0"),
        ({"lr": -1.0}, "lr"),
        ({"lr": math.inf}, "lr"),
        ({"grad_clip": -1}, "grad_clip must be a finite number >= 0"),
        ({"dtype": "float16"}, "dtype must be one of float32, float64"),
        ({"batching": "random"}, "batching"),
        ({"seed": -1}, "seed"),
        ({"num_val": -1}, "num_val"),
        ({"num_train": 0}, "num_train"),
        ({"optimizer": "rmsprop"}, "optimizer must be one of sgd, momentum, nesterov, adam, adamw"),
        ({"momentum": 1.0}, r"momentum must be a number in \[0, 1\), got 1.0"),
        ({"beta1": -0.1}, "beta1"),
        ({"beta2": math.nan}, "beta2"),
        ({"eps": 0.0}, "eps must be a finite number > 0"),
        ({"weight_decay": -1.0}, "weight_decay must be a finite number >= 0"),
        ({"optimizer": "adam", "weight_decay": 0.01},
         r"weight_decay=0.01 is AdamW's decoupled weight decay.*--optimizer adamw"),
        ({"schedule": "linear"}, "schedule must be one of constant, step, cosine"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
        ({"lr_decay_steps": 0}, "lr_decay_steps must be a positive integer"),
        ({"lr_decay_rate": 1.5}, r"lr_decay_rate must be a number in \(0, 1\]"),
    ],
)
def test_train_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": 5, "hidden_size": -1}, "hidden_size"),
        ({"vocab_size": 5, "cell": "transformer"}, "cell must be one of"),
        ({"vocab_size": 5, "init_sigma": 0}, "init_sigma"),
        ({"vocab_size": True}, "vocab_size"),
    ],
)
def test_model_config_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**kwargs)


def test_weight_decay_left_to_a_cell_that_does_not_take_it_is_refused_when_resolved():
    """AdamW's decay with the optimizer left to the cell passes construction (the cell is not
    known yet) and is refused once the cell decides the optimizer."""
    t = TrainConfig(weight_decay=0.1)
    with pytest.raises(ConfigError, match="optimizer is 'sgd'"):
        t.resolved(ModelConfig(vocab_size=5))
    with pytest.raises(ConfigError, match="optimizer is 'adam'"):
        t.resolved(ModelConfig(vocab_size=5, cell="lstm"))
    assert TrainConfig(weight_decay=0.1, optimizer="adamw").resolved(
        ModelConfig(vocab_size=5)).weight_decay == 0.1
