"""Progress and logs: the plain lines of a piped run, the bar on a terminal, metrics.csv (its rows
against the history, and a resumed run's file against an uninterrupted one's), the TensorBoard
events read back with tensorboard's own reader, and compare's per-framework progress."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_backend

from rnn_backends import ModelConfig, TrainConfig, load_checkpoint, load_corpus
from rnn_backends.checkpointing import CHECKPOINT_DIR, EVENTS_FILE, METRICS_FILE
from rnn_backends.progress import Progress, choose_mode, format_seconds
from rnn_backends.runlog import COLUMNS
from rnn_backends.train import train

REPO = Path(__file__).resolve().parents[1]
# Two epochs of 8 batches (128 windows, batch 16) on the embedded corpus.
TINY = dict(batch_size=16, num_steps=8, num_train=128, num_val=32, max_epochs=2, seed=1)
STEPS_PER_EPOCH = 8
TINY_CLI = ["--batch-size", "16", "--num-steps", "8", "--num-train", "128", "--num-val", "32",
            "--hidden-size", "8", "--num-preds", "0", "--device", "cpu"]  # fmt: skip
EPOCH_LINE = re.compile(
    r"^(?P<label>\w+) epoch (?P<k>\d+)/(?P<n>\d+): train ppl (?P<train>[\d.]+), "
    r"val ppl (?P<val>[\d.]+) \((?P<done>\d+)/(?P<total>\d+), [\dhms.]+(, ETA [\dhms.]+)?\)$"
)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI in a fresh interpreter with both output streams piped (not a terminal)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "rnn_backends", *args], capture_output=True,
                          text=True, timeout=600, env=env)  # fmt: skip


def _setup(hidden: int = 8, **overrides):
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=hidden)
    return corpus, model, TrainConfig(dtype="float64", **{**TINY, **overrides})


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / METRICS_FILE).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def _without_times(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in rows]


class _Stop(Exception):
    pass


def _crash_at(step_to_stop: int):
    def on_step(step: int, loss: float, seconds: float) -> None:
        if step == step_to_stop:
            raise _Stop

    return on_step


# --- the progress display ------------------------------------------------------------------------


def test_piped_train_prints_one_line_per_epoch_and_nothing_per_step(tmp_path):
    out = _cli("train", "--backend", "numpy", "--epochs", "3", "--out", str(tmp_path),
               *TINY_CLI)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "\x1b" not in out.stderr  # no bar, no terminal codes
    lines = out.stderr.splitlines()
    assert len(lines) == 3, out.stderr
    history = json.loads((tmp_path / "history.json").read_text())
    for k, (line, record) in enumerate(zip(lines, history["epochs"], strict=True), start=1):
        m = EPOCH_LINE.match(line)
        assert m, line
        assert (m["label"], int(m["k"]), int(m["n"])) == ("numpy", k, 3)
        # The figures are the run's own (as history.json records them), rounded to 4 places.
        assert float(m["val"]) == pytest.approx(record["val_ppl"], abs=5e-5)
        assert float(m["train"]) == pytest.approx(record["train_ppl"], abs=5e-5)
        assert (int(m["done"]), int(m["total"])) == (k * STEPS_PER_EPOCH, 3 * STEPS_PER_EPOCH)
        assert ("ETA" in line) == (k < 3)  # no time left to estimate after the last epoch


def test_no_progress_prints_nothing_on_stderr(tmp_path):
    out = _cli("train", "--backend", "numpy", "--epochs", "2", "--out", str(tmp_path),
               "--no-progress", *TINY_CLI)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""


def test_a_bar_shows_the_eta_the_loss_and_the_last_validation_perplexity(capsys):
    corpus, model, cfg = _setup()
    result = train(make_backend("numpy", "float64"), corpus, model, cfg, progress=True)
    err = capsys.readouterr().err
    assert err.startswith("\r") and err.endswith("\n")
    final = err.rstrip("\n").split("\r")[-1]  # what the terminal shows at the end
    assert final.startswith("numpy") and "16/16" in final
    # tqdm's [elapsed<remaining, rate] field: the ETA.
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d", final), final
    loss = float(re.search(r"loss=([\d.e+-]+)", final)[1])
    val = float(re.search(r"val_ppl=([\d.e+-]+)", final)[1])
    assert loss == pytest.approx(result.history["step_loss"][-1], rel=1e-3)  # 4 digits shown
    # The bar ends showing the last epoch's validation perplexity.
    assert val == pytest.approx(result.history["epochs"][-1]["val_ppl"], rel=1e-3)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_mode_follows_the_stream_unless_told():
    assert choose_mode(None, _Terminal()) == "bar"
    assert choose_mode(None, io.StringIO()) == "lines"
    assert choose_mode(True, io.StringIO()) == "bar"
    assert choose_mode(False, _Terminal()) == "off"


def test_a_plain_line_carries_the_position_and_an_eta_that_follows_the_rate():
    stream = io.StringIO()
    with Progress(4, "job", stream=stream, initial=1) as p:
        time.sleep(0.2)
        p.update(1)
        p.report("half")
        p.update(2)
        p.report("done")
    first, last = stream.getvalue().splitlines()
    m = re.fullmatch(r"job half \(2/4, ([\d.]+)s, ETA ([\d.]+)s\)", first)
    assert m, first
    # One unit (the resumed one does not count) took the elapsed time; two remain.
    assert float(m[2]) == pytest.approx(2 * float(m[1]), abs=0.15)
    assert re.fullmatch(r"job done \(4/4, [\d.]+s\)", last), last


@pytest.mark.parametrize(("seconds", "text"), [(7.24, "7.2s"), (185, "3m05s"), (7260, "2h01m")])
def test_durations_are_short(seconds, text):
    assert format_seconds(seconds) == text


# --- metrics.csv ---------------------------------------------------------------------------------


def test_metrics_csv_holds_every_update_and_epoch_of_the_history(tmp_path):
    corpus, model, cfg = _setup()
    t0 = time.time()
    result = train(make_backend("numpy", "float64"), corpus, model, cfg, out_dir=tmp_path,
                   progress=False, checkpoint_every=3)  # fmt: skip
    t1 = time.time()
    rows = _rows(tmp_path)
    history = result.history
    steps = [r for r in rows if r["loss"]]
    epochs = [r for r in rows if r["val_ppl"]]
    assert len(steps) + len(epochs) == len(rows)
    assert [int(r["step"]) for r in steps] == list(range(len(history["step_loss"])))
    assert [float(r["loss"]) for r in steps] == history["step_loss"]
    assert [float(r["grad_norm"]) for r in steps] == history["step_grad_norm"]
    assert [float(r["lr"]) for r in steps] == history["step_lr"]  # the schedule's, per update
    assert [int(r["epoch"]) for r in steps] == [s // STEPS_PER_EPOCH + 1 for s in range(16)]
    assert [(int(r["epoch"]), float(r["train_ppl"]), float(r["val_ppl"])) for r in epochs] == [
        (e["epoch"], e["train_ppl"], e["val_ppl"]) for e in history["epochs"]
    ]
    # Each epoch's row follows that epoch's last update and names it.
    for r in epochs:
        k = rows.index(r)
        assert int(r["step"]) == int(r["epoch"]) * STEPS_PER_EPOCH - 1 == int(rows[k - 1]["step"])
    times = [float(r["wall_time"]) for r in rows]
    assert t0 <= times[0] and times == sorted(times) and times[-1] <= t1


def _reference(tmp_path: Path, **overrides) -> list[dict[str, str]]:
    corpus, model, cfg = _setup(**overrides)
    train(make_backend("numpy", "float64"), corpus, model, cfg, out_dir=tmp_path / "ref",
          progress=False)  # fmt: skip
    return _rows(tmp_path / "ref")


@pytest.mark.parametrize(
    ("every", "stop"),
    [
        (5, 9),  # the epoch-1 rows (after the checkpoint at 5) are on disk: dropped, redone
        (8, 9),  # a checkpoint after the epoch's last update, before its validation
        (3, 14),  # several checkpoints, the crash late in epoch 2
    ],
)
def test_a_resumed_run_ends_with_the_metrics_of_an_uninterrupted_one(tmp_path, every, stop):
    ref = _reference(tmp_path)
    corpus, model, cfg = _setup()
    backend = make_backend("numpy", "float64")
    run = tmp_path / "run"
    with pytest.raises(_Stop):
        train(backend, corpus, model, cfg, out_dir=run, progress=False,
              checkpoint_every=every, on_step=_crash_at(stop))  # fmt: skip
    saved = load_checkpoint(run / CHECKPOINT_DIR).step
    assert saved == every * (stop // every)
    on_disk = _rows(run)
    if every == 5:
        assert max(int(r["step"]) for r in on_disk) >= saved  # rows past the checkpoint
    train(backend, corpus, model, cfg, out_dir=run, progress=False, resume=run)
    got = _rows(run)
    assert _without_times(got) == _without_times(ref)
    # The rows before the checkpoint kept their times; none was rebuilt without one.
    kept = [r for r in on_disk if r["loss"] and int(r["step"]) < saved]
    assert len(kept) == saved and [r for r in got if r["loss"]][:saved] == kept
    times = [float(r["wall_time"]) for r in got]
    assert times == sorted(times)


def test_a_torn_last_row_is_dropped_when_the_run_goes_on(tmp_path):
    ref = _reference(tmp_path)
    corpus, model, cfg = _setup()
    backend = make_backend("numpy", "float64")
    run = tmp_path / "run"
    with pytest.raises(_Stop):
        train(backend, corpus, model, cfg, out_dir=run, progress=False, checkpoint_every=4,
              on_step=_crash_at(6))  # fmt: skip
    with (run / METRICS_FILE).open("a", encoding="utf-8") as fh:
        fh.write("4,1,2.71")  # what a machine that failed mid-append could leave
    train(backend, corpus, model, cfg, out_dir=run, progress=False, resume=run)
    assert _without_times(_rows(run)) == _without_times(ref)
    assert all(r["wall_time"] for r in _rows(run))


def test_a_missing_metrics_file_is_rebuilt_from_the_history(tmp_path):
    """A run resumed without its metrics.csv (deleted, or written by an older version) still
    ends with every row; only the wall times of the rows before the checkpoint are unknown."""
    ref = _reference(tmp_path)
    corpus, model, cfg = _setup()
    backend = make_backend("numpy", "float64")
    run = tmp_path / "run"
    with pytest.raises(_Stop):
        train(backend, corpus, model, cfg, out_dir=run, progress=False, checkpoint_every=10,
              on_step=_crash_at(12))  # fmt: skip
    (run / METRICS_FILE).unlink()
    train(backend, corpus, model, cfg, out_dir=run, progress=False, resume=run)
    got = _rows(run)
    assert _without_times(got) == _without_times(ref)
    assert [bool(r["wall_time"]) for r in got if r["loss"]] == [s >= 10 for s in range(16)]


# Kills the CLI at its INDEX-th os.fsync: inside the checkpoint's writes, the history's, or the
# logs' (metrics.csv and the events file are fsynced on every append and rewrite).
KILL_AT_FSYNC = r"""
import os, signal, sys
from rnn_backends import cli
index, seen, real = int(sys.argv[1]), [0], os.fsync
def fsync(fd):
    real(fd)
    seen[0] += 1
    if seen[0] == index:
        os.kill(os.getpid(), signal.SIGKILL)
os.fsync = fsync
sys.exit(cli.main(sys.argv[2:]))
"""


def test_sigkilled_runs_resumed_end_with_the_metrics_of_an_uninterrupted_one(tmp_path):
    ref = _reference(tmp_path, max_epochs=3)
    run = tmp_path / "run"
    args = ["train", "--backend", "numpy", "--dtype", "float64", "--epochs", "3", "--seed", "1",
            "--checkpoint-every", "3", "--no-progress", *TINY_CLI]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    steps_on_disk = []
    for index in (9, 14, 23, 31):  # fsyncs counted from each process's start
        how = ["--resume", str(run)] if steps_on_disk else ["--out", str(run)]
        out = subprocess.run([sys.executable, "-c", KILL_AT_FSYNC, str(index), *args, *how],
                             capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
        assert out.returncode == -9, out.stderr
        steps_on_disk.append(load_checkpoint(run / CHECKPOINT_DIR).step)
    assert steps_on_disk == sorted(steps_on_disk) and steps_on_disk[-1] > 0, steps_on_disk
    out = _cli("train", "--resume", str(run), "--no-progress", "--num-preds", "0")
    assert out.returncode == 0, out.stderr
    assert _without_times(_rows(run)) == _without_times(ref)


# --- TensorBoard ---------------------------------------------------------------------------------


def _scalars(run: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = accumulator.EventAccumulator(str(run))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_events_hold_the_runs_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    corpus, model, cfg = _setup()
    result = train(make_backend("numpy", "float64"), corpus, model, cfg, out_dir=tmp_path,
                   progress=False)  # fmt: skip
    assert (tmp_path / EVENTS_FILE).is_file()
    scalars = _scalars(tmp_path)
    history = result.history
    f32 = lambda xs: [float(__import__("numpy").float32(x)) for x in xs]  # noqa: E731
    assert set(scalars) == {"loss", "grad_norm", "lr", "train_ppl", "val_ppl"}
    assert scalars["loss"] == list(enumerate(f32(history["step_loss"])))
    assert scalars["grad_norm"] == list(enumerate(f32(history["step_grad_norm"])))
    assert scalars["lr"] == list(enumerate(f32(history["step_lr"])))
    ends = [e["epoch"] * STEPS_PER_EPOCH - 1 for e in history["epochs"]]
    assert scalars["val_ppl"] == list(zip(ends, f32(e["val_ppl"] for e in history["epochs"]),
                                          strict=True))  # fmt: skip


def test_tensorboard_events_of_a_resumed_run_are_those_of_an_uninterrupted_one(tmp_path):
    pytest.importorskip("tensorboard")
    _reference(tmp_path)
    corpus, model, cfg = _setup()
    backend = make_backend("numpy", "float64")
    run = tmp_path / "run"
    with pytest.raises(_Stop):
        train(backend, corpus, model, cfg, out_dir=run, progress=False, checkpoint_every=5,
              on_step=_crash_at(11))  # fmt: skip
    train(backend, corpus, model, cfg, out_dir=run, progress=False, resume=run)
    got, ref = _scalars(run), _scalars(tmp_path / "ref")
    assert got == ref
    assert len(got["loss"]) == 16 and not any(math.isnan(v) for _, v in got["loss"])


def test_without_tensorboard_no_events_file_is_written(tmp_path, monkeypatch):
    from rnn_backends import runlog

    monkeypatch.setattr(runlog, "tensorboard_available", lambda: False)
    corpus, model, cfg = _setup()
    train(make_backend("numpy", "float64"), corpus, model, cfg, out_dir=tmp_path, progress=False)
    assert not (tmp_path / EVENTS_FILE).exists() and (tmp_path / METRICS_FILE).is_file()


def test_writing_the_events_imports_no_framework(tmp_path):
    pytest.importorskip("tensorboard")
    code = (
        "import sys; from rnn_backends import *; from rnn_backends.train import train\n"
        "c = load_corpus('default'); m = ModelConfig(vocab_size=len(c.vocab), hidden_size=4)\n"
        "cfg = TrainConfig(dtype='float64', batch_size=16, num_steps=8, num_train=64, "
        "num_val=16, max_epochs=1)\n"
        f"train(get_backend('numpy', dtype='float64'), c, m, cfg, out_dir={str(tmp_path)!r}, "
        "progress=False)\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'mxnet', 'keras') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert (tmp_path / EVENTS_FILE).is_file()


# --- compare -------------------------------------------------------------------------------------

COMPARE_TINY = ["--epochs", "2", "--hidden-size", "8", "--batch-size", "16", "--num-steps", "8",
                "--num-train", "128", "--num-val", "32", "--num-preds", "5"]  # fmt: skip


def _epoch_lines(stderr: str, label: str) -> list[int]:
    return [int(m["k"]) for m in map(EPOCH_LINE.match, stderr.splitlines())
            if m and m["label"] == label]  # fmt: skip


def test_piped_compare_shows_each_epoch_of_a_worker_process(tmp_path):
    """The oracle in a worker process (its own interpreter): its epoch lines reach this pipe."""
    out = _cli("compare", "--frameworks", "numpy", "--python", f"numpy={sys.executable}",
               "--out", str(tmp_path), *COMPARE_TINY)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert _epoch_lines(out.stderr, "numpy") == [1, 2]
    assert out.stderr.index("[numpy] training") < out.stderr.index("numpy epoch 1/2")


def test_piped_compare_shows_each_frameworks_epochs(framework_name, tmp_path):
    out = _cli("compare", "--frameworks", framework_name, "--out", str(tmp_path), *COMPARE_TINY)
    assert out.returncode == 0, out.stdout + out.stderr
    for name in ("numpy", framework_name):
        assert _epoch_lines(out.stderr, name) == [1, 2], out.stderr
    assert out.stderr.index("numpy epoch 2/2") < out.stderr.index(f"[{framework_name}] training")
