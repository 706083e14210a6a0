"""The framework-free data pipeline: preprocessing, vocabulary, corpora, batching."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_backends import TrainConfig
from rnn_backends.data import (
    CharBatches,
    Vocab,
    load_corpus,
    preprocess,
    sequential_batches,
    windows,
)
from rnn_backends.data import corpus as corpus_mod
from rnn_backends.data.default_corpus import default_text, generate_text
from rnn_backends.errors import CorpusError


def test_preprocess_collapses_non_letters_and_lowercases():
    assert preprocess("The  Time--Machine, 1898!\nIt") == "the time machine it"
    assert preprocess("...") == " "
    assert preprocess("") == ""


def test_vocab_order_unk_and_round_trip():
    vocab = Vocab(list("banana band"))
    # sorted unique tokens with <unk>: ' ' < '<unk>' < letters
    assert vocab.idx_to_token == [" ", "<unk>", "a", "b", "d", "n"]
    assert vocab.encode("bad z").tolist() == [3, 2, 4, 0, 1]
    assert vocab.decode(vocab.encode("band nab")) == "band nab"
    assert vocab.unknown_tokens("zebra") == ["z", "e", "r"]


def test_vocab_min_freq_and_reserved_tokens():
    vocab = Vocab(list("aaabbc"), min_freq=2, reserved_tokens=["<pad>"])
    assert vocab.idx_to_token == ["<pad>", "<unk>", "a", "b"]
    assert vocab.encode("c").tolist() == [vocab.unk]
    assert vocab.token_freqs[0] == ("a", 3)


def test_timemachine_facts(data_dir):
    corpus = load_corpus("timemachine")
    assert len(corpus.text) == 173_428
    assert len(corpus.vocab) == 28
    assert corpus.vocab.encode("the ").tolist() == [21, 9, 6, 0]
    assert corpus.vocab.decode(corpus.ids[:20]) == corpus.text[:20]


def test_default_corpus_is_deterministic_long_and_structured():
    text = default_text()
    assert text == generate_text()  # same every call
    assert generate_text(seed=2) != text
    corpus = load_corpus("default")
    assert len(corpus.text) >= 30_000
    counts = Counter(corpus.text)
    n = len(corpus.text)
    unigram_ppl = math.exp(-sum(c / n * math.log(c / n) for c in counts.values()))
    # A bigram model already beats the unigram baseline by a wide margin: the text has structure
    # a char-RNN can learn (the training test checks the RNN itself).
    pairs = Counter(zip(corpus.text, corpus.text[1:], strict=False))
    bigram_ce = -sum(c / (n - 1) * math.log(c / counts[a]) for (a, _), c in pairs.items())
    assert math.exp(bigram_ce) < 0.6 * unigram_ppl


def test_default_corpus_same_in_a_fresh_process():
    import subprocess
    import sys

    code = (
        "from rnn_backends.data.default_corpus import generate_text; import hashlib; "
        "print(hashlib.sha256(generate_text().encode()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    import hashlib

    assert out.stdout.strip() == hashlib.sha256(default_text().encode()).hexdigest()


def test_local_file_source(tmp_path):
    f = tmp_path / "tiny.txt"
    f.write_text("Hello, World! Hello again.", encoding="utf-8")
    corpus = load_corpus(str(f))
    assert corpus.text == "hello world hello again "
    assert corpus.vocab.decode(corpus.ids) == corpus.text


@pytest.mark.parametrize(
    "content,match",
    [
        (b"", "is empty"),
        (b"123 456 !!", "has no letters"),
        (b"\xff\xfe\x00a", "binary"),
        (b"caf\xe9 latin-1", "not UTF-8"),
    ],
)
def test_bad_files_raise_clear_errors(tmp_path, content, match):
    f = tmp_path / "bad.txt"
    f.write_bytes(content)
    with pytest.raises(CorpusError, match=match):
        load_corpus(str(f))


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(CorpusError, match="does not exist"):
        load_corpus(str(tmp_path / "nope.txt"))
    with pytest.raises(CorpusError, match="is a directory"):
        load_corpus(str(tmp_path))


def test_windows_are_every_stride_one_window():
    ids = np.arange(10)
    w = windows(ids, 3)
    assert w.shape == (7, 4)
    assert all((w[i] == np.arange(i, i + 4)).all() for i in range(7))
    with pytest.raises(CorpusError, match="needs at least 4"):
        windows(np.arange(3), 3)


def test_textbook_batches_shuffle_train_windows_and_keep_validation_in_order():
    ids = np.arange(200) % 17
    cfg = TrainConfig(batch_size=8, num_steps=5, num_train=50, num_val=20, seed=1)
    b = CharBatches(ids, cfg)
    seen = []
    for X, Y in b.train_batches(0):
        assert X.shape[1] == 5 and (Y[:, :-1] == X[:, 1:]).all()
        seen += [tuple(r) for r in X]
    all_windows = windows(ids, 5)
    assert sorted(seen) == sorted(tuple(r) for r in all_windows[:50, :-1])
    assert [tuple(r) for r in np.concatenate([X for X, _ in b.train_batches(0)])] == seen
    first_epochs = [np.concatenate([X for X, _ in b.train_batches(e)]) for e in (0, 1)]
    assert not np.array_equal(*first_epochs)  # reshuffled every epoch
    val = np.concatenate([X for X, _ in b.val_batches()])
    assert np.array_equal(val, all_windows[50:70, :-1])
    assert b.num_train_batches() == math.ceil(50 / 8)


def test_sequential_batches_continue_each_other():
    ids = np.arange(1000)
    batches = list(sequential_batches(ids, batch_size=4, num_steps=7, offset=3))
    for (X0, _), (X1, _) in zip(batches, batches[1:], strict=False):
        assert (X1[:, 0] == X0[:, -1] + 1).all()  # row b continues row b
    for X, Y in batches:
        assert (Y == X + 1).all()
    assert batches[0][0][0, 0] == 3


def test_too_many_windows_requested():
    with pytest.raises(CorpusError, match="num_train=100"):
        CharBatches(np.arange(50), TrainConfig(num_steps=5, num_train=100, num_val=0))


# --- defaults that fit the batching, and messages that say what to change to what -------------


def _every_epoch_has_a_batch(batches: CharBatches, epochs: int = 40) -> bool:
    """Each epoch (its random offset drawn from the seed) gives at least one training batch, and
    num_train_batches counts exactly what train_batches yields."""
    for e in range(epochs):
        n = sum(1 for _ in batches.train_batches(e))
        if n == 0 or n != batches.num_train_batches(e):
            return False
    return True


def test_sequential_batching_works_with_every_default():
    """The book's batch (1024 x 32) needs 32,768 training windows; num_train left out takes
    every window before the validation ones (the embedded corpus has 34,108 of them)."""
    ids = load_corpus("default").ids
    cfg = TrainConfig(batching="sequential")
    b = CharBatches(ids, cfg)
    assert b.num_train == len(ids) - cfg.num_steps - cfg.num_val
    assert b.num_train >= cfg.batch_size * cfg.num_steps
    assert _every_epoch_has_a_batch(b)
    X, Y = next(b.train_batches(0))
    assert X.shape == (1024, 32) and (X[:, 1:] == Y[:, :-1]).all()
    assert sum(X.size for X, _ in b.val_batches()) > 0
    assert b.total_train_batches() == sum(b.num_train_batches(e) for e in range(cfg.max_epochs))


def test_windows_batching_default_is_the_books_ten_thousand_or_what_fits():
    assert CharBatches(np.arange(20000) % 7, TrainConfig()).num_train == 10000
    small = CharBatches(np.arange(9000) % 7, TrainConfig(num_val=1000))
    assert small.num_train == 9000 - 32 - 1000  # fewer windows than the book's: all of them


def _suggested(message: str, option: str, direction: str) -> int:
    """The value the message tells to set ``option`` to ('... to N or more/less')."""
    import re

    found = re.search(rf"\(--{option}\) to (\d+) or {direction}", message)
    assert found, message
    return int(found.group(1))


@pytest.mark.parametrize("num_train", [None, 3000])
def test_a_sequential_batch_that_does_not_fit_names_the_exact_values(num_train):
    """The suggested values are exact: each one fits, one step beyond it does not."""
    ids = load_corpus("default").ids
    base = dict(batching="sequential", batch_size=4096, num_steps=16, num_train=num_train)
    with pytest.raises(CorpusError) as caught:
        CharBatches(ids, TrainConfig(**base))
    message = str(caught.value)
    assert "need 65536 training windows" in message
    assert "--num-train" not in message  # all the windows there are would not suffice
    batch = _suggested(message, "batch-size", "less")
    assert _every_epoch_has_a_batch(CharBatches(ids, TrainConfig(**{**base, "batch_size": batch})))
    with pytest.raises(CorpusError):
        CharBatches(ids, TrainConfig(**{**base, "batch_size": batch + 1}))
    if num_train is None:
        return
    base["batch_size"] = 1024  # 16,384 windows: more than num_train, fewer than the corpus has
    with pytest.raises(CorpusError) as caught:
        CharBatches(ids, TrainConfig(**base))
    need = _suggested(str(caught.value), "num-train", "more")
    assert _every_epoch_has_a_batch(CharBatches(ids, TrainConfig(**{**base, "num_train": need})))
    with pytest.raises(CorpusError):
        CharBatches(ids, TrainConfig(**{**base, "num_train": need - 1}))
    assert "leave it out" in str(caught.value)
    CharBatches(ids, TrainConfig(**{**base, "num_train": None}))  # leaving it out fits too


# --- reading a corpus file in bounded memory -----------------------------------------------------

_PIECES = st.sampled_from(["The", " ", "  ", "time-", "machine", "\n", "caf\u00e9", "\u00fc", "42",
                           "!", "\U0001f600", "\t", "Zz", ",", "a"])


@settings(max_examples=60, deadline=None)
@given(pieces=st.lists(_PIECES, min_size=1, max_size=60), chunk=st.integers(1, 9))
def test_a_file_read_in_chunks_gives_the_text_preprocess_gives(tmp_path_factory, pieces, chunk):
    """The file is read, decoded and preprocessed a chunk at a time (multi-byte characters and
    runs of non-letters cross chunk boundaries); the result is what ``preprocess`` makes of the
    whole text at once, and the ids are the vocabulary's encoding of it."""
    raw = "".join(pieces)
    path = tmp_path_factory.mktemp("chunks") / "c.txt"
    path.write_bytes(raw.encode("utf-8"))
    expected = preprocess(raw)
    mp = pytest.MonkeyPatch()
    mp.setattr(corpus_mod, "CHUNK_BYTES", chunk)
    try:
        if not expected.strip():
            with pytest.raises(CorpusError):
                load_corpus(str(path))
            return
        corpus = load_corpus(str(path))
    finally:
        mp.undo()
    assert corpus.text == expected
    vocab = Vocab(list(expected))
    assert corpus.vocab == vocab
    assert corpus.ids.tolist() == [vocab.token_to_idx[c] for c in expected]


def test_ids_are_compact_and_batches_are_int64(tmp_path):
    corpus = load_corpus("default")
    assert corpus.ids.dtype == np.uint8  # 28 tokens fit a byte
    for batching in ("windows", "sequential"):
        cfg = TrainConfig(batch_size=4, num_steps=8, num_train=64, num_val=16, batching=batching)
        batches = CharBatches(corpus.ids, cfg)
        X, Y = next(batches.train_batches(0))
        V, _ = next(batches.val_batches())
        assert X.dtype == Y.dtype == V.dtype == np.int64
        assert np.array_equal(X[:, 1:], Y[:, :-1])


def test_errors_past_the_first_chunk_name_the_right_offset(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus_mod, "CHUNK_BYTES", 4)
    f = tmp_path / "late.txt"
    f.write_bytes(b"abcdefgh caf\xe9 latin-1")
    with pytest.raises(CorpusError, match=r"bad byte at offset 12"):
        load_corpus(str(f))
    f.write_bytes(b"abcdefgh\x00ijk")
    with pytest.raises(CorpusError, match="looks binary"):
        load_corpus(str(f))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_only_regular_files_are_read(tmp_path):
    """A pipe would block the open (or never end), a device never ends: both are refused
    before anything is read, and quickly (a child process, so a regression cannot hang here)."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    probe = (
        "import sys\nfrom rnn_backends import load_corpus, CorpusError\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n        load_corpus(p)\n    except CorpusError as e:\n        print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(fifo), "/dev/zero"],
                         capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert len(lines) == 2, (out.stdout, out.stderr)
    assert f"corpus path {str(fifo)!r} is not a regular file" in lines[0]
    assert "corpus path '/dev/zero' is not a regular file" in lines[1]


def test_a_large_corpus_costs_about_three_bytes_per_character(tmp_path):
    """Peak memory while loading a 24 MB corpus and drawing a batch, in a fresh process: the
    text (one byte per character) and uint8 ids, plus a chunk. Reading it whole, as a list of
    characters and int64 ids cost about 26 bytes per character."""
    text = (default_text() + "\n") * (24_000_000 // len(default_text()))
    path = tmp_path / "big.txt"
    path.write_text(text)
    probe = (
        "import resource, sys\n"
        "from rnn_backends import CharBatches, TrainConfig, load_corpus\n"
        "from rnn_backends.resume import corpus_fingerprint\n"
        "def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "import numpy\n"
        "before = peak()\n"
        "c = load_corpus(sys.argv[1])\n"
        "next(CharBatches(c.ids, TrainConfig(batch_size=64, num_steps=32)).train_batches(0))\n"
        "corpus_fingerprint(c.ids)\n"
        "print(peak() - before, len(c.ids))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    grown, n = map(int, out.stdout.split())
    assert grown <= 3.5 * n + 16 * corpus_mod.CHUNK_BYTES, (grown / n, grown)
