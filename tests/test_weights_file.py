"""The weights file inside a checkpoint: a stable name (``params.npz``) that a kill at any instant
of a write cannot leave inconsistent, and the checkpoints of earlier versions
(``params-<sha256[:16]>.npz``) still loading."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnn_backends import ModelConfig, init_params, load_checkpoint, save_checkpoint
from rnn_backends.checkpointing import META_FILE, PARAMS_FILE, Checkpoint
from rnn_backends.data.vocab import Vocab

OLD_CHECKPOINT = Path(__file__).parent / "data" / "checkpoint-0.1"

# Saves checkpoint B over the one in DIR, SIGKILLing itself at the INDEX-th call of os.fsync,
# os.replace or os.unlink (counted together, in the order they happen); INDEX 0 never kills and
# prints how many calls there were. B is the GRU of _model() with every weight + 1.
SAVE_B = r"""
import os, signal, sys
import numpy as np
from rnn_backends import ModelConfig, init_params, save_checkpoint
from rnn_backends.checkpointing import Checkpoint
from rnn_backends.data.vocab import Vocab

directory, index = sys.argv[1], int(sys.argv[2])
model = ModelConfig(vocab_size=5, hidden_size=3, cell="gru", init_sigma=0.5)
params = {k: v + 1.0 for k, v in init_params(model, seed=11).items()}
vocab = Vocab.from_tokens_list(["<unk>", " ", "a", "b", "c"])
seen = [0]
for name in ("fsync", "replace", "unlink"):
    real = getattr(os, name)
    def wrapped(*a, _real=real, **k):
        out = _real(*a, **k)
        seen[0] += 1
        if seen[0] == index:
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    setattr(os, name, wrapped)
save_checkpoint(directory, Checkpoint(params=params, model_config=model, vocab=vocab, step=9))
print(seen[0])
"""


def _model() -> ModelConfig:
    return ModelConfig(vocab_size=5, hidden_size=3, cell="gru", init_sigma=0.5)


def _old_params() -> dict[str, np.ndarray]:
    """What the fixture in tests/data/checkpoint-0.1 holds (written by version 0.1's writer from
    these very calls)."""
    params = init_params(_model(), seed=11)
    params["b_q"] = np.linspace(-1, 1, 5)
    return params


def _new_params() -> dict[str, np.ndarray]:
    return {k: v + 1.0 for k, v in init_params(_model(), seed=11).items()}


def _vocab() -> Vocab:
    return Vocab.from_tokens_list(["<unk>", " ", "a", "b", "c"])


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_weights_are_at_a_stable_name_with_the_books_names(tmp_path):
    params = _new_params()
    save_checkpoint(tmp_path, Checkpoint(params=params, model_config=_model(), vocab=_vocab()))
    with np.load(tmp_path / "params.npz") as npz:  # what a user would guess
        assert _same({k: npz[k] for k in npz.files}, params)
    assert sorted(p.name for p in tmp_path.iterdir()) == [META_FILE, PARAMS_FILE]
    assert json.loads((tmp_path / META_FILE).read_text())["params_file"] == "params.npz"


def test_a_checkpoint_of_version_0_1_still_loads(tmp_path):
    ckpt = load_checkpoint(OLD_CHECKPOINT)
    assert _same(ckpt.params, _old_params())
    assert ckpt.step == 3 and ckpt.model_config == _model()
    assert np.array_equal(ckpt.arrays["state"], np.full((1, 2, 3), 0.25))
    # Saving over it moves the weights to params.npz and removes the versioned file.
    copy = tmp_path / "ckpt"
    shutil.copytree(OLD_CHECKPOINT, copy)
    ckpt.params = _new_params()
    save_checkpoint(copy, ckpt)
    assert sorted(p.name for p in copy.iterdir()) == [META_FILE, PARAMS_FILE]
    assert _same(load_checkpoint(copy).params, _new_params())


def _save_b(directory: Path, index: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SAVE_B, str(directory), str(index)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.mark.parametrize("start", ["current", "version-0.1"])
def test_a_kill_at_any_instant_of_a_write_leaves_the_old_or_the_new_checkpoint(start, tmp_path):
    """Kill the writer after each of its fsyncs, renames and deletions in turn; every time the
    checkpoint on disk loads and is wholly the old one or wholly the new one, the old one before
    the metadata is replaced and the new one after, and the next write cleans up."""
    base = tmp_path / "base"
    if start == "current":
        save_checkpoint(base, Checkpoint(params=_old_params(), model_config=_model(),
                                         vocab=_vocab(), step=3))  # fmt: skip
    else:
        shutil.copytree(OLD_CHECKPOINT, base)
    (base / "params-0123456789abcdef.npz").write_bytes(b"left by an earlier killed write")
    shutil.copytree(base, tmp_path / "probe")
    clean = _save_b(tmp_path / "probe", 0)
    assert clean.returncode == 0, clean.stderr
    events = int(clean.stdout)
    assert events >= 8  # fsync x5, replace x3, at least one deletion

    seen = []
    for index in range(1, events + 1):
        run = tmp_path / f"kill{index}"
        shutil.copytree(base, run)
        out = _save_b(run, index)
        assert out.returncode == -9, (index, out.returncode, out.stderr)
        ckpt = load_checkpoint(run)
        if _same(ckpt.params, _old_params()):
            seen.append("old")
            assert ckpt.step == 3
        else:
            assert _same(ckpt.params, _new_params()), f"kill at event {index}: a mixture"
            seen.append("new")
            assert ckpt.step == 9
        # The next write (e.g. by the resumed run) leaves exactly the two files.
        ckpt.params = {k: v * 2 for k, v in ckpt.params.items()}
        save_checkpoint(run, ckpt)
        assert sorted(p.name for p in run.iterdir() if not p.name.endswith(".tmp")) == [
            META_FILE, PARAMS_FILE
        ]  # fmt: skip
        assert _same(load_checkpoint(run).params, ckpt.params)
    # Old up to the commit (the metadata's rename), new from then on: both must occur.
    assert seen == sorted(seen, key=["old", "new"].index), seen
    assert "old" in seen and "new" in seen, seen
