"""Configs: the textbook's defaults and validation with actionable messages."""

from __future__ import annotations

import dataclasses
import math

import pytest

from rnn_backends import ModelConfig, TrainConfig
from rnn_backends.errors import ConfigError


def test_textbook_defaults():
    t = TrainConfig()
    assert (t.batch_size, t.num_steps, t.lr, t.grad_clip) == (1024, 32, 1.0, 1.0)
    assert (t.num_train, t.num_val) == (10000, 5000)
    m = ModelConfig(vocab_size=28)
    assert (m.hidden_size, m.init_sigma, m.cell, m.num_layers) == (32, 0.01, "rnn", 1)


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
