"""The baselines in the compare report and the train summary, the quality preset's own check
(every framework must beat the best n-gram), and a short quality-like run per framework.

The baselines a report shows are recomputed here by ``baselines()`` on the split the spec
describes, independently of the orchestrator's call; what a framework must beat is checked
against rows built by hand.
"""

from __future__ import annotations

import json
import math

import pytest
from conftest import make_backend

from rnn_backends import ModelConfig, TrainConfig, load_corpus
from rnn_backends.baselines import baselines
from rnn_backends.cli import main
from rnn_backends.compare import PRESET_CHECKS, PRESETS, default_spec, quality_failures, run_compare
from rnn_backends.summary import margin_text, train_summary
from rnn_backends.train import train

_ORACLE_ONLY = {"hidden_size": 8, "batch_size": 16, "num_steps": 8, "max_epochs": 1,
                "num_train": 64, "num_val": 40, "num_test": 48}  # fmt: skip


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_the_report_shows_the_baselines_of_the_jobs_split(tmp_path):
    spec = default_spec(overrides=_ORACLE_ONLY)
    report = run_compare(tmp_path, [], spec, log=lambda *_: None)
    saved = json.loads((tmp_path / "report.json").read_text())
    want = baselines(load_corpus("default"), spec.train_config()).to_dict()
    got = saved["baselines"]
    assert got["best"] == want["best"] and got["val_tokens"] == want["val_tokens"] == 40 * 8
    assert got["test_tokens"] == 48 * 8
    assert got["uniform"] == pytest.approx(len(load_corpus("default").vocab), rel=1e-12)
    assert got["test"]["best"] == pytest.approx(want["test"]["best"], rel=1e-12)
    assert {int(n): p for n, p in got["kn"].items()} == pytest.approx(want["kn"], rel=1e-12)
    md = (tmp_path / "report.md").read_text()
    assert "## Baselines" in md
    assert f"| {want['test']['best']:.3f} |" in md and f"| {want['best']['val_ppl']:.3f} |" in md
    oracle = report["frameworks"][0]
    assert oracle["test"]["test_tokens"] == 48 * 8  # the RNN is scored on the same tokens
    assert margin_text(oracle["test"]["test_ppl"], want["test"]["best"], "test") in md
    assert (f"lowest test perplexity (numpy): greedy `{oracle['greedy_text']}`" in md)
    # The quick preset does not ask the RNN to win: this 1-epoch run loses and still passes.
    assert report["passed"], report["failures"]


def _row(name: str, val: float, test: float | None) -> dict:
    row = {"backend": name, "epochs": [{"val_ppl": val}]}
    if test is not None:
        row["test"] = {"test_ppl": test}
    return row


NGRAMS = {"best": {"order": 5, "discounts": [0.5] * 5, "val_ppl": 4.0}, "test": {"best": 5.0}}


def test_quality_failures_name_each_framework_and_split_that_does_not_win():
    rows = [_row("torch", 3.9, 4.9), _row("jax", 4.0, 4.8), _row("mxnet", 3.5, 5.0),
            _row("tensorflow", 3.0, None), {"backend": "numpy", "status": "failed"}]  # fmt: skip
    failures = quality_failures(rows, NGRAMS)
    assert failures == [
        "jax: validation perplexity 4.0000 does not beat the best n-gram's 4.0000",
        "mxnet: test perplexity 5.0000 does not beat the best n-gram's 5.0000",
        "tensorflow: no test split to compare with the best n-gram; set num_test (--num-test) "
        "above 0",
    ]
    assert quality_failures([_row("torch", 3.9, 4.9)], NGRAMS) == []
    assert quality_failures([_row("torch", math.nan, 4.9)], NGRAMS)  # NaN never wins
    assert quality_failures(rows, {"best": None}) == [
        "no n-gram baseline to beat: the job has no validation split"]


def test_only_the_quality_preset_asks_to_win_and_it_is_float32():
    assert [p for p, c in PRESET_CHECKS.items() if c.get("beat_ngram")] == ["quality"]
    spec = default_spec(preset="quality")
    assert spec.train["dtype"] == "float32" and spec.train["batching"] == "sequential"
    assert spec.train["num_train"] is None and spec.train["num_test"] > 0
    assert default_spec(preset="quick").train["dtype"] == "float64"
    assert default_spec(preset="quality", dtype="float64").train["dtype"] == "float64"
    assert set(PRESETS) == set(PRESET_CHECKS)


def test_margin_text_by_hand():
    assert margin_text(3.0, 4.0, "test") == (
        "RNN 3.000 vs best n-gram 4.000 on test: 25.0% lower (beats it)")
    assert margin_text(5.0, 4.0, "validation").endswith("25.0% higher (loses to it)")


def test_the_train_command_prints_and_saves_the_baselines(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--backend", "numpy", "--hidden-size", "8", "--batch-size", "16",
            "--num-steps", "8", "--epochs", "1", "--num-train", "64", "--num-val", "40",
            "--num-test", "48", "--out", str(out), "--num-preds", "0", "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    cfg = TrainConfig(batch_size=16, num_steps=8, num_train=64, num_val=40, num_test=48)
    want = baselines(load_corpus("default"), cfg)
    assert history["baselines"]["best"]["val_ppl"] == pytest.approx(want.best.val_ppl, rel=1e-12)
    assert history["baselines"]["test"]["best"] == pytest.approx(want.best_test, rel=1e-12)
    assert f"{want.unigram:.3f} / {want.test['unigram']:.3f}" in printed
    assert f"test perplexity {history['test']['test_ppl']:.3f} (384 tokens" in printed
    assert train_summary(history)[-1] in printed  # the test margin ends the summary
    assert "on test:" in printed.splitlines()[-2] or "on test:" in printed


def test_a_short_quality_like_run_beats_the_unigram(backend_name):
    """The quality recipe in miniature (GRU, sequential batching with the state carried, Adam
    with warmup and cosine decay, float32): a few hundred updates already beat the unigram
    baseline fitted on the same training text, on validation and on test."""
    backend = make_backend(backend_name, "float32")
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=32, cell="gru")
    cfg = TrainConfig(batching="sequential", batch_size=8, num_steps=16, num_train=8000,
                      num_val=2000, num_test=2000, max_epochs=5, optimizer="adam", lr=0.01,
                      schedule="cosine", warmup_steps=5, dtype="float32")  # fmt: skip
    result = train(backend, corpus, model, cfg, progress=False, baselines=True)
    b = result.history["baselines"]
    # Measured with the oracle: 6.7 (validation) and 6.4 (test) against unigrams of 16.3.
    assert result.history["epochs"][-1]["val_ppl"] < 0.6 * b["unigram"]
    assert result.history["test"]["test_ppl"] < 0.6 * b["test"]["unigram"]


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_a_float32_adam_job_replays_its_sampled_steps_with_adam(tmp_path):
    """The quality preset's verdict in miniature (the oracle judged as a framework, as every
    float32 job does): the sampled steps are replayed with the job's optimizer and the state it
    had, so an Adam run agrees with its replays. A replay that took plain SGD steps would miss
    every updated weight by about a learning rate."""
    overrides = {"hidden_size": 8, "batch_size": 4, "num_steps": 8, "max_epochs": 2,
                 "num_train": None, "num_val": 200, "num_test": 200}  # fmt: skip
    spec = default_spec("default", "quality", overrides)
    assert spec.train["optimizer"] == "adam" and spec.checks["sampled_steps"] > 0
    spec.checks["beat_ngram"] = False  # two tiny epochs do not beat a 5-gram; not the point
    report = run_compare(tmp_path, [], spec, log=lambda *_: None)
    assert report["passed"], report["failures"]
    oracle = report["frameworks"][0]
    replayed = [c for c in oracle["checks"] if c["step"] not in (None, 0)]
    assert replayed and any("optimizer slot" in c["what"] for c in replayed)
