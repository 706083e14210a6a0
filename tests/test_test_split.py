"""The test split (``num_test``): where it lies, that it is cut and scored exactly as the
validation split, and that the n-gram baselines score it with the models chosen on validation.

Positions are made visible by a "corpus" whose token at index i is i: every batch then names the
corpus positions it reads.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_baselines import SlowKneserNey, _corpus

from rnn_backends import ModelConfig, TrainConfig, get_backend, load_corpus
from rnn_backends.baselines import baselines, fit_kneser_ney, held_out_plan, perplexity
from rnn_backends.data import CharBatches
from rnn_backends.errors import ConfigError, CorpusError
from rnn_backends.train import evaluate, train


def _positions(batches) -> set[int]:
    """Every corpus position a batch list reads (inputs and targets), from ids = arange."""
    seen: set[int] = set()
    for X, Y in batches:
        seen.update(X.ravel().tolist())
        seen.update(Y.ravel().tolist())
    return seen


_SPLIT = st.fixed_dictionaries(
    {
        "batching": st.sampled_from(["windows", "sequential"]),
        "num_steps": st.integers(1, 9),
        "batch_size": st.integers(1, 6),
        "num_val": st.integers(1, 60),
        "num_test": st.integers(1, 60),
        "extra": st.integers(0, 80),
        "explicit_train": st.booleans(),
    }
)


@settings(max_examples=80, deadline=None)
@given(split=_SPLIT)
def test_the_test_tokens_are_in_no_training_or_validation_window(split):
    T, B = split["num_steps"], split["batch_size"]
    num_train = B * T + split["extra"]
    n = num_train + split["num_val"] + split["num_test"] + 3 * T + 1 + split["extra"]
    ids = np.arange(n, dtype=np.int64)
    cfg = TrainConfig(batching=split["batching"], num_steps=T, batch_size=B,
                      num_val=split["num_val"], num_test=split["num_test"],
                      num_train=num_train if split["explicit_train"] else None)  # fmt: skip
    batches = CharBatches(ids, cfg)
    train_pos = set().union(*(_positions(batches.train_batches(e)) for e in range(3)))
    val_pos, test_pos = _positions(batches.val_batches()), _positions(batches.test_batches())
    assert test_pos and val_pos
    assert not test_pos & train_pos and not test_pos & val_pos
    # Nor any token of the training text the n-grams count, nor of any validation window.
    assert not test_pos & set(batches.train_ids.tolist())
    assert not test_pos & set(batches.val_ids.tolist())
    assert min(test_pos) > max(val_pos) > max(train_pos) - T  # the order: train, val, test
    assert test_pos <= set(batches.test_ids.tolist())


@pytest.mark.parametrize("batching", ["windows", "sequential"])
def test_test_batches_are_cut_as_validation_batches_would_be_there(batching):
    """The test split is what validation would be if it started where the test split does."""
    ids = load_corpus("default").ids[:6000]
    cfg = TrainConfig(batching=batching, batch_size=12, num_steps=10, num_train=2000,
                      num_val=700, num_test=900)  # fmt: skip
    batches = CharBatches(ids, cfg)
    moved = CharBatches(ids, TrainConfig(batching=batching, batch_size=12, num_steps=10,
                                         num_train=batches.test_start, num_val=900,
                                         num_test=0))  # fmt: skip
    got, want = list(batches.test_batches()), list(moved.val_batches())
    assert len(got) == len(want) > 0
    for (X, Y), (Xw, Yw) in zip(got, want, strict=True):
        assert np.array_equal(X, Xw) and np.array_equal(Y, Yw)
    # The first test window starts right after the last validation token.
    last_val_token = cfg.num_train + cfg.num_val - 1 + cfg.num_steps
    assert batches.test_start == last_val_token + 1


def test_no_test_split_leaves_the_old_layout():
    ids = load_corpus("default").ids
    old = CharBatches(ids, TrainConfig(batching="sequential", batch_size=8, num_steps=16,
                                       num_test=0))  # fmt: skip
    assert list(old.test_batches()) == [] and len(old.test_ids) == 0
    # Sequential batching with num_train left out trains on every window before validation.
    assert old.num_train == len(ids) - 16 - old.config.num_val
    new = CharBatches(ids, TrainConfig(batching="sequential", batch_size=8, num_steps=16,
                                       num_test=3000))  # fmt: skip
    assert new.num_train == old.num_train - 3000 - 16


def test_an_old_checkpoints_config_has_no_test_split():
    saved = TrainConfig().to_dict()
    del saved["num_test"]
    assert TrainConfig.from_saved(saved).num_test == 0
    assert TrainConfig.from_dict({**saved, "num_test": 7}).num_test == 7


@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_bad_num_test_is_refused(value):
    with pytest.raises(ConfigError, match="num_test must be an integer >= 0"):
        TrainConfig(num_test=value)


def test_a_corpus_too_short_for_the_test_split_says_what_to_set():
    ids = load_corpus("default").ids[:3000]
    with pytest.raises(CorpusError, match=r"num_test=5000.*0 leaves the test split out"):
        CharBatches(ids, TrainConfig(num_steps=8, num_train=1000, num_val=500, num_test=5000))


@pytest.mark.parametrize(
    ("length", "settings", "expected"),
    [
        # windows: the book's 10,000 + 5,000 validation + the gap of 32 + 5,000 test windows.
        (20_064, {}, 5000),
        (20_063, {}, 0),
        # sequential: one batch of B x T windows is the least training split.
        (8 * 16 + 100 + 16 + 5000 + 16, {"batching": "sequential", "batch_size": 8,
                                         "num_steps": 16, "num_val": 100}, 5000),
        (8 * 16 + 100 + 16 + 5000 + 15, {"batching": "sequential", "batch_size": 8,
                                         "num_steps": 16, "num_val": 100}, 0),
        # an explicit num_train is what must stay.
        (700 + 50 + 4 + 5000 + 4, {"num_steps": 4, "num_train": 700, "num_val": 50}, 5000),
        (700 + 50 + 4 + 5000 + 3, {"num_steps": 4, "num_train": 700, "num_val": 50}, 0),
        (700 + 50 + 4 + 5000 + 3, {"num_steps": 4, "num_train": 700, "num_val": 50,
                                   "num_test": 7}, 7),
    ],
)
def test_num_test_left_out_is_5000_where_they_fit(length, settings, expected):
    batches = CharBatches(np.zeros(length, dtype=np.int64), TrainConfig(**settings))
    assert batches.num_test == expected
    if expected:  # then the training split keeps what it was promised
        assert batches.num_train >= settings.get("num_train", 0)
        assert batches.num_train >= settings.get("batch_size", 1) * settings.get("num_steps", 1)
        assert len(batches.test_ids) == expected + batches.config.num_steps


def test_the_defaults_keep_working_on_both_corpora():
    ids = load_corpus("default").ids
    # The book's defaults: 10,000 training windows, and a test split where it fits.
    assert CharBatches(ids, TrainConfig()).num_test == 5000
    # Sequential at B=1024, T=32 needs 32,768 training windows: no room for a test split.
    assert CharBatches(ids, TrainConfig(batching="sequential")).num_test == 0


def test_the_runs_test_perplexity_is_the_oracles_on_the_test_windows(tmp_path):
    """train() scores the final weights on the test windows, token-weighted as validation is:
    recomputed here from the exported weights, batch by batch, with the oracle's loss."""
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=8)
    cfg = TrainConfig(batch_size=32, num_steps=8, num_train=600, num_val=200, num_test=300,
                      max_epochs=1, dtype="float64")  # fmt: skip
    oracle = get_backend("numpy", dtype="float64")
    result = train(oracle, corpus, model, cfg, progress=False)
    batches = CharBatches(corpus.ids, cfg)
    losses, tokens = [], 0
    for X, Y in batches.test_batches():
        loss, _ = oracle.loss(result.params, X, Y, None)
        losses.append(loss * X.size)
        tokens += X.size
    test = result.history["test"]
    assert test["test_tokens"] == tokens == 300 * 8
    assert test["test_ppl"] == pytest.approx(math.exp(math.fsum(losses) / tokens), rel=1e-12)
    # The validation figure of the same weights is a different number (different tokens).
    val = evaluate(oracle, result.params, batches.val_batches(), False).token
    assert val == pytest.approx(result.history["epochs"][-1]["val_ppl"], rel=1e-12)
    assert val != pytest.approx(test["test_ppl"], rel=1e-6)


def test_without_a_test_split_the_history_has_no_test_entry():
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=4)
    cfg = TrainConfig(batch_size=32, num_steps=8, num_train=300, num_val=50, num_test=0,
                      max_epochs=1)  # fmt: skip
    result = train(get_backend("numpy", dtype="float32"), corpus, model, cfg, progress=False)
    assert "test" not in result.history


# --- the baselines on the test split ----------------------------------------------------------


@pytest.mark.parametrize("batching", ["windows", "sequential"])
def test_baselines_score_the_test_split_with_the_validation_choice(batching):
    corpus = load_corpus("default")
    v = len(corpus.vocab)
    ids = corpus.ids[:5000]
    cfg = TrainConfig(batching=batching, batch_size=6, num_steps=7, num_train=2500, num_val=600,
                      num_test=500)  # fmt: skip
    result = baselines(_corpus(ids, corpus.vocab), cfg)
    batches = CharBatches(ids, cfg)
    plan = held_out_plan(batches)
    assert result.test_tokens == plan.num_tokens == sum(X.size for X, _ in batches.test_batches())
    assert result.test["uniform"] == pytest.approx(v, rel=1e-12)
    assert result.best is not None
    order, ds = result.best.order, list(result.best.discounts)
    slow = SlowKneserNey(batches.train_ids.tolist(), v, order, ds)
    nll = [-math.log(slow.prob(plan.context(s).tolist(), int(plan.targets[s])))
           for s in range(plan.num_tokens)]  # fmt: skip
    assert result.best_test == pytest.approx(math.exp(math.fsum(nll) / len(nll)), rel=1e-12)
    model = fit_kneser_ney(batches.train_ids, v, 1, result.discounts[1])
    assert result.test["unigram"] == pytest.approx(perplexity(model, plan), rel=1e-12)


def test_the_test_text_changes_no_choice():
    """Scrambling the test text changes the test figures only, never the order or discounts."""
    corpus = load_corpus("default")
    ids = corpus.ids[:6000].copy()
    cfg = TrainConfig(num_steps=8, num_train=3000, num_val=600, num_test=1000)
    reference = baselines(_corpus(ids, corpus.vocab), cfg).to_dict()
    start = CharBatches(ids, cfg).test_start
    scrambled = ids.copy()
    scrambled[start:] = np.random.default_rng(1).permutation(scrambled[start:])
    got = baselines(_corpus(scrambled, corpus.vocab), cfg).to_dict()
    assert got["test"] != reference["test"]
    for key in ("uniform", "unigram", "kn", "discounts", "best"):
        assert got[key] == reference[key]
