"""Property-based tests (hypothesis) of the data pipeline, the oracle's identities and the
checkpoint format.

Each property is checked against an identity or a definition, never against numbers the code
under test printed. (Gradients against finite differences on random models live in
test_reference.py.)
"""

from __future__ import annotations

import math
import string
import tempfile

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rnn_backends import ModelConfig, TrainConfig, Vocab, get_backend, init_params, preprocess
from rnn_backends.checkpointing import Checkpoint, load_checkpoint, save_checkpoint
from rnn_backends.data import CharBatches, windows
from rnn_backends.data.vocab import UNK
from rnn_backends.errors import CorpusError

FAST = settings(max_examples=40, deadline=None)
letters_and_space = st.text(alphabet=string.ascii_lowercase + " ", min_size=1, max_size=200)


# --- text and vocabulary --------------------------------------------------------------------------


@FAST
@given(st.text(max_size=300))
def test_preprocess_keeps_only_lowercase_letters_and_single_spaces(raw):
    out = preprocess(raw)
    assert set(out) <= set(string.ascii_lowercase + " ")
    assert "  " not in out
    assert preprocess(out) == out  # idempotent
    # Letters survive in order, lowercased.
    ascii_letters = [c.lower() for c in raw if c in string.ascii_letters]
    assert out.replace(" ", "") == "".join(ascii_letters)


@FAST
@given(letters_and_space, st.text(alphabet=string.ascii_lowercase + " ", max_size=50))
def test_vocab_round_trips_known_text_and_maps_unknown_to_unk(corpus, other):
    vocab = Vocab(list(corpus))
    assert vocab.idx_to_token == sorted(set(corpus) | {UNK})
    assert vocab.decode(vocab.encode(corpus)) == corpus
    ids = vocab.encode(other)
    for ch, i in zip(other, ids, strict=True):
        assert vocab.idx_to_token[i] == (ch if ch in set(corpus) else UNK)
    assert Vocab.from_tokens_list(vocab.idx_to_token) == vocab


# --- windows and batches --------------------------------------------------------------------------


@FAST
@given(n=st.integers(1, 120), T=st.integers(1, 20), seed=st.integers(0, 2**32 - 1))
def test_windows_are_the_stride_one_slices(n, T, seed):
    ids = np.random.default_rng(seed).integers(0, 30, size=n)
    if n < T + 1:
        with pytest.raises(CorpusError, match=f"needs at least {T + 1}"):
            windows(ids, T)
        return
    w = windows(ids, T)
    assert w.shape == (n - T, T + 1)
    for i in range(n - T):
        assert np.array_equal(w[i], ids[i : i + T + 1])


window_setups = st.builds(
    dict,
    n=st.integers(20, 300),
    T=st.integers(1, 12),
    batch=st.integers(1, 40),
    train_frac=st.floats(0.05, 0.9),
    val_frac=st.floats(0.0, 0.5),
    seed=st.integers(0, 10_000),
    epoch=st.integers(0, 50),
)


@FAST
@given(window_setups)
def test_each_epoch_covers_every_training_window_exactly_once(s):
    n, T = s["n"], s["T"]
    total = n - T
    assume(total >= 2)
    num_train = max(1, int(s["train_frac"] * total))
    num_val = min(int(s["val_frac"] * total), total - num_train)
    cfg = TrainConfig(batch_size=s["batch"], num_steps=T, num_train=num_train, num_val=num_val,
                      seed=s["seed"])  # fmt: skip
    ids = np.random.default_rng(s["seed"]).integers(0, 7, size=n)
    batches = CharBatches(ids, cfg)
    epoch = list(batches.train_batches(s["epoch"]))
    assert len(epoch) == math.ceil(num_train / s["batch"]) == batches.num_train_batches()
    X = np.concatenate([x for x, _ in epoch])
    Y = np.concatenate([y for _, y in epoch])
    assert all(len(x) <= s["batch"] for x, _ in epoch)
    assert np.array_equal(X[:, 1:], Y[:, :-1])  # targets are the inputs shifted by one
    # The rows are the first num_train windows, each once (a permutation).
    expected = windows(ids, T)[:num_train]
    got = np.concatenate([X, Y[:, -1:]], axis=1)
    assert sorted(map(tuple, got)) == sorted(map(tuple, expected))
    # Replaying an epoch from (seed, epoch) alone gives the same batches: what resume relies on.
    again = list(CharBatches(ids, cfg).train_batches(s["epoch"]))
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(epoch, again, strict=True))
    # Validation: the next num_val windows, in corpus order.
    val = list(batches.val_batches())
    if num_val:
        V = np.concatenate([np.concatenate([x, y[:, -1:]], axis=1) for x, y in val])
        assert np.array_equal(V, windows(ids, T)[num_train : num_train + num_val])
    else:
        assert val == []


sequential_setups = st.builds(
    dict,
    n=st.integers(30, 400),
    T=st.integers(1, 10),
    batch=st.integers(1, 8),
    seed=st.integers(0, 10_000),
)


@FAST
@given(sequential_setups)
def test_sequential_batches_tile_each_row_and_never_fail_later(s):
    n, T, B = s["n"], s["T"], s["batch"]
    ids = np.arange(n)  # token i is i, so positions can be read off the values
    cfg = TrainConfig(batch_size=B, num_steps=T, num_train=n - T - 1, num_val=1,
                      seed=s["seed"], batching="sequential")  # fmt: skip
    try:
        batches = CharBatches(ids, cfg)
    except CorpusError:
        # Refused: then some epoch's random offset indeed leaves too few tokens for one batch.
        usable = lambda off: (len(ids[: cfg.num_train + T]) - off - 1) // B  # noqa: E731
        assert min(usable(off) for off in range(T)) < T
        return
    span = cfg.num_train + T  # the training tokens: ids[:span]
    for epoch in range(6):  # accepted: every epoch yields batches, whatever its offset
        seq = list(batches.train_batches(epoch))
        X = np.concatenate([x for x, _ in seq], axis=1)
        Y = np.concatenate([y for _, y in seq], axis=1)
        assert np.array_equal(Y, X + 1)  # the targets are the next tokens
        offset = int(X[0, 0])
        cols = (span - offset - 1) // B  # tokens per row
        assert 0 <= offset < T
        assert len(seq) == cols // T >= 1
        # Row b reads its own contiguous slice, which starts where row b - 1's slice ends.
        assert np.array_equal(X, offset + np.arange(B)[:, None] * cols + np.arange(X.shape[1]))
        assert X.max() < span and Y.max() < span  # never a validation token


# --- the oracle's identities ----------------------------------------------------------------------


model_setups = st.builds(
    dict,
    V=st.integers(2, 9),
    H=st.integers(1, 6),
    B=st.integers(1, 4),
    T=st.integers(2, 7),
    seed=st.integers(0, 10_000),
)


def _random_model(s):
    cfg = ModelConfig(vocab_size=s["V"], hidden_size=s["H"], init_sigma=0.5)
    params = init_params(cfg, seed=s["seed"])
    rng = np.random.default_rng(s["seed"] + 1)
    for name in params:
        if name.startswith("b_"):
            params[name] = rng.normal(0, 0.3, params[name].shape)
    X = rng.integers(0, s["V"], size=(s["B"], s["T"]))
    Y = rng.integers(0, s["V"], size=(s["B"], s["T"]))
    return params, X, Y


@FAST
@given(model_setups, st.data())
def test_carrying_the_state_splits_a_sequence_exactly(s, data):
    """forward(X) == forward(X[:, :k]) followed by forward(X[:, k:]) from its final state."""
    oracle = get_backend("numpy", dtype="float64")
    params, X, _ = _random_model(s)
    k = data.draw(st.integers(1, s["T"] - 1))
    whole, state = oracle.forward(params, X)
    first, mid = oracle.forward(params, X[:, :k])
    second, end = oracle.forward(params, X[:, k:], mid)
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=0, atol=1e-13)
    np.testing.assert_allclose(end[0], state[0], rtol=0, atol=1e-14)


@FAST
@given(model_setups, st.floats(-5, 5))
def test_loss_ignores_a_shift_of_the_output_bias(s, c):
    """Softmax is shift-invariant: adding c to every b_q leaves the loss, so dL/db_q sums to 0."""
    oracle = get_backend("numpy", dtype="float64")
    params, X, Y = _random_model(s)
    loss, grads = oracle.loss_and_grads(params, X, Y)
    shifted = {**params, "b_q": params["b_q"] + c}
    assert oracle.loss_and_grads(shifted, X, Y)[0] == pytest.approx(loss, rel=1e-12, abs=1e-12)
    assert abs(grads["b_q"].sum()) < 1e-12


@FAST
@given(model_setups)
def test_loss_and_grads_of_two_equal_batches_are_their_means(s):
    """The loss is the mean over all B*T tokens, so a batch of two halves averages them."""
    oracle = get_backend("numpy", dtype="float64")
    params, X, Y = _random_model(s)
    rng = np.random.default_rng(s["seed"] + 2)
    X2, Y2 = rng.integers(0, s["V"], size=X.shape), rng.integers(0, s["V"], size=Y.shape)
    l1, g1 = oracle.loss_and_grads(params, X, Y)
    l2, g2 = oracle.loss_and_grads(params, X2, Y2)
    lb, gb = oracle.loss_and_grads(params, np.concatenate([X, X2]), np.concatenate([Y, Y2]))
    assert lb == pytest.approx((l1 + l2) / 2, rel=1e-12)
    for k in gb:
        np.testing.assert_allclose(gb[k], (g1[k] + g2[k]) / 2, rtol=1e-10, atol=1e-14)


def _book_loss(params, X, Y):
    """Mean cross-entropy of the book's tanh RNN, written here from its equations (zero initial
    state), independently of the oracle: h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h),
    o_t = h_t W_hq + b_q."""
    B, T = X.shape
    h = np.zeros((B, params["W_hh"].shape[0]))
    total = 0.0
    for t in range(T):
        h = np.tanh(params["W_xh"][X[:, t]] + h @ params["W_hh"] + params["b_h"])
        o = h @ params["W_hq"] + params["b_q"]
        log_z = o.max(axis=1) + np.log(np.exp(o - o.max(axis=1, keepdims=True)).sum(axis=1))
        total += float((log_z - o[np.arange(B), Y[:, t]]).sum())
    return total / (B * T)


@FAST
@given(model_setups, st.floats(1e-3, 10))
def test_an_unclipped_step_is_plain_sgd(s, lr):
    oracle = get_backend("numpy", dtype="float64")
    params, X, Y = _random_model(s)
    loss, grads = oracle.loss_and_grads(params, X, Y)
    res = oracle.train_step(params, X, Y, lr=lr, grad_clip=0.0)
    # The step reports the loss before its update: the book's loss of the old weights.
    expected = _book_loss(params, X, Y)
    assert res.loss == pytest.approx(expected, rel=1e-12)
    assert loss == pytest.approx(expected, rel=1e-12)
    norm = math.sqrt(sum(float((g**2).sum()) for g in grads.values()))
    assert res.grad_norm == pytest.approx(norm, rel=1e-12)
    new = oracle.export(res.params)
    for k in params:
        np.testing.assert_allclose(new[k], params[k] - lr * grads[k], rtol=1e-13, atol=1e-15)


# --- checkpoints ----------------------------------------------------------------------------------


@settings(max_examples=20, deadline=None)
@given(model_setups, st.sampled_from(["float32", "float64"]), st.integers(0, 10**6),
       st.lists(st.integers(1, 5), max_size=2))  # fmt: skip
def test_checkpoint_round_trip_is_the_identity(s, dtype, step, carry_rows):
    params, _, _ = _random_model(s)
    params = {k: v.astype(dtype) for k, v in params.items()}
    tokens = ["<unk>", *string.ascii_lowercase[: s["V"] - 1]]
    vocab = Vocab.from_tokens_list(tokens)
    cfg = ModelConfig(vocab_size=s["V"], hidden_size=s["H"])
    rng = np.random.default_rng(step)
    arrays = {f"carry{i}": rng.normal(size=(r, s["H"])).astype(dtype)
              for i, r in enumerate(carry_rows)}  # fmt: skip
    extra = {"note": "x", "numbers": [0.1, 1e-300, 3.0], "nested": {"step": step}}
    with tempfile.TemporaryDirectory() as tmp:
        save_checkpoint(tmp, Checkpoint(params, cfg, vocab, TrainConfig(), step, extra, arrays))
        back = load_checkpoint(tmp)
    assert back.step == step and back.vocab == vocab and back.model_config == cfg
    assert back.extra == extra
    for got, want in ((back.params, params), (back.arrays, arrays)):
        assert set(got) == set(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].tobytes() == want[k].tobytes()
