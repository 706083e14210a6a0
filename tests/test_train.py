"""The training loop and generation, for every selected backend."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest
from conftest import make_backend

from rnn_backends import ModelConfig, TrainConfig, get_backend, load_checkpoint, load_corpus
from rnn_backends.errors import ConfigError, UserError
from rnn_backends.generate import generate, next_token
from rnn_backends.train import train

SMALL = dict(batch_size=64, num_steps=16, num_train=2048, num_val=1024, lr=1.0, grad_clip=1.0)
TINY = dict(batch_size=16, num_steps=8, num_train=128, num_val=32, max_epochs=2)


def _unigram_ppl(text: str) -> float:
    counts, n = Counter(text), len(text)
    return math.exp(-sum(c / n * math.log(c / n) for c in counts.values()))


def test_training_beats_the_unigram_baseline(backend_name, tmp_path):
    backend = make_backend(backend_name, "float32")
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=32)
    cfg = TrainConfig(max_epochs=6, dtype="float32", **SMALL)
    result = train(backend, corpus, model, cfg, out_dir=tmp_path, progress=False)
    epochs = result.history["epochs"]
    assert epochs[-1]["val_ppl"] < 0.6 * _unigram_ppl(corpus.text)
    assert epochs[-1]["train_ppl"] < epochs[0]["train_ppl"]
    # Perplexity is exp of the token-weighted mean of the step losses of that epoch.
    losses = result.history["step_loss"][-cfg.num_train // cfg.batch_size :]
    assert epochs[-1]["train_ppl"] == pytest.approx(math.exp(np.mean(losses)), rel=1e-9)
    # Equal-size batches: the book's mean of exp >= exp of the mean (Jensen).
    assert epochs[-1]["train_ppl_book"] >= epochs[-1]["train_ppl"]
    history = json.loads((tmp_path / "history.json").read_text())
    assert history["step_loss"] == result.history["step_loss"]
    ckpt = load_checkpoint(tmp_path / "checkpoint")
    assert ckpt.step == len(result.history["step_loss"])
    assert all(np.array_equal(ckpt.params[k], result.params[k]) for k in ckpt.params)


@pytest.mark.parametrize("batching", ["windows", "sequential"])
def test_training_loop_matches_the_oracle_loop(framework_name, batching):
    """Same batches, same init, float64: the whole loop (state carrying and detaching included)
    gives the oracle's loss history."""
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=16)
    cfg = TrainConfig(
        max_epochs=2,
        dtype="float64",
        batching=batching,
        batch_size=16,
        num_steps=12,
        num_train=1600,
        num_val=400,
        seed=4,
    )
    ours = train(make_backend(framework_name, "float64"), corpus, model, cfg, progress=False)
    oracle = train(make_backend("numpy", "float64"), corpus, model, cfg, progress=False)
    assert len(ours.history["step_loss"]) == len(oracle.history["step_loss"]) > 10
    np.testing.assert_allclose(ours.history["step_loss"], oracle.history["step_loss"], rtol=1e-9)
    for a, b in zip(ours.history["epochs"], oracle.history["epochs"], strict=True):
        assert a["val_ppl"] == pytest.approx(b["val_ppl"], rel=1e-9)


def test_generation_is_the_same_in_every_framework(framework_name):
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=32)
    cfg = TrainConfig(max_epochs=3, dtype="float64", **SMALL)
    oracle = make_backend("numpy", "float64")
    params = train(oracle, corpus, model, cfg, progress=False).params
    backend = make_backend(framework_name, "float64")
    for temperature, seed in [(None, 0), (0.8, 1), (1.5, 2)]:
        expected = generate(oracle, params, corpus.vocab, "the clock", 40, temperature, seed)
        got = generate(backend, params, corpus.vocab, "the clock", 40, temperature, seed)
        assert got == expected
        assert got.startswith("the clock") and len(got) >= len("the clock") + 40


def test_greedy_continuation_equals_argmax_of_forward():
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=8, init_sigma=0.5)
    from rnn_backends import init_params, reference

    params = init_params(model, 1)
    backend = make_backend("numpy")
    text = generate(backend, params, corpus.vocab, "ab", 5)
    ids = corpus.vocab.encode(text)
    logits, _, _ = reference.forward(params, ids[None, :-1])
    # each generated id is the argmax after reading everything before it
    assert (logits[0, 1:].argmax(-1) == ids[2:]).all()


def test_sampling_frequencies_follow_the_softmax():
    logits = np.log(np.array([0.1, 0.2, 0.7]))
    rng = np.random.default_rng(0)
    draws = Counter(next_token(logits, 1.0, rng) for _ in range(20000))
    assert [draws[i] / 20000 for i in range(3)] == pytest.approx([0.1, 0.2, 0.7], abs=0.015)


def test_sampling_at_a_temperature_follows_softmax_of_logits_over_temperature():
    """Draws at T = 0.5 and T = 2 against the definition: with logits = log p, softmax(logits/T)
    is p^(1/T) / sum(p^(1/T)), written here without the code under test.

    The bound: for each of the K tokens, Hoeffding's inequality gives P(|freq - prob| >= eps)
    <= 2 exp(-2 N eps^2). Over K tokens and both temperatures a correct sampler fails with
    probability at most 2 * 2K exp(-2 N eps^2) = ALPHA = 1e-6 (over the choice of seed; the seed
    is fixed, so the test is deterministic). A sampler that ignored the temperature would give
    frequencies within eps of p (the same bound), hence at least |expected - p| - eps > eps away
    from the expected ones wherever |expected - p| > 2 eps, which the test also checks: such a
    sampler cannot pass.
    """
    p = np.array([0.1, 0.2, 0.3, 0.4])
    logits = np.log(p) + 3.0  # a shift changes nothing: softmax is shift-invariant
    N, K, ALPHA = 20_000, len(p), 1e-6
    eps = math.sqrt(math.log(2 * 2 * K / ALPHA) / (2 * N))  # about 0.020
    rng = np.random.default_rng(11)
    for T in (0.5, 2.0):
        expected = p ** (1 / T) / np.sum(p ** (1 / T))
        draws = Counter(next_token(logits, T, rng) for _ in range(N))
        freq = np.array([draws[i] / N for i in range(K)])
        assert sum(draws.values()) == N and set(draws) <= set(range(K))
        assert np.max(np.abs(freq - expected)) < eps, (T, freq, expected, eps)
        # The bound can tell this temperature from T = 1 (which would be p itself).
        assert np.max(np.abs(expected - p)) > 2 * eps


@pytest.mark.parametrize(
    "backend_dtype, config_dtype", [("float64", "float32"), ("float32", "float64")]
)
def test_a_backend_built_for_another_dtype_than_the_config_is_refused(
    tmp_path, backend_dtype, config_dtype
):
    """The run would compute in one dtype and record the other in its checkpoint."""
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=4)
    backend = get_backend("numpy", dtype=backend_dtype)
    pattern = (
        rf"computes in {backend_dtype} but train_config.dtype is '{config_dtype}'.*"
        r"get_backend\('numpy', dtype=train_config.dtype\)"
    )
    cfg = TrainConfig(dtype=config_dtype, **TINY)
    with pytest.raises(ConfigError, match=pattern):
        train(backend, corpus, model, cfg, out_dir=tmp_path / "run", progress=False)
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


def test_the_default_backend_and_config_disagree_so_the_plain_call_is_refused():
    """``get_backend("numpy")`` is float64 and ``TrainConfig()`` float32: the call the issue
    found recording the wrong dtype is refused, and the fix the message names works."""
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=4)
    cfg = TrainConfig(**TINY)  # the default dtype; TINY keeps a missed refusal quick
    with pytest.raises(ConfigError, match="dtype"):
        train(get_backend("numpy"), corpus, model, cfg, progress=False)
    result = train(get_backend("numpy", dtype=cfg.dtype), corpus, model, cfg, progress=False)
    assert result.history["train_config"]["dtype"] == "float32"
    assert all(v.dtype == np.float32 for v in result.params.values())


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("error", [_Interrupt, KeyboardInterrupt])
def test_the_progress_bar_line_is_ended_when_training_stops_with_an_exception(capsys, error):
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=4)
    cfg = TrainConfig(dtype="float64", **TINY)

    def stop(step: int, loss: float, seconds: float) -> None:
        if step == 2:
            raise error

    with pytest.raises(error):
        train(make_backend("numpy", "float64"), corpus, model, cfg, progress=True, on_step=stop)
    err = capsys.readouterr().err
    assert err.startswith("\r") and "numpy" in err  # the bar was drawn ...
    assert err.endswith("\n")  # ... and its line ended, so the next message starts on its own


def test_generation_input_errors():
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=4)
    from rnn_backends import init_params

    params, backend, vocab = init_params(model, 0), make_backend("numpy"), corpus.vocab
    with pytest.raises(UserError, match="num_preds"):
        generate(backend, params, vocab, "the", -1)
    with pytest.raises(UserError, match="temperature"):
        generate(backend, params, vocab, "the", 5, temperature=0)
    with pytest.raises(UserError, match="no letters"):
        generate(backend, params, vocab, "123", 5)
    missing = sorted(set("abcdefghijklmnopqrstuvwxyz") - set(vocab.idx_to_token))
    if missing:
        with pytest.warns(UserWarning, match="not in the vocabulary"):
            generate(backend, params, vocab, f"the {missing[0]}", 2)
