"""Crash-safe checkpoints, exact resume, the NaN guard and determinism.

The reference for every resumed run is an uninterrupted run of the same configuration: its final
weights must be equal bit for bit, and its history equal in everything but wall-clock times.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import make_backend

from rnn_backends import ModelConfig, TrainConfig, load_checkpoint, load_corpus
from rnn_backends.checkpointing import (
    CHECKPOINT_DIR,
    HISTORY_FILE,
    atomic_stream,
    write_atomic,
    write_json,
)
from rnn_backends.cli import main
from rnn_backends.errors import NonFiniteError
from rnn_backends.train import train

# Three epochs of eight sequential batches (4 rows x 8 steps over 268 tokens, whatever the epoch's
# random offset): 24 steps, so the kill points cross carried states and epoch boundaries.
TINY = dict(batch_size=4, num_steps=8, num_train=260, num_val=64, max_epochs=3, seed=3)
TINY_CLI = [
    "--batch-size", "4", "--num-steps", "8", "--num-train", "260", "--num-val", "64",
    "--epochs", "3", "--seed", "3", "--hidden-size", "8", "--batching", "sequential",
    "--device", "cpu", "--no-progress", "--num-preds", "0",
]  # fmt: skip
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
    return {k: v for k, v in history.items() if k != "step_seconds"}


def _assert_same_run(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a / CHECKPOINT_DIR), load_checkpoint(b / CHECKPOINT_DIR)
    assert ca.step == cb.step == TOTAL_STEPS
    assert set(ca.params) == set(cb.params)
    for k in ca.params:
        assert ca.params[k].dtype == cb.params[k].dtype
        assert ca.params[k].tobytes() == cb.params[k].tobytes(), f"{k} differs"
    ha = json.loads((a / HISTORY_FILE).read_text())
    hb = json.loads((b / HISTORY_FILE).read_text())
    assert len(ha["step_seconds"]) == TOTAL_STEPS
    assert _strip_times(ha) == _strip_times(hb)


def test_sigkill_at_random_points_then_resume_is_bit_identical(backend_name, tmp_path):
    # The uninterrupted run, through the API in this process: the killed and resumed processes
    # must reproduce it bit for bit.
    corpus, model, cfg = _setup("sequential")
    backend = make_backend(backend_name, "float32")  # skips when the framework is missing
    train(backend, corpus, model, cfg, out_dir=tmp_path / "ref", progress=False)
    assert load_checkpoint(tmp_path / "ref" / CHECKPOINT_DIR).step == TOTAL_STEPS
    args = [*TINY_CLI, "--backend", backend_name, "--checkpoint-every", str(EVERY)]

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


def _setup(batching: str, dtype: str = "float32"):
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=8)
    cfg = TrainConfig(batching=batching, dtype=dtype, **TINY)
    return corpus, model, cfg


@pytest.mark.parametrize("batching", ["windows", "sequential"])
def test_crash_inside_the_loop_then_resume_matches(backend_name, batching, tmp_path):
    corpus, model, cfg = _setup(batching)
    # One backend for the three runs: compiling once keeps this quick, and the kill test above
    # already resumes in fresh processes.
    backend = make_backend(backend_name, "float32")
    ref = train(backend, corpus, model, cfg, progress=False)
    n_steps = len(ref.history["step_loss"])
    rng = np.random.default_rng(zlib.crc32(f"{backend_name}-{batching}".encode()))
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
