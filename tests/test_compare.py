"""The compare job: workers, files, the oracle comparison, checkpoint interchange, the report."""

from __future__ import annotations

import json
import sys

import pytest

from rnn_backends import optim
from rnn_backends.compare import default_spec, run_compare

TINY = {"hidden_size": 16, "batch_size": 32, "num_steps": 8, "max_epochs": 2, "num_train": 512,
        "num_val": 128}


def _spec(dtype="float64", **extra):
    return default_spec("default", "quick", {**TINY, **extra}, dtype=dtype, num_preds=15)


def test_framework_agrees_with_oracle_in_report(framework_name, tmp_path):
    report = run_compare(tmp_path, [framework_name], _spec(), log=lambda *_: None)
    assert report["passed"], report["failures"]
    rows = {r["backend"]: r for r in report["frameworks"]}
    fw, oracle = rows[framework_name], rows["numpy"]
    assert fw["status"] == "ok"
    assert fw["loss_diff"] <= 1e-9 and fw["grad_diff"] <= 1e-10
    assert fw["greedy_text"] == oracle["greedy_text"]
    assert fw["sampled_text"] == oracle["sampled_text"]
    # Interchange: each side loads the other's checkpoint and gets the oracle's numbers.
    for source in ("numpy", framework_name):
        assert fw["interchange"][source]["val_ppl"] == pytest.approx(
            oracle["interchange"][source]["val_ppl"], rel=1e-9)
        assert fw["interchange"][source]["greedy_text"] == oracle["interchange"][source][
            "greedy_text"]
    saved = json.loads((tmp_path / "report.json").read_text())
    assert len(saved["frameworks"][1]["step_loss"]) == 2 * 512 // 32
    md = (tmp_path / "report.md").read_text()
    assert "**PASS**" in md and framework_name in md
    if "matplotlib" in sys.modules or _has_matplotlib():
        assert (tmp_path / "perplexity.png").stat().st_size > 1000


def _has_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def test_a_framework_that_skips_clipping_fails_the_job(framework_name, tmp_path, monkeypatch):
    """The textbook's JAX trainer never clipped; the job must catch that kind of bug."""
    real = optim.update
    monkeypatch.setattr(optim, "update", lambda ops, opt, p, g, slots, rates, max_norm: real(
        ops, opt, p, g, slots, rates, float("inf")))
    spec = _spec(grad_clip=0.05, lr=2.0)
    report = run_compare(tmp_path, [framework_name], spec, log=lambda *_: None)
    assert not report["passed"]
    prefix = f"{framework_name}: training loss at step "
    assert any(f.startswith(prefix) for f in report["failures"]), report["failures"]
    assert "**FAIL**" in (tmp_path / "report.md").read_text()


def test_float32_job_passes_and_shows_its_bounds(framework_name, tmp_path):
    """float32 against the float64 oracle: every check passes, each row says how close to what is
    allowed it came, and the report draws the deviations and prints both texts."""
    report = run_compare(tmp_path, [framework_name], _spec("float32"), log=lambda *_: None)
    assert report["passed"], report["failures"]
    rows = {r["backend"]: r for r in report["frameworks"]}
    for name in ("numpy", framework_name):  # the float32 oracle is judged too
        row = rows[name]
        assert 0 < row["multiple"] <= 1, row["worst"]
        assert {c["what"] for c in row["checks"]} >= {"gradient of W_hh", "loss", "training loss",
                                                      "W_hh after the step"}  # fmt: skip
        assert len(row["loss_diff_curve"]) == 2 * 512 // 32
    md = (tmp_path / "report.md").read_text()
    assert "worst deviation / allowed" in md and rows[framework_name]["sampled_text"] in md
    if _has_matplotlib():
        assert (tmp_path / "deviation.png").stat().st_size > 1000


def test_missing_framework_is_reported_not_counted(tmp_path, monkeypatch):
    from rnn_backends import compare

    monkeypatch.setattr(compare, "is_installed", lambda name: name == "numpy")
    report = run_compare(tmp_path, ["mxnet"], _spec(), log=lambda *_: None, allow_missing=True)
    rows = {r["backend"]: r for r in report["frameworks"]}
    assert rows["mxnet"]["status"].startswith("not installed")
    md = (tmp_path / "report.md").read_text()
    assert "Not run: mxnet (not installed" in md
    assert not report["passed"]  # a framework that did not run is never counted as passed
    assert "no framework could run" in md


def test_compare_cli_rejects_bad_python(tmp_path):
    from rnn_backends.cli import main

    assert main(["compare", "--python", "torch=/no/python", "--out", str(tmp_path)]) == 2
    assert main(["compare", "--frameworks", "caffe", "--out", str(tmp_path)]) == 2


def test_plots_draw_every_framework(tmp_path):
    """All five curves (oracle + four frameworks) get a line style and a bar."""
    pytest.importorskip("matplotlib")
    from rnn_backends.report import _plots

    rows = [
        {"backend": name, "epochs": [{"epoch": e, "train_ppl": 10.0 / e, "val_ppl": 11.0 / e}
                                     for e in (1, 2, 3)],
         "median_step_ms": 5.0 + i, "iqr_step_ms": 0.5}
        for i, name in enumerate(["numpy", "torch", "mxnet", "jax", "tensorflow", "extra"])
    ]
    assert _plots(tmp_path, rows) == ["perplexity.png", "step_time.png"]
    assert all((tmp_path / name).stat().st_size > 1000 for name in _plots(tmp_path, rows))


def test_the_report_only_renders():
    """report.py draws what compare.py decided and imports nothing from it (no cycle)."""
    import subprocess

    probe = "import sys, rnn_backends.report; print('rnn_backends.compare' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


# --- each job uses only what it produced -------------------------------------------------------

_ORACLE_ONLY = {"hidden_size": 8, "batch_size": 16, "num_steps": 8, "max_epochs": 1,
                "num_train": 64, "num_val": 16}


# An oracle-only job draws plots whose legends have nothing to list (report.py's concern).
@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_a_job_never_reads_an_earlier_jobs_results(tmp_path, monkeypatch):
    """An earlier job left a framework's checkpoint and record in the report folder (here a
    copy of the oracle's under the name torch, as an older torch run would have); a job that
    runs the oracle alone must neither list it nor load it in the interchange table, and a
    failing worker's stale record must not stand in for the run that failed."""
    import shutil

    from rnn_backends import compare

    spec = default_spec(overrides=_ORACLE_ONLY)
    first = run_compare(tmp_path, [], spec, log=lambda *_: None)
    assert first["passed"], first["failures"]
    shutil.copytree(tmp_path / "numpy", tmp_path / "torch")  # an earlier job's torch folder
    second = run_compare(tmp_path, [], spec, log=lambda *_: None)
    oracle = {r["backend"]: r for r in second["frameworks"]}["numpy"]
    assert [r["backend"] for r in second["frameworks"]] == ["numpy"]
    assert set(oracle["interchange"]) == {"numpy"}, oracle["interchange"]

    # The oracle's worker now fails in training: its record of the second job stays on disk
    # but must not be read; the job fails and says why.
    def broken(*args, **kwargs):
        raise RuntimeError("worker broke")

    monkeypatch.setattr(compare, "_train_phase", broken)
    third = run_compare(tmp_path, [], spec, log=lambda *_: None)
    assert not third["passed"]
    row = {r["backend"]: r for r in third["frameworks"]}["numpy"]
    assert row["status"].startswith("failed in train: RuntimeError") and "step_loss" not in row
    # A worker that ends well but wrote nothing of this job fails too.
    monkeypatch.setattr(compare, "_train_phase", lambda *args, **kwargs: None)
    fourth = run_compare(tmp_path, [], spec, log=lambda *_: None)
    row = {r["backend"]: r for r in fourth["frameworks"]}["numpy"]
    assert row["status"] == "failed in train: the worker wrote no record of this job"
    assert not fourth["passed"] and "step_loss" not in row


def test_frameworks_are_run_once_whatever_their_aliases(tmp_path, monkeypatch):
    from rnn_backends import compare

    ran = []
    real = compare._run_worker_process
    monkeypatch.setattr(compare, "_run_worker_process",
                        lambda name, *a: (ran.append(name), real(name, *a))[1])
    monkeypatch.setattr(compare, "is_installed", lambda name: name == "numpy")
    spec = default_spec(overrides=_ORACLE_ONLY)
    report = run_compare(tmp_path, ["numpy", "numpy", "numpy"], spec, log=lambda *_: None)
    assert [r["backend"] for r in report["frameworks"]] == ["numpy"]
    assert ran == ["numpy", "numpy"]  # one train phase, one interchange phase


@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_a_framework_asked_for_but_missing_fails_the_job_unless_allowed(tmp_path, monkeypatch,
                                                                        capsys):
    from rnn_backends import compare
    from rnn_backends.cli import main

    monkeypatch.setattr(compare, "is_installed", lambda name: name == "numpy")
    args = ["compare", "--frameworks", "torch,pytorch,numpy", "--out", str(tmp_path),
            "--hidden-size", "8", "--batch-size", "16", "--num-steps", "8", "--epochs", "1",
            "--num-train", "64", "--num-val", "16"]
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "FAIL: report written to" in out and "torch: failed: not installed here" in out
    assert out.count("torch:") == 1  # pytorch is torch: one row, one failure
    # Allowed to be missing, torch is no longer a failure, only named on the terminal; the job
    # still fails here because no framework at all ran beside the oracle.
    assert main([*args, "--allow-missing"]) == 1
    out, err = capsys.readouterr()
    assert "torch: failed" not in out and "no framework could run" in out
    # Standard error also carries the oracle's progress lines; torch is named once, warned.
    assert [line for line in err.splitlines() if "torch" in line] == [
        "rnn-backends: warning: torch was not run: not installed here (pass --python "
        "torch=PATH or use nox -s compare)"
    ], err


def test_replayed_steps_of_an_adam_run_use_its_optimizer(tmp_path):
    """A GRU trains with Adam by default: each sampled step is replayed with the optimizer and
    the moments saved before it, so the float32 oracle's own run passes against float64 replays
    (a replay by plain SGD would put every weight off by about the learning rate), and Adam's
    moments are checked too. (In float64, test_readme's LSTM compare line runs the same path
    against a framework.)"""
    report = run_compare(tmp_path, [], _spec("float32", cell="gru"), log=lambda *_: None)
    assert report["passed"], report["failures"]
    (row,) = report["frameworks"]
    checked = {c["what"] for c in row["checks"]}
    assert {"W_hh after the step", "optimizer slot m of W_hh", "optimizer slot v of b_q"} <= checked
