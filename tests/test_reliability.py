"""Crash-safe checkpoints, exact resume, the NaN guard and determinism.

The reference for every resumed run is an uninterrupted run of the same configuration: its final
weights must be equal bit for bit, and its history equal in everything but wall-clock times.
"""

from __future__ import annotations

import json
import math
import os
import stat
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_backend

from rnn_backends import ModelConfig, TrainConfig, init_params, load_checkpoint, load_corpus
from rnn_backends.checkpointing import (
    CHECKPOINT_DIR,
    HISTORY_FILE,
    atomic_stream,
    write_atomic,
    write_json,
)
from rnn_backends.cli import main
from rnn_backends.errors import CheckpointError, NonFiniteError
from rnn_backends.train import train

# Three epochs of eight sequential batches (4 rows x 8 steps over 268 tokens, whatever the epoch's
# random offset): 24 steps, so the kill points cross carried states and epoch boundaries.
TINY = dict(batch_size=4, num_steps=8, num_train=260, num_val=64, max_epochs=3, seed=3)
TINY_CLI = [
    "--batch-size", "4", "--num-steps", "8", "--num-train", "260", "--num-val", "64",
    "--epochs", "3", "--seed", "3", "--hidden-size", "8", "--batching", "sequential",
    "--device", "cpu", "--no-progress", "--num-preds", "0",
]  # fmt: skip
# The optimizer with the most state to lose: Adam's two moments and its update count, a warmup
# and a cosine that spans the run, so a resumed step at the wrong rate or from fresh moments
# shows in the weights.
ADAM_COSINE = dict(optimizer="adam", lr=0.02, schedule="cosine", warmup_steps=5)
ADAM_COSINE_CLI = ["--optimizer", "adam", "--lr", "0.02", "--schedule", "cosine",
                   "--warmup-steps", "5"]  # fmt: skip
EVERY = 2
TOTAL_STEPS = 24

# Runs the CLI in a fresh interpreter and SIGKILLs it at the INDEX-th event of KIND:
#   step     after a train_step returns, before the loop records it (the update is lost);
#   fsync    after a temporary file is written and fsynced, before its rename;
#   replace  after a rename (e.g. the new weights are in place, the metadata is not yet).
LAUNCHER = r"""
import os, signal, sys
from rnn_backends import cli

kind, index, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
seen = [0]

def hit():
    seen[0] += 1
    if seen[0] == index:
        os.kill(os.getpid(), signal.SIGKILL)

if kind == "step":
    make = cli.get_backend
    def get_backend(*args, **kwargs):
        backend = make(*args, **kwargs)
        real_step = backend.train_step
        def train_step(*a, **k):
            out = real_step(*a, **k)
            hit()
            return out
        backend.train_step = train_step
        return backend
    cli.get_backend = get_backend
elif kind in ("fsync", "replace"):
    real = getattr(os, kind)
    def wrapped(*a, **k):
        out = real(*a, **k)
        hit()
        return out
    setattr(os, kind, wrapped)
sys.exit(cli.main(argv))
"""


def _run(kind: str, index: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", LAUNCHER, kind, str(index), *args],
        capture_output=True,
        text=True,
        timeout=240,
    )


# Per checkpoint: three files (the staged weights, metadata, history), each fsynced, renamed, and
# its folder fsynced after the rename; between the metadata and the history, the staged weights
# are renamed to params.npz and the folder fsynced (see rnn_backends.checkpointing).
PER_CHECKPOINT = {"fsync": 7, "replace": 4}


def _kill_plan(name: str) -> list[tuple[str, int, int]]:
    """Three kill points (kind, global step, event within the checkpoint) drawn from a generator
    seeded by the backend's name: random, different per framework, the same on every run. Each
    kind occurs once; the steps are distinct and increasing."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    kinds = ["step", "fsync", "replace"]
    rng.shuffle(kinds)
    steps = sorted(rng.choice(np.arange(1, TOTAL_STEPS - EVERY), size=3, replace=False))
    return [
        (kind, int(step), int(rng.integers(1, PER_CHECKPOINT.get(kind, 1) + 1)))
        for kind, step in zip(kinds, steps, strict=True)
    ]


def _event_index(kind: str, target: int, within: int, start: int, fresh: bool) -> int:
    """Which event of ``kind``, counted from the start of a process that begins at step
    ``start``, is the ``within``-th of the checkpoint written at or after step ``target``."""
    if kind == "step":
        return target - start
    at = -(-target // EVERY) * EVERY
    before = int(fresh) + sum(1 for s in range(start + 1, at) if s % EVERY == 0)
    return PER_CHECKPOINT[kind] * before + within


def _strip_times(history: dict) -> dict:
    # The train command adds the n-gram baselines (tests/test_quality.py checks them); they
    # are not part of what training must reproduce.
    return {k: v for k, v in history.items() if k not in ("step_seconds", "baselines")}


def _assert_same_run(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a / CHECKPOINT_DIR), load_checkpoint(b / CHECKPOINT_DIR)
    assert ca.step == cb.step == TOTAL_STEPS
    assert set(ca.params) == set(cb.params) and set(ca.arrays) == set(cb.arrays)
    for k in ca.params:
        assert ca.params[k].dtype == cb.params[k].dtype
        assert ca.params[k].tobytes() == cb.params[k].tobytes(), f"{k} differs"
    for k in ca.arrays:  # the optimizer's slots (and a carried state) too
        assert ca.arrays[k].tobytes() == cb.arrays[k].tobytes(), f"{k} differs"
    assert ca.extra["resume"]["optimizer"] == cb.extra["resume"]["optimizer"]
    ha = json.loads((a / HISTORY_FILE).read_text())
    hb = json.loads((b / HISTORY_FILE).read_text())
    assert len(ha["step_seconds"]) == TOTAL_STEPS
    assert _strip_times(ha) == _strip_times(hb)


def test_sigkill_at_random_points_then_resume_is_bit_identical(backend_name, tmp_path):
    """Adam with warmup and a cosine schedule, sequential batching: the weights, the carried
    state, Adam's moments and update count, and the schedule's position all survive the kills.
    (Plain SGD resumes in test_crash_inside_the_loop_then_resume_matches.)"""
    # The uninterrupted run, through the API in this process: the killed and resumed processes
    # must reproduce it bit for bit.
    corpus, model, cfg = _setup("sequential", **ADAM_COSINE)
    backend = make_backend(backend_name, "float32")  # skips when the framework is missing
    train(backend, corpus, model, cfg, out_dir=tmp_path / "ref", progress=False)
    ref = load_checkpoint(tmp_path / "ref" / CHECKPOINT_DIR)
    assert ref.step == TOTAL_STEPS and ref.train_config.optimizer == "adam"
    assert {k.split(":")[1] for k in ref.arrays if k.startswith("opt:")} == {"m", "v"}
    args = [*TINY_CLI, *ADAM_COSINE_CLI, "--backend", backend_name, "--checkpoint-every",
            str(EVERY)]  # fmt: skip

    run = tmp_path / "run"
    resumed_from = []
    for kind, step, within in _kill_plan(backend_name):
        meta = run / CHECKPOINT_DIR / "checkpoint.json"
        fresh = not meta.is_file()
        start = 0 if fresh else json.loads(meta.read_text())["step"]
        index = _event_index(kind, max(step, start + 1), within, start, fresh)
        how = ["--out", str(run)] if fresh else ["--resume", str(run)]
        out = _run(kind, index, "train", *args, *how)
        assert out.returncode == -9, (kind, step, index, out.returncode, out.stderr)
        resumed_from.append(start)
    out = _run("none", 0, "train", "--resume", str(run), "--no-progress", "--num-preds", "0")
    assert out.returncode == 0, out.stderr
    # The processes really resumed (not restarted from step 0), and no kill lost a checkpoint:
    # the step on disk never went back.
    assert resumed_from[0] == 0 and resumed_from[-1] > 0, resumed_from
    assert resumed_from == sorted(resumed_from)
    _assert_same_run(run, tmp_path / "ref")
    leftovers = [p.name for p in run.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []
    assert sorted(p.name for p in (run / CHECKPOINT_DIR).iterdir()) == [
        "checkpoint.json", "params.npz"
    ]  # fmt: skip


class _Stop(Exception):
    pass


# --- the atomic writer --------------------------------------------------------------------------


def test_a_write_that_fails_midway_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "record.json"
    write_json(target, {"step": 1})
    with pytest.raises(_Stop), atomic_stream(target) as fh:
        fh.write(b'{"step": 2, "trunc')
        raise _Stop
    assert json.loads(target.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["record.json"]


def test_two_writers_of_one_file_never_share_a_temporary(tmp_path):
    """Each writer streams into its own temporary file, so interleaved writers each commit a
    whole file (the last rename wins) and never a mixture."""
    target = tmp_path / "out.bin"
    with atomic_stream(target) as first:
        first.write(b"first " * 1000)
        write_atomic(target, b"second")  # a whole other write, committed meanwhile
        assert target.read_bytes() == b"second"
        first.write(b"end")
    assert target.read_bytes() == b"first " * 1000 + b"end"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_run_with_a_relative_corpus_resumes_from_another_folder(tmp_path, monkeypatch, capsys):
    """The corpus is found again by its absolute path, checked by size and checksum, and the
    resumed run equals an uninterrupted one."""
    from rnn_backends.data.default_corpus import default_text

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "book.txt").write_text(default_text())
    at = TINY_CLI.index("--epochs")
    args = TINY_CLI[:at] + TINY_CLI[at + 2 :]
    monkeypatch.chdir(tmp_path / "a")
    common = ["--backend", "numpy", "--corpus", "book.txt", *args]
    assert main(["train", *common, "--out", str(tmp_path / "ref"), "--epochs", "3"]) == 0
    assert main(["train", *common, "--out", str(tmp_path / "run"), "--epochs", "1"]) == 0
    monkeypatch.chdir(tmp_path / "b")
    assert main(["train", "--resume", str(tmp_path / "run"), "--epochs", "3", "--no-progress",
                 "--num-preds", "0"]) == 0  # fmt: skip
    capsys.readouterr()
    _assert_same_run(tmp_path / "run", tmp_path / "ref")


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_files_are_created_as_the_umask_says(tmp_path, umask):
    """As any other tool's files: mode 0666 narrowed by the umask (mkstemp's 0600 was not)."""
    old = os.umask(umask)
    try:
        assert main(["train", "--backend", "numpy", "--out", str(tmp_path / "run"),
                     *TINY_CLI]) == 0  # fmt: skip
    finally:
        os.umask(old)
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"checkpoint.json", "history.json"}
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name


def test_saving_deletes_only_the_weights_it_replaces(tmp_path):
    """save_checkpoint into a folder that holds other files (the API allows it) removes only
    the weights file its previous metadata named, and leaves a look-alike name alone."""
    from rnn_backends import save_checkpoint

    corpus, model, cfg = _setup("windows")
    ckpt = load_checkpoint(train(make_backend("numpy", "float32"), corpus, model, cfg,
                                 out_dir=tmp_path / "run", progress=False).checkpoint)  # fmt: skip
    folder = tmp_path / "mixed"
    folder.mkdir()
    theirs = {"params-mydata.npz": b"my data", "params-0123456789abcdef.npz.bak": b"backup",
              "notes.txt": b"notes"}  # fmt: skip
    for name, data in theirs.items():
        (folder / name).write_bytes(data)
    ckpt.extra = {}  # a plain checkpoint: no training position to keep in step
    for step in (1, 2, 3):
        ckpt.step = step
        ckpt.params = {k: v * np.float32(1.5) for k, v in ckpt.params.items()}
        save_checkpoint(folder, ckpt)
    assert {n: (folder / n).read_bytes() for n in theirs} == theirs
    ours = sorted(p.name for p in folder.iterdir() if p.name not in theirs)
    assert len(ours) == 2 and ours[0] == "checkpoint.json", ours
    assert load_checkpoint(folder).step == 3


def _setup(batching: str, dtype: str = "float32", **train: object):
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=8)
    cfg = TrainConfig(batching=batching, dtype=dtype, **{**TINY, **train})
    return corpus, model, cfg


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("batching", ["windows", "sequential"])
def test_crash_inside_the_loop_then_resume_matches(backend_name, batching, optimizer, tmp_path):
    extra = {} if optimizer == "sgd" else dict(ADAM_COSINE, optimizer="adamw", weight_decay=0.1)
    corpus, model, cfg = _setup(batching, **extra)
    # One backend for the three runs: compiling once keeps this quick, and the kill test above
    # already resumes in fresh processes.
    backend = make_backend(backend_name, "float32")
    ref = train(backend, corpus, model, cfg, progress=False)
    n_steps = len(ref.history["step_loss"])
    rng = np.random.default_rng(zlib.crc32(f"{backend_name}-{batching}-{optimizer}".encode()))
    crash_at = int(rng.integers(1, n_steps - 1))

    def crash(step: int, loss: float, seconds: float) -> None:
        if step == crash_at:
            raise _Stop

    with pytest.raises(_Stop):
        train(backend, corpus, model, cfg, out_dir=tmp_path, progress=False, on_step=crash,
              checkpoint_every=3)  # fmt: skip
    assert load_checkpoint(tmp_path / CHECKPOINT_DIR).step == 3 * (crash_at // 3)
    got = train(backend, corpus, model, cfg, out_dir=tmp_path, progress=False, resume=tmp_path)
    for k in ref.params:
        assert got.params[k].tobytes() == ref.params[k].tobytes(), k
    assert _strip_times(got.history) == _strip_times(ref.history)


def _tamper(folder: Path, edit) -> None:
    meta_path = folder / CHECKPOINT_DIR / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    edit(meta["extra"]["resume"]["optimizer"])
    meta_path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "edit,match",
    [
        (lambda o: o["arrays"].update({"opt:m:W_hh": [8, 9]}), "declared arrays"),
        (lambda o: o["arrays"].pop("opt:v:b_q"), "declared arrays"),
        (lambda o: o.update(kind="momentum"), "optimizer 'momentum', the config says 'adam'"),
        (lambda o: o.update(step=-1), "update count -1"),
    ],
)
def test_a_damaged_optimizer_state_is_refused(tmp_path, edit, match):
    """The optimizer's arrays are declared in the metadata (which no checksum covers); a
    declaration that does not fit the parameters or the optimizer is refused on resume."""
    corpus, model, cfg = _setup("windows", "float64", **ADAM_COSINE)
    oracle = make_backend("numpy", "float64")
    train(oracle, corpus, model, cfg, out_dir=tmp_path, progress=False)
    _tamper(tmp_path, edit)
    with pytest.raises(CheckpointError, match=f"damaged optimizer state.*{match}"):
        train(oracle, corpus, model, cfg, out_dir=tmp_path, progress=False, resume=tmp_path)


def test_a_schedule_that_spans_the_run_refuses_more_epochs_on_resume(tmp_path):
    corpus, model, cfg = _setup("windows", "float64", **ADAM_COSINE)
    oracle = make_backend("numpy", "float64")
    train(oracle, corpus, model, cfg, out_dir=tmp_path, progress=False)
    longer = TrainConfig(**{**cfg.to_dict(), "max_epochs": 5})
    with pytest.raises(CheckpointError, match="cosine schedule spans the whole run"):
        train(oracle, corpus, model, longer, out_dir=tmp_path, progress=False, resume=tmp_path)
    # With a constant rate the same resume goes on (test_training_longer_...).
    flat = TrainConfig(**{**cfg.to_dict(), "schedule": "constant"})
    train(oracle, corpus, model, flat, out_dir=tmp_path / "flat", progress=False)
    train(oracle, corpus, model, TrainConfig(**{**flat.to_dict(), "max_epochs": 4}),
          out_dir=tmp_path / "flat", progress=False, resume=tmp_path / "flat")  # fmt: skip


def test_training_longer_from_a_finished_run_equals_one_longer_run(tmp_path):
    corpus, model, cfg = _setup("windows", "float64")
    oracle = make_backend("numpy", "float64")
    short = TrainConfig(**{**cfg.to_dict(), "max_epochs": 1})
    train(oracle, corpus, model, short, out_dir=tmp_path, progress=False)
    got = train(oracle, corpus, model, cfg, out_dir=tmp_path, progress=False, resume=tmp_path)
    ref = train(oracle, corpus, model, cfg, progress=False)
    assert all(np.array_equal(got.params[k], ref.params[k]) for k in ref.params)
    assert got.history["step_loss"] == ref.history["step_loss"]
    assert got.history["epochs"] == ref.history["epochs"]


# --- the NaN/Inf guard --------------------------------------------------------------------------


class _Recorder:
    """Wraps a backend: remembers the exported weights after every step, and can make step
    ``poison_at`` report a NaN loss."""

    def __init__(self, backend, poison_at: int | None = None):
        self.backend, self.poison_at, self.after = backend, poison_at, []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def train_step(self, *args, **kwargs):
        res = self.backend.train_step(*args, **kwargs)
        if len(self.after) == self.poison_at:
            res.loss = float("nan")
        self.after.append(self.backend.export(res.params))
        return res


def test_nan_loss_stops_at_that_step_and_keeps_the_last_good_checkpoint(tmp_path):
    corpus, model, cfg = _setup("windows", "float64")
    clean = _Recorder(make_backend("numpy", "float64"))
    train(clean, corpus, model, cfg, progress=False)
    bad = _Recorder(make_backend("numpy", "float64"), poison_at=7)
    with pytest.raises(NonFiniteError, match=r"step 7 \(epoch 0\).*non-finite loss.*step 6"):
        train(bad, corpus, model, cfg, out_dir=tmp_path, progress=False, checkpoint_every=3)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_DIR)
    assert ckpt.step == 6
    # The weights on disk are those after the sixth update of a clean run.
    for k, v in clean.after[5].items():
        assert np.array_equal(ckpt.params[k], v), k
    history = json.loads((tmp_path / HISTORY_FILE).read_text())
    assert len(history["step_loss"]) == 6 and all(map(math.isfinite, history["step_loss"]))


def test_non_finite_weights_behind_a_finite_loss_are_never_written(tmp_path):
    """An update can overflow the weights while its own loss and gradient were finite; the
    checkpoint after it refuses, and the one before stays."""
    corpus, model, cfg = _setup("windows", "float64")

    class Overflow(_Recorder):
        def train_step(self, *args, **kwargs):
            res = self.backend.train_step(*args, **kwargs)
            if len(self.after) == 4:
                res.params = {k: np.full_like(v, np.inf) for k, v in res.params.items()}
            self.after.append(res.params)
            return res

    with pytest.raises(NonFiniteError, match=r"after step 5 .* is not finite; nothing was written"):
        train(Overflow(make_backend("numpy", "float64")), corpus, model, cfg, out_dir=tmp_path,
              progress=False, checkpoint_every=1)  # fmt: skip
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_DIR)
    assert ckpt.step == 4 and all(np.isfinite(v).all() for v in ckpt.params.values())


def test_divergence_is_caught_and_nothing_non_finite_is_written(backend_name, tmp_path):
    """A learning rate of 1e38 with clipping off overflows float32 within a few steps in every
    framework; the weights on disk stay finite and loadable."""
    corpus, model, _ = _setup("windows", "float32")
    cfg = TrainConfig(**{**TINY, "lr": 1e38, "grad_clip": 0.0})
    backend = make_backend(backend_name, "float32")
    with pytest.raises(NonFiniteError, match=r"step \d+ \(epoch \d\) produced a non-finite") as e:
        train(backend, corpus, model, cfg, out_dir=tmp_path, progress=False, checkpoint_every=1)
    step = int(str(e.value).split()[1])
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_DIR)
    assert ckpt.step <= step
    assert all(np.all(np.isfinite(v)) for v in ckpt.params.values())
    # The surviving checkpoint is exactly what an unbroken run held after that many steps.
    rec = _Recorder(make_backend(backend_name, "float32"))
    with pytest.raises(NonFiniteError):
        train(rec, corpus, model, cfg, progress=False)
    if ckpt.step:
        for k, v in rec.after[ckpt.step - 1].items():
            assert ckpt.params[k].tobytes() == v.tobytes(), k


def test_cli_reports_divergence_with_status_1(tmp_path, capsys):
    code = main(["train", "--backend", "numpy", "--lr", "1e38", "--grad-clip", "0",
                 "--out", str(tmp_path), "--checkpoint-every", "1",
                 *[a for a in TINY_CLI if a != "sequential" and a != "--batching"]])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "non-finite" in err and "step" in err
    assert "Traceback" not in err
    load_checkpoint(tmp_path / CHECKPOINT_DIR)  # still there, verified by its checksum


# --- determinism --------------------------------------------------------------------------------


@pytest.mark.parametrize("batching", ["windows", "sequential"])
def test_same_seed_twice_gives_identical_runs(framework_name, batching):
    corpus, model, cfg = _setup(batching)
    backend = make_backend(framework_name, "float32")
    runs = [train(backend, corpus, model, cfg, progress=False) for _ in range(2)]
    assert runs[0].history["step_loss"] == runs[1].history["step_loss"]
    assert runs[0].history["step_grad_norm"] == runs[1].history["step_grad_norm"]
    for k in runs[0].params:
        assert runs[0].params[k].tobytes() == runs[1].params[k].tobytes(), k
    other = TrainConfig(**{**cfg.to_dict(), "seed": cfg.seed + 1})
    third = train(backend, corpus, model, other, progress=False)
    assert third.history["step_loss"] != runs[0].history["step_loss"]


# --- concurrent writers and readers -------------------------------------------------------------

# The CLI in a fresh interpreter whose training pauses before its first update until the file
# GO exists: by then it holds the run folder's lock and has written the step-0 checkpoint.
PAUSED = r"""
import os, sys, time
from rnn_backends import cli

go, argv = sys.argv[1], sys.argv[2:]
make = cli.get_backend
def get_backend(*args, **kwargs):
    backend = make(*args, **kwargs)
    real_step = backend.train_step
    def train_step(*a, **k):
        while not os.path.exists(go):
            time.sleep(0.01)
        return real_step(*a, **k)
    backend.train_step = train_step
    return backend
cli.get_backend = get_backend
sys.exit(cli.main(argv))
"""


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_second_writer_is_refused_and_the_first_run_is_intact(tmp_path):
    """Two real train processes with one --out: the second exits 2 naming the first (pid,
    host, start time) and touches nothing; the first ends as an uninterrupted run would."""
    import socket

    corpus, model, cfg = _setup("sequential")
    train(make_backend("numpy", "float32"), corpus, model, TrainConfig(**{**cfg.to_dict()}),
          out_dir=tmp_path / "ref", progress=False)  # fmt: skip
    run, go = tmp_path / "run", tmp_path / "go"
    args = ["train", "--backend", "numpy", "--out", str(run), *TINY_CLI]
    first = subprocess.Popen([sys.executable, "-c", PAUSED, str(go), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(run / CHECKPOINT_DIR / "checkpoint.json", first)
        second = subprocess.run([sys.executable, "-m", "rnn_backends", *args],
                                capture_output=True, text=True, timeout=240)
        assert second.returncode == 2, second.stderr
        assert second.stderr.splitlines() == [
            f"rnn-backends: error: output directory {str(run)!r} is in use by process "
            f"{first.pid} on {socket.gethostname()}, started "
            + second.stderr.split(", started ")[1].split(";")[0]
            + "; wait for that run to end, or pass another folder"
        ], second.stderr
        # Also when the second writer means to continue the run (the lock, not the
        # checkpoint, is what refuses it).
        resumed = subprocess.run([sys.executable, "-m", "rnn_backends", "train", "--resume",
                                  str(run), "--no-progress"], capture_output=True, text=True,
                                 timeout=240)  # fmt: skip
        assert resumed.returncode == 2 and f"in use by process {first.pid}" in resumed.stderr
        go.touch()
        out, err = first.communicate(timeout=240)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, err
    _assert_same_run(run, tmp_path / "ref")


def test_loads_while_a_run_writes_checkpoints_are_whole_or_refused(tmp_path):
    """At least 180 loads, from 8 threads, while another process writes a checkpoint after
    every step: each load either gives exactly the weights the run had at the step it names,
    or a clean CheckpointError; never other weights, never another exception."""
    from concurrent.futures import ThreadPoolExecutor

    from rnn_backends.errors import CheckpointError

    epochs = 12
    corpus, model, cfg = _setup("sequential")
    cfg = TrainConfig(**{**cfg.to_dict(), "max_epochs": epochs})
    rec = _Recorder(make_backend("numpy", "float32"))
    train(rec, corpus, model, cfg, progress=False)
    initial = init_params(model, cfg.seed, "float32")
    run = tmp_path / "run"
    at = TINY_CLI.index("--epochs")
    args = [*TINY_CLI[:at], "--epochs", str(epochs), *TINY_CLI[at + 2 :]]
    writer = subprocess.Popen([sys.executable, "-m", "rnn_backends", "train", "--backend",
                               "numpy", "--out", str(run), "--checkpoint-every", "1", *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(run / CHECKPOINT_DIR / "checkpoint.json", writer)

    def load(_: int) -> tuple[str, int | None, bool]:
        try:
            ckpt = load_checkpoint(run / CHECKPOINT_DIR)
        except CheckpointError:
            return "refused", None, True
        except Exception as exc:  # noqa: BLE001 - the finding this test looks for
            return f"{type(exc).__name__}: {exc}", None, False
        want = initial if ckpt.step == 0 else rec.after[ckpt.step - 1]
        same = all(ckpt.params[k].tobytes() == want[k].tobytes() for k in want)
        return "loaded", ckpt.step, same

    results: list[tuple[str, int | None, bool]] = []
    with ThreadPoolExecutor(8) as pool:
        while (writer.poll() is None or len(results) < 180) and len(results) < 5000:
            results += pool.map(load, range(8))
    _, err = writer.communicate(timeout=240)
    assert writer.returncode == 0, err
    assert len(results) >= 180
    bad = [r for r in results if not r[2] or r[0] not in ("loaded", "refused")]
    assert bad == [], bad[:5]
    steps = {step for kind, step, _ in results if kind == "loaded"}
    assert len(steps) > 1, steps  # the loads saw the run move on
