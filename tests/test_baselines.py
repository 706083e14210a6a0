"""The n-gram baselines (rnn_backends/baselines.py), framework-free.

Expected values come from hand arithmetic on a tiny corpus, from a slow reference written here
from the definition of interpolated Kneser-Ney (dicts and sets, one token at a time), from
identities (probabilities sum to one; the uniform model's perplexity is V), or from simulating
what the RNN is fed by ``CharBatches.val_batches()``.
"""

from __future__ import annotations

import collections
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnn_backends import TrainConfig, Vocab
from rnn_backends.baselines import (
    DISCOUNT_RANGE,
    KN_ORDERS,
    KNModel,
    PlanScorer,
    ScoringPlan,
    baselines,
    count_ngrams,
    fit_kneser_ney,
    perplexity,
    plan_from_batches,
    validation_plan,
)
from rnn_backends.data import CharBatches, Corpus, load_corpus
from rnn_backends.errors import ConfigError

FAST = settings(max_examples=60, deadline=None)

# --- the slow reference ---------------------------------------------------------------------------


class SlowKneserNey:
    """Interpolated Kneser-Ney from its definition, one query at a time (independent of the
    vectorised code: tuples, Counter and sets). ``discounts[m - 1]`` is D of order m."""

    def __init__(self, train: list[int], vocab_size: int, order: int, discounts: list[float]):
        self.v, self.order, self.d = vocab_size, order, discounts
        self.count: collections.Counter[tuple[int, ...]] = collections.Counter()
        self.left: dict[tuple[int, ...], set[int]] = collections.defaultdict(set)
        self.successors: dict[tuple[int, ...], set[int]] = collections.defaultdict(set)
        for m in range(1, order + 1):
            for i in range(len(train) - m + 1):
                gram = tuple(train[i : i + m])
                self.count[gram] += 1
                self.successors[gram[:-1]].add(gram[-1])
                if i > 0:
                    self.left[gram].add(train[i - 1])

    def _c(self, gram: tuple[int, ...], top: bool) -> int:
        return self.count[gram] if top else len(self.left[gram])

    def _p(self, h: tuple[int, ...], w: int, top: bool) -> float:
        lower = self._p(h[1:], w, False) if h else 1.0 / self.v
        total = sum(self._c(h + (u,), top) for u in self.successors[h])
        if total == 0:  # context never seen: all weight to the order below
            return lower
        types = sum(1 for u in self.successors[h] if self._c(h + (u,), top) > 0)
        d = self.d[len(h)]
        return (max(self._c(h + (w,), top) - d, 0.0) + d * types * lower) / total

    def prob(self, context: list[int], w: int) -> float:
        if self.order == 0:
            return 1.0 / self.v
        keep = min(self.order - 1, len(context))
        h = tuple(context[len(context) - keep :])
        return self._p(h, w, True)  # the longest available context uses raw counts


# --- hand-computed counts and probabilities on "abab aab" -----------------------------------------

# The vocabulary of "abab aab" is the sorted {' ', '<unk>', 'a', 'b'}: ' ' = 0, '<unk>' = 1,
# 'a' = 2, 'b' = 3, so V = 4 and the text is the ids 2 3 2 3 0 2 2 3.
HAND_TEXT = "abab aab"
SP, UNK, A, B = 0, 1, 2, 3


def hand_ids() -> np.ndarray:
    vocab = Vocab(list(HAND_TEXT))
    assert vocab.idx_to_token == [" ", "<unk>", "a", "b"]
    return vocab.encode(HAND_TEXT)


def test_counts_by_hand():
    counts = count_ngrams(hand_ids(), 4, 3)
    # Unigrams: a at 0, 2, 5, 6; b at 1, 3, 7; ' ' at 4.
    assert [counts.count([t]) for t in (SP, UNK, A, B)] == [1, 0, 4, 3]
    # Bigrams: ab (0-1, 2-3, 6-7), ba (1-2), b_ (3-4), _a (4-5), aa (5-6).
    assert counts.count([A, B]) == 3
    assert [counts.count(g) for g in ([B, A], [B, SP], [SP, A], [A, A])] == [1, 1, 1, 1]
    assert counts.count([B, B]) == 0 and counts.count([A, SP]) == 0
    # Trigrams: aba, bab, ab_, b_a, _aa, aab once each; abb never.
    for g in ([A, B, A], [B, A, B], [A, B, SP], [B, SP, A], [SP, A, A], [A, A, B]):
        assert counts.count(g) == 1
    assert counts.count([A, B, B]) == 0
    # Continuation counts N1+(. g): distinct tokens right before g.
    # a is preceded by b (pos 2), ' ' (pos 5) and a (pos 6): 3; b only by a: 1; ' ' only by b: 1.
    assert [counts.continuation_count([t]) for t in (SP, UNK, A, B)] == [1, 0, 3, 1]
    # ab at 0-1 (no left neighbour), 2-3 (after b), 6-7 (after a): {b, a} = 2.
    assert counts.continuation_count([A, B]) == 2
    assert [counts.continuation_count(g) for g in ([B, A], [B, SP], [SP, A], [A, A])] == [1] * 4
    # Context sums (c(h .), N1+(h .), N1+(. h .), #{u: N1+(. h u) > 0}):
    assert counts.context_sums([]) == (8, 3, 1 + 3 + 1, 3)  # N1+(. .) = 5 distinct bigrams
    assert counts.context_sums([A]) == (3 + 1, 2, 2 + 1, 2)  # a -> b (3), a (1)
    assert counts.context_sums([B]) == (1 + 1, 2, 1 + 1, 2)  # b -> a, ' '
    assert counts.context_sums([A, B])[:2] == (2, 2)  # ab -> a, ' '
    assert counts.context_sums([B, B]) == (0, 0, 0, 0)  # never seen


# Discounts D1, D2, D3 of orders 1, 2, 3: all different, so a level that took another order's
# discount would change the numbers.
D1, D2, D3 = 0.4, 0.5, 0.6


def hand_model() -> KNModel:
    return fit_kneser_ney(hand_ids(), 4, 3, (D1, D2, D3))


def test_probabilities_by_hand():
    model = hand_model()
    # Lowest level, continuation unigram over N1+(. .) = 5, mixed with uniform 1/4 by the weight
    # D1 * 3 types:  P1'(w) = (max(N1+(. w) - D1, 0) + D1 * 3 / 4) / 5
    p1 = {A: (3 - D1 + D1 * 3 / 4) / 5, B: (1 - D1 + D1 * 3 / 4) / 5}
    p1[SP] = (1 - D1 + D1 * 3 / 4) / 5
    p1[UNK] = (0 + D1 * 3 / 4) / 5
    assert p1[A] == pytest.approx(0.58) and p1[B] == pytest.approx(0.18)
    # Level 2 after 'a', continuation counts: N1+(. a b) = 2, N1+(. a a) = 1, total 3, 2 types.
    p2a = {w: (max({B: 2, A: 1}.get(w, 0) - D2, 0) + D2 * 2 * p1[w]) / 3 for w in range(4)}
    # Level 3 after 'a a', raw counts: c(a a b) = 1, total 1, 1 type.
    expected = {w: (max({B: 1}.get(w, 0) - D3, 0) + D3 * 1 * p2a[w]) / 1 for w in range(4)}
    assert expected[B] == pytest.approx(0.4 + 0.6 * (1.5 + 0.18) / 3)  # = 0.736
    assert expected[UNK] == pytest.approx(0.6 * (0.5 * 2 * 0.06) / 3)  # = 0.012
    got = model.distribution([A, A])
    np.testing.assert_allclose(got, [expected[w] for w in range(4)], rtol=1e-12)

    # Context 'b b' never occurs: level 3 passes everything to level 2 after 'b', whose
    # continuation counts are N1+(. b a) = 1, N1+(. b ' ') = 1, total 2, 2 types.
    assert model.distribution([B, B])[A] == pytest.approx((1 - D2 + D2 * 2 * p1[A]) / 2)
    # A context of one token (a window's first prediction): the top level is the raw bigram:
    # c(a b) = 3, c(a .) = 4, 2 types.
    assert model.distribution([A])[B] == pytest.approx((3 - D2 + D2 * 2 * p1[B]) / 4)
    # No context at all: the raw unigram, c(.) = 8 tokens, 3 types.
    raw1 = model.distribution([])
    assert raw1[A] == pytest.approx((4 - D1 + D1 * 3 / 4) / 8)
    assert raw1[UNK] == pytest.approx(D1 * 3 / 4 / 8)
    # Only the last order - 1 tokens count.
    np.testing.assert_allclose(model.distribution([B, SP, B, A, A]), got, rtol=1e-12)


def test_the_first_gram_of_the_text_has_no_left_neighbour():
    # Text a b c a c (a = 0, b = 1, c = 2; token 3 unused), V = 4. The bigram "a b" occurs only
    # at the start, so N1+(. a b) = 0: after 'a' the continuation level knows one successor (c),
    # while the raw level knows two (b, c).
    a, b, c, u = 0, 1, 2, 3
    model = fit_kneser_ney([a, b, c, a, c], 4, 3, (D1, D2, D3))
    assert model.counts.continuation_count([a, b]) == 0
    assert model.counts.context_sums([a]) == (2, 2, 1, 1)
    # N1+(. w): a after c (1), b after a (1), c after b and a (2); 4 distinct bigrams, 3 types.
    p1 = {w: (max({a: 1, b: 1, c: 2}.get(w, 0) - D1, 0) + D1 * 3 / 4) / 4 for w in (a, b, c, u)}
    # "b a" never occurs, so context (b, a) falls to the continuation level after 'a':
    # (max(N1+(. a w) - D2, 0) + D2 * 1 type * P1'(w)) / N1+(. a .) = 1
    want = [(max({c: 1}.get(w, 0) - D2, 0) + D2 * 1 * p1[w]) / 1 for w in (a, b, c, u)]
    assert want[c] == pytest.approx(1 - 0.5 + 0.5 * (2 - 0.4 + 0.3) / 4)  # 0.7375
    np.testing.assert_allclose(model.distribution([b, a]), want, rtol=1e-12)


def test_unigram_and_uniform_perplexity_closed_form():
    train = hand_ids()
    # Scored tokens a, b, ' ', <unk> (contexts are irrelevant to orders 0 and 1).
    plan = ScoringPlan(
        inputs=np.array([SP, A, B, SP]), targets=np.array([A, B, SP, UNK]), starts=np.zeros(4, int)
    )
    d = 0.3
    # P(w) = (max(c(w) - d, 0) + d * 3 types / 4) / 8 tokens
    p = [(4 - d + 0.75 * d) / 8, (3 - d + 0.75 * d) / 8, (1 - d + 0.75 * d) / 8, 0.75 * d / 8]
    geometric_mean = (p[0] * p[1] * p[2] * p[3]) ** 0.25
    assert perplexity(fit_kneser_ney(train, 4, 1, d), plan) == pytest.approx(
        1 / geometric_mean, rel=1e-12
    )
    assert perplexity(fit_kneser_ney(train, 4, 0, ()), plan) == pytest.approx(4.0, rel=1e-14)


def test_uniform_perplexity_is_vocab_size_on_a_real_split():
    corpus = load_corpus("default")
    cfg = TrainConfig(num_steps=8, num_train=600, num_val=100)
    result = baselines(corpus, cfg)
    assert result.uniform == pytest.approx(len(corpus.vocab), rel=1e-13)


# --- properties against the slow reference --------------------------------------------------------


@st.composite
def small_lm(draw):
    vocab_size = draw(st.integers(2, 6))
    # Leave the last token id unused in training sometimes, as <unk> usually is.
    alphabet = draw(st.integers(1, vocab_size))
    train = draw(st.lists(st.integers(0, alphabet - 1), min_size=1, max_size=40))
    order = draw(st.integers(0, 5))
    discounts = draw(st.lists(st.floats(0.01, 1.0), min_size=order, max_size=order))
    return vocab_size, train, order, discounts


@FAST
@given(small_lm(), st.data())
def test_distribution_sums_to_one_and_matches_the_definition(lm, data):
    vocab_size, train, order, discounts = lm
    model = fit_kneser_ney(np.array(train), vocab_size, order, discounts)
    slow = SlowKneserNey(train, vocab_size, order, discounts)
    # A context seen in training (a slice of it) and one drawn at random (often unseen).
    i = data.draw(st.integers(0, len(train)))
    j = data.draw(st.integers(i, min(len(train), i + 6)))
    random_ctx = data.draw(st.lists(st.integers(0, vocab_size - 1), max_size=6))
    for context in (train[i:j], random_ctx):
        dist = model.distribution(context)
        assert dist.shape == (vocab_size,)
        assert np.all(dist > 0)
        assert math.fsum(dist) == pytest.approx(1.0, abs=1e-12)
        want = [slow.prob(context, w) for w in range(vocab_size)]
        np.testing.assert_allclose(dist, want, rtol=1e-12)


def test_log_prob_matches_distribution_for_mixed_contexts():
    model = hand_model()
    contexts = np.array([[A, A], [B, B], [SP, A], [UNK, UNK]])
    nxt = np.array([B, A, UNK, SP])
    want = [math.log(model.distribution(list(c))[w]) for c, w in zip(contexts, nxt, strict=True)]
    np.testing.assert_allclose(model.log_prob(contexts, nxt), want, rtol=1e-13)


# --- what is scored: the same tokens and contexts as the RNN --------------------------------------


def rnn_view(batches: CharBatches) -> collections.Counter:
    """(context, target) pairs the RNN is evaluated on, simulated from val_batches(): without
    carried state each row starts afresh; with it, row b's history runs across batches."""
    seen: collections.Counter = collections.Counter()
    history: dict[int, list[int]] = collections.defaultdict(list)
    for X, Y in batches.val_batches():
        for b in range(X.shape[0]):
            past = history[b] if batches.carries_state else []
            for t in range(X.shape[1]):
                seen[(tuple(past) + tuple(X[b, : t + 1].tolist()), int(Y[b, t]))] += 1
            if batches.carries_state:
                history[b] = past + X[b].tolist()
    return seen


def plan_view(plan: ScoringPlan) -> collections.Counter:
    return collections.Counter(
        (tuple(plan.context(s).tolist()), int(plan.targets[s])) for s in range(plan.num_tokens)
    )


SPLITS = [
    TrainConfig(batch_size=7, num_steps=5, num_train=300, num_val=40),
    TrainConfig(batch_size=64, num_steps=6, num_train=300, num_val=40),
    TrainConfig(batch_size=8, num_steps=5, num_train=400, num_val=200, batching="sequential"),
    TrainConfig(batch_size=3, num_steps=4, num_train=None, num_val=30, batching="sequential"),
]


@pytest.mark.parametrize("cfg", SPLITS, ids=lambda c: f"{c.batching}-B{c.batch_size}")
def test_scored_positions_equal_the_rnns(cfg):
    ids = load_corpus("default").ids[:2000]
    batches = CharBatches(ids, cfg)
    plan = validation_plan(batches)
    assert plan_view(plan) == rnn_view(batches)
    assert plan.num_tokens == sum(X.size for X, _ in batches.val_batches())


def test_window_contexts_by_definition():
    # Validation window w is ids[num_train + w : num_train + w + T + 1]; the RNN predicts its
    # tokens 1..T from the tokens before them inside the window.
    ids = load_corpus("default").ids[:1000]
    cfg = TrainConfig(batch_size=16, num_steps=6, num_train=200, num_val=50)
    want: collections.Counter = collections.Counter()
    for w in range(cfg.num_val):
        win = ids[cfg.num_train + w : cfg.num_train + w + cfg.num_steps + 1].tolist()
        for t in range(1, cfg.num_steps + 1):
            want[(tuple(win[:t]), win[t])] += 1
    assert plan_view(validation_plan(CharBatches(ids, cfg))) == want


@pytest.mark.parametrize("cfg", SPLITS[::2], ids=lambda c: c.batching)
@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_plan_perplexity_is_the_token_mean_with_truncated_context(cfg, order):
    corpus = load_corpus("default")
    v = len(corpus.vocab)
    batches = CharBatches(corpus.ids[:2000], cfg)
    plan = validation_plan(batches)
    discounts = [0.3, 0.9, 0.6, 0.7, 0.45][:order]
    model = fit_kneser_ney(batches.train_ids, v, order, discounts)
    slow = SlowKneserNey(batches.train_ids.tolist(), v, order, discounts)
    nll = [
        -math.log(slow.prob(plan.context(s).tolist(), int(plan.targets[s])))
        for s in range(plan.num_tokens)
    ]
    assert perplexity(model, plan) == pytest.approx(math.exp(math.fsum(nll) / len(nll)), rel=1e-12)


def test_a_vocabulary_too_large_for_one_integer_code_scores_the_same():
    # 20,000^5 exceeds int64, so (context, target) rows are deduplicated as rows, not as codes.
    ids = load_corpus("default").ids[:800]
    batches = CharBatches(ids, TrainConfig(batch_size=9, num_steps=5, num_train=300, num_val=60))
    plan = validation_plan(batches)
    big = 20_000
    model = fit_kneser_ney(batches.train_ids, big, 4, (0.2, 0.4, 0.6, 0.8))
    slow = SlowKneserNey(batches.train_ids.tolist(), big, 4, [0.2, 0.4, 0.6, 0.8])
    nll = [
        -math.log(slow.prob(plan.context(s).tolist(), int(plan.targets[s])))
        for s in range(plan.num_tokens)
    ]
    assert perplexity(model, plan) == pytest.approx(math.exp(math.fsum(nll) / len(nll)), rel=1e-12)


def test_plan_from_carried_batches_requires_equal_rows():
    X = np.zeros((2, 3), dtype=np.int64)
    with pytest.raises(ValueError, match="same number of rows"):
        plan_from_batches([(X, X), (X[:1], X[:1])], carries_state=True)


# --- choosing on validation only ------------------------------------------------------------------


def _corpus(ids: np.ndarray, vocab: Vocab) -> Corpus:
    return Corpus(name="test", text=vocab.decode(ids), vocab=vocab, ids=ids)


CHOICE_CFG = TrainConfig(num_steps=8, num_train=3000, num_val=600)


def test_choice_depends_on_validation_text_only():
    corpus = load_corpus("default")
    ids = corpus.ids[:6000].copy()
    end_of_val = CHOICE_CFG.num_train + CHOICE_CFG.num_val + CHOICE_CFG.num_steps
    reference = baselines(_corpus(ids, corpus.vocab), CHOICE_CFG).to_dict()
    # Text after the validation windows (a future test split) changes nothing.
    scrambled = ids.copy()
    scrambled[end_of_val:] = np.random.default_rng(0).permutation(scrambled[end_of_val:])
    assert baselines(_corpus(scrambled, corpus.vocab), CHOICE_CFG).to_dict() == reference
    # Validation text does change the choice (the search reads it).
    other = ids.copy()
    start = CHOICE_CFG.num_train + 50
    other[start:end_of_val] = ids[100 : 100 + end_of_val - start]
    assert baselines(_corpus(other, corpus.vocab), CHOICE_CFG).discounts != reference["discounts"]


def test_tuned_discounts_minimise_validation_perplexity():
    corpus = load_corpus("default")
    batches = CharBatches(corpus.ids[:6000], CHOICE_CFG)
    result = baselines(_corpus(corpus.ids[:6000], corpus.vocab), CHOICE_CFG)
    counts = count_ngrams(batches.train_ids, len(corpus.vocab), max(KN_ORDERS))
    scorer = PlanScorer(counts, validation_plan(batches))
    lo, hi = DISCOUNT_RANGE
    for order in (1, *KN_ORDERS):
        ds = result.discounts[order]
        tuned = scorer.perplexity(KNModel(counts, order, ds))
        assert tuned == pytest.approx(result.kn.get(order, result.unigram), rel=1e-13)
        # No single discount moved by 0.01 (within the searched range) does better on validation.
        for j in range(order):
            for step in (-0.01, 0.01):
                trial = list(ds)
                trial[j] = min(max(trial[j] + step, lo), hi)
                assert scorer.perplexity(KNModel(counts, order, trial)) >= tuned * (1 - 1e-12)
    assert result.best is not None
    assert result.best.order == min(KN_ORDERS, key=result.kn.__getitem__)
    assert result.best.val_ppl == min(result.kn.values())


def test_without_validation_windows_there_is_nothing_to_choose():
    corpus = load_corpus("default")
    result = baselines(corpus, TrainConfig(num_steps=8, num_train=3000, num_val=0))
    assert result.best is None and result.val_tokens == 0
    assert math.isnan(result.uniform) and all(math.isnan(p) for p in result.kn.values())


# --- bad input and imports ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: fit_kneser_ney([0, 1], 2, 2, 1.5), "each in"),
        (lambda: fit_kneser_ney([0, 1], 2, 2, 0.0), "each in"),
        (lambda: fit_kneser_ney([0, 1], 2, 2, (0.5, float("nan"))), "each in"),
        (lambda: fit_kneser_ney([0, 1], 2, 1, True), "each in"),
        (lambda: fit_kneser_ney([0, 1], 2, 3, (0.5, 0.5)), "3 discount"),
        (lambda: fit_kneser_ney([0, 1], 2, -1), "order"),
        (lambda: fit_kneser_ney([0, 2], 2, 2), r"\[0, 2\)"),
        (lambda: fit_kneser_ney([0.5, 1.0], 2, 2), "integer token ids"),
        (lambda: KNModel(count_ngrams([0, 1], 2, 2), 3, 0.5), "count with max_order"),
        (lambda: hand_model().log_prob(np.array([A, B]), np.array([A, B])), r"shape \(N, k\)"),
    ],
)
def test_bad_input_is_a_config_error(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_importing_baselines_imports_no_framework(framework_name):
    """Runs in each framework's session, where an eager import of it would show."""
    code = (
        "import sys, rnn_backends.baselines\n"
        "bad = [m for m in ('torch', 'jax', 'tensorflow', 'mxnet', 'keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
