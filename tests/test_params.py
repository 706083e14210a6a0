"""Canonical parameters: shapes, seeded init, checkpoint round trip and corruption."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnn_backends import ModelConfig, TrainConfig, Vocab, init_params, param_shapes
from rnn_backends.checkpointing import Checkpoint, load_checkpoint, save_checkpoint
from rnn_backends.errors import CheckpointError, NonFiniteError


def test_shapes_are_the_books():
    cfg = ModelConfig(vocab_size=28, hidden_size=32)
    assert param_shapes(cfg) == {
        "W_xh": (28, 32),
        "W_hh": (32, 32),
        "b_h": (32,),
        "W_hq": (32, 28),
        "b_q": (28,),
    }


def test_init_is_seeded_normal_with_zero_biases():
    cfg = ModelConfig(vocab_size=50, hidden_size=64)
    a, b, c = init_params(cfg, 1), init_params(cfg, 1), init_params(cfg, 2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W_hh"], c["W_hh"])
    assert not a["b_h"].any() and not a["b_q"].any()
    weights = np.concatenate([a[k].ravel() for k in ("W_xh", "W_hh", "W_hq")])
    assert abs(weights.mean()) < 0.001
    assert weights.std() == pytest.approx(0.01, rel=0.05)
    f32 = init_params(cfg, 1, "float32")
    assert all(
        f32[k].dtype == np.float32 and np.array_equal(f32[k], a[k].astype(np.float32)) for k in a
    )


def _ckpt(dtype="float64"):
    vocab = Vocab(list("abc d"))  # a b c d, space and <unk>
    cfg = ModelConfig(vocab_size=len(vocab), hidden_size=3)
    return Checkpoint(
        init_params(cfg, 0, dtype),
        cfg,
        vocab,
        TrainConfig(batch_size=4),
        step=7,
        extra={"note": "x"},
    )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_checkpoint_round_trip(tmp_path, dtype):
    ckpt = _ckpt(dtype)
    save_checkpoint(tmp_path / "ck", ckpt)
    back = load_checkpoint(tmp_path / "ck")
    assert back.model_config == ckpt.model_config
    assert back.train_config == ckpt.train_config
    assert back.vocab == ckpt.vocab and back.step == 7 and back.extra == {"note": "x"}
    for k, v in ckpt.params.items():
        assert back.params[k].dtype == v.dtype and np.array_equal(back.params[k], v)


def test_overwriting_keeps_one_weights_file(tmp_path):
    ckpt = _ckpt()
    save_checkpoint(tmp_path, ckpt)
    ckpt.params["W_hh"] = ckpt.params["W_hh"] + 1
    save_checkpoint(tmp_path, ckpt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "params.npz"]
    assert np.array_equal(load_checkpoint(tmp_path).params["W_hh"], ckpt.params["W_hh"])


def test_truncated_weights_are_detected(tmp_path):
    save_checkpoint(tmp_path, _ckpt())
    weights = tmp_path / "params.npz"
    weights.write_bytes(weights.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(tmp_path)


def test_corrupted_metadata_and_missing_dir(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path)
    save_checkpoint(tmp_path, _ckpt())
    (tmp_path / "checkpoint.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="corrupted"):
        load_checkpoint(tmp_path)


def test_checkpoint_of_another_model_is_refused(tmp_path):
    save_checkpoint(tmp_path, _ckpt())
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    meta["model_config"]["hidden_size"] = 4
    (tmp_path / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape"):
        load_checkpoint(tmp_path)


def test_non_finite_weights_are_never_saved(tmp_path):
    ckpt = _ckpt()
    ckpt.params["b_q"][0] = np.nan
    with pytest.raises(NonFiniteError, match="not finite"):
        save_checkpoint(tmp_path, ckpt)
    assert not (tmp_path / "checkpoint.json").exists()
