"""Bad input, end to end: every case through the command line (exit status 2, one line, no
traceback) and through the Python API (a specific exception), from one table.

Each case names the needle its message must contain: what was wrong and the offending value.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import importlib.util
import os
import re
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hostile import HOSTILE, Hostile

from rnn_backends import (
    BackendUnavailableError,
    CharBatches,
    CheckpointError,
    ConfigError,
    CorpusError,
    DiskFullError,
    DownloadError,
    FolderInUseError,
    ModelConfig,
    TrainConfig,
    UserError,
    get_backend,
    load_checkpoint,
    load_corpus,
    save_checkpoint,
)
from rnn_backends.backends.registry import canonical_name
from rnn_backends.cli import main
from rnn_backends.data import corpus as corpus_mod
from rnn_backends.generate import generate
from rnn_backends.resume import stored_corpus
from rnn_backends.runfolder import own_folder
from rnn_backends.train import train
from rnn_backends.workers import parse_pythons

SIZES = ["--batch-size", "8", "--num-steps", "8", "--num-train", "64", "--num-val", "16",
         "--hidden-size", "8", "--epochs", "2", "--no-progress", "--num-preds", "0"]  # fmt: skip
TINY = dict(batch_size=8, num_steps=8, num_train=64, num_val=16, max_epochs=2, dtype="float32")


# --- what the cases share -----------------------------------------------------------------------


class _Server(http.server.BaseHTTPRequestHandler):
    body = b""
    length: int | None = None

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(self.length or len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server():
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Server)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/timemachine.txt"
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished two-epoch run of the oracle on the embedded corpus (train writes its
    checkpoint at the end)."""
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--backend", "numpy", "--out", str(out), *SIZES]) == 0
    return out


@dataclass
class Ctx:
    tmp: Path
    run: Path  # a private copy of the finished run, free to damage
    url: str
    monkeypatch: pytest.MonkeyPatch
    stack: contextlib.ExitStack  # closed when the test ends

    def file(self, content: bytes, name: str = "corpus.txt") -> str:
        path = self.tmp / name
        path.write_bytes(content)
        return str(path)

    @property
    def ckpt(self) -> Path:
        return self.run / "checkpoint"

    def serve(self, body: bytes, length: int | None = None) -> None:
        """Point the Time Machine download at the local server, with no local copy to find."""
        _Server.body, _Server.length = body, length
        self.monkeypatch.setenv(corpus_mod.URL_ENV, self.url)
        self.monkeypatch.delenv(corpus_mod.DATA_ENV, raising=False)

    def hide(self, module: str) -> None:
        """Make ``module`` look not installed."""
        real = importlib.util.find_spec
        self.monkeypatch.setattr(
            importlib.util, "find_spec", lambda n, *a: None if n == module else real(n, *a)
        )


def _configs(corpus, **train):
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=8)
    return model, TrainConfig(**{**TINY, **train})


def _resume_with(ctx: Ctx, corpus_source: str = "default", hidden: int = 8, **train_fields):
    corpus = load_corpus(corpus_source)
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=hidden)
    cfg = TrainConfig(**{**TINY, **train_fields})
    backend = get_backend("numpy", dtype="float32")
    return train(backend, corpus, model, cfg, out_dir=ctx.run, progress=False, resume=ctx.run)


def _generate(ctx: Ctx, prefix: str = "the", num_preds: int = 5, temperature=None, seed=0):
    ckpt = load_checkpoint(ctx.ckpt)
    return generate(get_backend("numpy"), ckpt.params, ckpt.vocab, prefix, num_preds, temperature,
                    seed)


def _truncate_weights(ctx: Ctx) -> None:
    weights = ctx.ckpt / "params.npz"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def _flip_a_weight_byte(ctx: Ctx) -> None:
    weights = ctx.ckpt / "params.npz"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))


def _garble_metadata(ctx: Ctx) -> None:
    (ctx.ckpt / "checkpoint.json").write_text('{"format": 1, "model_con')


def _save_plain_checkpoint(ctx: Ctx) -> None:
    """A checkpoint written by save_checkpoint directly: weights, but no training position."""
    ckpt = load_checkpoint(ctx.ckpt)
    ckpt.extra = {}
    save_checkpoint(ctx.ckpt, ckpt)


def _disk_full(ctx: Ctx) -> None:
    """Every fsync fails with ENOSPC, as a full disk reports delayed allocation."""
    import errno
    import os

    def fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    ctx.monkeypatch.setattr(os, "fsync", fsync)


def _users_folder(ctx: Ctx) -> str:
    """A folder of someone's own files that happen to have this package's names."""
    mine = ctx.tmp / "mine"
    if not mine.exists():
        (mine / "checkpoint").mkdir(parents=True)
        (mine / "history.json").write_text('{"my": "notes"}')
        (mine / "checkpoint" / "params-mydata.npz").write_bytes(b"my data")
    return str(mine)


def _train_huge(ctx: Ctx):
    corpus = load_corpus("default")
    model = ModelConfig(vocab_size=len(corpus.vocab), hidden_size=100_000)
    backend = get_backend("numpy", dtype="float32")
    return train(backend, corpus, model, TrainConfig(**TINY), out_dir=ctx.tmp / "huge",
                 progress=False)  # fmt: skip


def _store_corpus(ctx: Ctx, path: str) -> None:
    """A crafted checkpoint naming ``path`` as its corpus (what an attacker can write)."""
    from hostile import edit_meta

    edit_meta(ctx.ckpt, lambda m: m["extra"].update(corpus=path))


def _resume_moved(ctx: Ctx, door: str):
    """A run started with a relative --corpus in folder a/, whose file then moved, resumed
    from folder b/."""
    a, b = ctx.tmp / "a", ctx.tmp / "b"
    a.mkdir()
    b.mkdir()
    (a / "book.txt").write_text(load_corpus("default").text)
    ctx.monkeypatch.chdir(a)
    assert main(["train", "--backend", "numpy", "--corpus", "book.txt", "--out",
                 str(ctx.tmp / "frun"), *SIZES]) == 0  # fmt: skip
    (a / "book.txt").rename(a / "elsewhere.txt")
    ctx.monkeypatch.chdir(b)
    if door == "cli":
        return ["train", "--resume", str(ctx.tmp / "frun"), "--epochs", "3", "--no-progress"]
    src = ctx.tmp / "frun" / "checkpoint"
    return stored_corpus(load_checkpoint(src), src)


def _same_letters_other_text(ctx: Ctx) -> str:
    # The embedded corpus with its first two words swapped: same vocabulary, different text.
    text = load_corpus("default").text
    words = text.split(" ")
    words[0], words[1] = words[1], words[0]
    return ctx.file(" ".join(words).encode(), "shuffled.txt")


def _train_api(ctx: Ctx, source: str = "default", out: Path | None = None, **kwargs):
    corpus = load_corpus(source)
    model, cfg = _configs(corpus)
    backend = get_backend("numpy", dtype="float32")
    return train(backend, corpus, model, cfg, out_dir=out, progress=False, **kwargs)


@dataclass
class Case:
    id: str
    cli: Callable[[Ctx], list[str]]
    api: Callable[[Ctx], object]
    error: type[Exception]
    needle: str  # in the CLI's line and in the exception's message
    cli_needle: str | None = None  # when argparse words the CLI's message differently
    setup: Callable[[Ctx], object] | None = None


def _train(*args: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["train", "--backend", "numpy", *SIZES, *args]


def _train_corpus(content: bytes, *args: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["train", "--backend", "numpy", "--corpus", ctx.file(content), *SIZES,
                        *args]  # fmt: skip


def _generate_cli(*args: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["generate", "--checkpoint", str(ctx.ckpt), "--prefix", "the", *args]


def _resume_cli(*args: str) -> Callable[[Ctx], list[str]]:
    return lambda ctx: ["train", "--resume", str(ctx.run), "--no-progress", "--num-preds", "0",
                        *args]  # fmt: skip


CASES = [
    # --- the corpus
    Case("empty-corpus", _train_corpus(b""), lambda c: load_corpus(c.file(b"")),
         CorpusError, "is empty"),
    Case("corpus-without-letters", _train_corpus(b"1898 -- 42!\n"),
         lambda c: load_corpus(c.file(b"1898 -- 42!\n")), CorpusError, "has no letters"),
    Case("binary-corpus", _train_corpus(b"\x89PNG\r\n\x1a\n\x00\x00abc"),
         lambda c: load_corpus(c.file(b"\x89PNG\r\n\x1a\n\x00\x00abc")), CorpusError,
         "looks binary"),
    Case("non-utf8-corpus", _train_corpus("caf\u00e9 cr\u00e8me".encode("latin-1")),
         lambda c: load_corpus(c.file("caf\u00e9 cr\u00e8me".encode("latin-1"))), CorpusError,
         r"not UTF-8 \(bad byte at offset 3\)"),
    Case("corpus-is-a-directory", lambda c: ["train", "--corpus", str(c.tmp), *SIZES],
         lambda c: load_corpus(str(c.tmp)), CorpusError, "is a directory"),
    Case("missing-corpus", lambda c: ["train", "--corpus", str(c.tmp / "nope.txt"), *SIZES],
         lambda c: load_corpus(str(c.tmp / "nope.txt")), CorpusError, "nope.txt' does not exist"),
    Case("corpus-is-a-device", lambda c: ["train", "--corpus", "/dev/zero", *SIZES],
         lambda c: load_corpus("/dev/zero"), CorpusError,
         "corpus path '/dev/zero' is not a regular file"),
    Case("corpus-larger-than-the-bound", _train_corpus(b"abc " * 500),
         lambda c: load_corpus(c.file(b"abc " * 500)), CorpusError,
         "is 2000 bytes, more than the 1000 bytes this package reads",
         setup=lambda c: c.monkeypatch.setattr(corpus_mod, "MAX_CORPUS_BYTES", 1000)),
    Case("corpus-shorter-than-num-steps", _train_corpus(b"Tiny!"),
         lambda c: CharBatches(load_corpus(c.file(b"Tiny!")).ids, TrainConfig(num_steps=8)),
         CorpusError, "has 5 tokens but num_steps=8 needs at least 9"),
    Case("more-train-windows-than-exist", _train("--num-train", "1000000"),
         lambda c: CharBatches(load_corpus().ids, TrainConfig(num_train=1_000_000)),
         CorpusError, "num_train=1000000"),
    Case("more-val-windows-than-exist", _train("--num-val", "9999999"),
         lambda c: CharBatches(load_corpus().ids, TrainConfig(num_val=9_999_999)),
         CorpusError, "num_val=9999999"),
    Case("sequential-rows-longer-than-corpus",
         _train("--batching", "sequential", "--batch-size", "64"),
         lambda c: CharBatches(load_corpus().ids, TrainConfig(**{**TINY, "batch_size": 64},
                                                              batching="sequential")),
         CorpusError, r"sequential batches of batch_size=64 x num_steps=8 need 512 training "
         r"windows but the training split has 64 \(num_train=64\); set num_train "
         r"\(--num-train\) to 512 or more.*set batch_size \(--batch-size\) to 8 or less"),
    # --- sizes and numbers
    Case("zero-batch-size", _train("--batch-size", "0"), lambda c: TrainConfig(batch_size=0),
         ConfigError, "batch_size must be a positive integer, got 0"),
    Case("negative-num-steps", _train("--num-steps", "-3"), lambda c: TrainConfig(num_steps=-3),
         ConfigError, "num_steps must be a positive integer, got -3"),
    Case("zero-hidden-size", _train("--hidden-size", "0"),
         lambda c: ModelConfig(vocab_size=28, hidden_size=0), ConfigError,
         "hidden_size must be a positive integer, got 0"),
    Case("zero-epochs", _train("--epochs", "0"), lambda c: TrainConfig(max_epochs=0),
         ConfigError, "max_epochs must be a positive integer, got 0"),
    Case("zero-num-train", _train("--num-train", "0"), lambda c: TrainConfig(num_train=0),
         ConfigError, "num_train must be a positive integer, got 0"),
    Case("negative-num-val", _train("--num-val", "-1"), lambda c: TrainConfig(num_val=-1),
         ConfigError, "num_val must be an integer >= 0, got -1"),
    Case("negative-lr", _train("--lr", "-0.5"), lambda c: TrainConfig(lr=-0.5), ConfigError,
         r"lr must be a finite number > 0, got -0.5"),
    Case("zero-lr", _train("--lr", "0"), lambda c: TrainConfig(lr=0.0), ConfigError,
         r"lr must be a finite number > 0, got 0.0"),
    Case("nan-lr", _train("--lr", "nan"), lambda c: TrainConfig(lr=float("nan")), ConfigError,
         r"lr must be a finite number > 0, got nan"),
    Case("infinite-lr", _train("--lr", "inf"), lambda c: TrainConfig(lr=float("inf")),
         ConfigError, r"lr must be a finite number > 0, got inf"),
    Case("negative-grad-clip", _train("--grad-clip", "-1"), lambda c: TrainConfig(grad_clip=-1.0),
         ConfigError, r"grad_clip must be a finite number >= 0, got -1.0"),
    Case("negative-seed", _train("--seed", "-7"), lambda c: TrainConfig(seed=-7), ConfigError,
         "seed must be an integer >= 0, got -7"),
    Case("zero-checkpoint-interval", _train("--checkpoint-every", "-2"),
         lambda c: _train_api(c, out=c.tmp / "o", checkpoint_every=0), ConfigError,
         "checkpoint(_every| every) must be", cli_needle=r"--checkpoint-every must be >= 0 steps"),
    # --- backends, cells, variants, dtypes
    Case("unknown-backend", lambda c: ["train", "--backend", "caffe", *SIZES],
         lambda c: get_backend("caffe"), BackendUnavailableError,
         "unknown backend 'caffe'; choose one of numpy, torch"),
    Case("framework-not-installed", lambda c: ["train", "--backend", "torch", *SIZES],
         lambda c: get_backend("torch"), BackendUnavailableError,
         r"needs PyTorch, which is not installed here; pip install -e '\.\[torch\]' in a clone",
         setup=lambda c: c.hide("torch")),
    Case("unknown-cell", _train("--cell", "transformer"),
         lambda c: ModelConfig(vocab_size=28, cell="transformer"), ConfigError,
         "cell must be one of .*got 'transformer'", cli_needle="invalid choice: 'transformer'"),
    Case("unknown-variant", _train("--variant", "turbo"),
         lambda c: get_backend("numpy", variant="turbo"), ConfigError,
         "has no variant 'turbo'; choose one of reference"),
    Case("unsupported-dtype", _train("--dtype", "float16"),
         lambda c: get_backend("numpy", dtype="float16"), ConfigError,
         "dtype must be one of float32, float64; got 'float16'",
         cli_needle="invalid choice: 'float16'"),
    Case("gpu-for-the-cpu-oracle", _train("--device", "gpu"),
         lambda c: get_backend("numpy", device="gpu"), ConfigError, "CPU only"),
    # --- checkpoints and resuming
    Case("missing-checkpoint",
         lambda c: ["generate", "--checkpoint", str(c.tmp / "none"), "--prefix", "a"],
         lambda c: load_checkpoint(c.tmp / "none"), CheckpointError, "not a checkpoint directory"),
    Case("truncated-checkpoint", _generate_cli(), lambda c: load_checkpoint(c.ckpt),
         CheckpointError, "truncated or corrupted", setup=_truncate_weights),
    Case("corrupted-weights", _generate_cli(), lambda c: load_checkpoint(c.ckpt),
         CheckpointError, "checksum mismatch", setup=_flip_a_weight_byte),
    Case("corrupted-metadata", _generate_cli(), lambda c: load_checkpoint(c.ckpt),
         CheckpointError, r"is corrupted \(checkpoint.json", setup=_garble_metadata),
    Case("resume-truncated-checkpoint", _resume_cli(), _resume_with, CheckpointError,
         "truncated or corrupted", setup=_truncate_weights),
    Case("resume-another-model", _resume_cli("--hidden-size", "16"),
         lambda c: _resume_with(c, hidden=16), CheckpointError,
         "another model or training setup .hidden_size: checkpoint 8, asked 16"),
    Case("resume-another-training-setup", _resume_cli("--batch-size", "4"),
         lambda c: _resume_with(c, batch_size=4), CheckpointError,
         "batch_size: checkpoint 8, asked 4"),
    Case("resume-another-vocabulary",
         lambda c: [*_resume_cli()(c), "--corpus", c.file(b"abc cab bca " * 40)],
         lambda c: _resume_with(c, c.file(b"abc cab bca " * 40)), CheckpointError,
         r"vocabulary of \d+ tokens that differs from the corpus .*\(5 tokens\)"),
    Case("resume-changed-corpus",
         lambda c: [*_resume_cli()(c), "--corpus", _same_letters_other_text(c)],
         lambda c: _resume_with(c, _same_letters_other_text(c)), CheckpointError,
         "changed since checkpoint"),
    Case("resume-fewer-epochs-than-done", _resume_cli("--epochs", "1"),
         lambda c: _resume_with(c, max_epochs=1), CheckpointError,
         "trained 2 full epochs and 0 batches, more than max_epochs=1; ask for at least 2"),
    Case("resume-a-run-whose-corpus-moved", lambda c: _resume_moved(c, "cli"),
         lambda c: _resume_moved(c, "api"), CorpusError,
         r"the corpus of run '.*frun/checkpoint', 'book.txt', is not at '.*/a/book.txt' any "
         r"more; pass --corpus with the text the run was trained on"),
    Case("resume-stored-corpus-is-a-device", _resume_cli(),
         lambda c: stored_corpus(load_checkpoint(c.ckpt), c.ckpt), CorpusError,
         "corpus path '/dev/zero' is not a regular file",
         setup=lambda c: _store_corpus(c, "/dev/zero")),
    Case("resume-stored-corpus-is-another-file", _resume_cli(),
         lambda c: stored_corpus(load_checkpoint(c.ckpt), c.ckpt), CorpusError,
         r"^[^\d]*'/etc/passwd' is not the corpus run '.*checkpoint' was trained on \(its bytes "
         r"or its text differ\); pass --corpus with the original text$",
         cli_needle=r"'/etc/passwd' is not the corpus run",
         setup=lambda c: _store_corpus(c, "/etc/passwd")),
    Case("resume-stored-corpus-is-binary", _resume_cli(),
         lambda c: stored_corpus(load_checkpoint(c.ckpt), c.ckpt), CorpusError,
         r"'.*secret.bin' is not the corpus run '.*checkpoint' was trained on \(its bytes or its "
         r"text differ\); pass --corpus with the original text$",
         setup=lambda c: _store_corpus(c, c.file(b"\x89PNG\r\n\x1a\n\x00\x00", "secret.bin"))),
    Case("resume-without-a-checkpoint",
         lambda c: ["train", "--resume", str(c.tmp), *SIZES],
         lambda c: _train_api(c, resume=c.tmp), CheckpointError, "holds no checkpoint"),
    Case("resume-checkpoint-without-position", _resume_cli(), _resume_with, CheckpointError,
         "records no training position", setup=_save_plain_checkpoint),
    Case("output-holds-another-run",
         lambda c: ["train", "--backend", "numpy", "--out", str(c.run), *SIZES],
         lambda c: _train_api(c, out=c.run), UserError,
         "already holds a checkpoint .step 16, numpy.; pass --resume"),
    Case("output-in-use-by-another-run", _resume_cli("--epochs", "3"),
         lambda c: _resume_with(c, max_epochs=3), FolderInUseError,
         rf"output directory '.*run' is in use by process {os.getpid()} on "
         rf"{re.escape(socket.gethostname())}, started \S+; wait for that run to end",
         setup=lambda c: c.stack.enter_context(own_folder(c.run))),
    Case("output-holds-the-users-files",
         lambda c: ["train", "--backend", "numpy", "--out", _users_folder(c), *SIZES],
         lambda c: _train_api(c, out=Path(_users_folder(c))), UserError,
         r"output directory '.*mine' holds files rnn-backends did not write \(checkpoint, "
         r"history.json\); pass an empty or new folder"),
    Case("model-larger-than-memory", _train("--hidden-size", "100000"),
         lambda c: _train_huge(c), ConfigError,
         r"the model and one training step need at least [\d.]+ GB \(parameters, gradients and "
         r"update [\d.]+ GB, .*\), but [\d.]+ [GM]B of memory is available; lower --hidden-size"),
    Case("unwritable-output-directory",
         lambda c: ["train", "--backend", "numpy", "--out", c.file(b"x", "f") + "/sub", *SIZES],
         lambda c: _train_api(c, out=Path(c.file(b"x", "f")) / "sub"), UserError,
         "cannot create output directory"),
    Case("disk-full-during-a-checkpoint", _resume_cli("--epochs", "3"),
         lambda c: _resume_with(c, max_epochs=3), DiskFullError,
         # The resumed run's first write is metrics.csv, rewritten to the checkpoint's rows.
         r"no space left on the device holding '.*metrics.csv' .*free some space, then resume; "
         r"the checkpoint of step 16 in '.*checkpoint' is intact", setup=lambda c: _disk_full(c)),
    # --- generation
    Case("negative-num-preds", _generate_cli("--num-preds", "-4"),
         lambda c: _generate(c, num_preds=-4), UserError,
         "num_preds must be an integer >= 0, got -4"),
    Case("zero-temperature", _generate_cli("--temperature", "0"),
         lambda c: _generate(c, temperature=0.0), UserError,
         "temperature must be a finite number > 0 .omit it for greedy., got 0.0"),
    Case("negative-temperature", _generate_cli("--temperature", "-1"),
         lambda c: _generate(c, temperature=-1.0), UserError,
         "temperature must be a finite number > 0 .omit it for greedy., got -1.0"),
    Case("negative-sampling-seed", _generate_cli("--temperature", "1", "--seed", "-3"),
         lambda c: _generate(c, temperature=1.0, seed=-3), UserError,
         r"seed must be an integer from 0 to 2\*\*63 - 1, got -3"),
    Case("subnormal-temperature", _generate_cli("--temperature", "5e-324"),
         lambda c: _generate(c, temperature=5e-324), UserError,
         r"temperature 5e-324 is below 0.001, where sampling is greedy decoding"),
    Case("too-many-predictions", _generate_cli("--num-preds", "100000001"),
         lambda c: _generate(c, num_preds=100_000_001), UserError,
         r"num_preds must be at most 1000000 .* got 100000001"),
    Case("train-asks-too-many-predictions", _train("--num-preds", "1000001"),
         lambda c: _generate(c, num_preds=1_000_001), UserError,
         r"num_preds must be at most 1000000 .* got 1000001"),
    Case("prefix-without-letters",
         lambda c: ["generate", "--checkpoint", str(c.ckpt), "--prefix", "1984"],
         lambda c: _generate(c, prefix="1984"), UserError, "prefix '1984' has no letters"),
    # --- worker interpreters (compare and bench)
    Case("python-without-a-path", lambda c: ["compare", "--python", "torch", "--out", str(c.tmp)],
         lambda c: parse_pythons(["torch"]), UserError,
         r"--python takes NAME=PATH \(e.g. torch=/venvs/torch/bin/python\), got 'torch'"),
    Case("python-that-does-not-exist",
         lambda c: ["bench", "--python", f"jax={c.tmp / 'nope'}", "--out", str(c.tmp)],
         lambda c: parse_pythons([f"jax={c.tmp / 'nope'}"]), UserError,
         r"--python jax: interpreter '.*nope' does not exist"),
    Case("python-for-an-unknown-framework",
         lambda c: ["bench", "--python", f"caffe={c.file(b'', 'python')}", "--out", str(c.tmp)],
         lambda c: parse_pythons([f"caffe={c.file(b'', 'python')}"]), BackendUnavailableError,
         "unknown backend 'caffe'; choose one of numpy, torch"),
    Case("bench-unknown-framework", lambda c: ["bench", "--frameworks", "torch,caffe"],
         lambda c: canonical_name("caffe"), BackendUnavailableError, "unknown backend 'caffe'"),
    # --- the Time Machine download
    Case("download-with-wrong-checksum", _train("--corpus", "timemachine"),
         lambda c: load_corpus("timemachine"), DownloadError,
         "checksum mismatch .*SHA-1 " + hashlib.sha1(b"not the book").hexdigest(),
         setup=lambda c: c.serve(b"not the book")),
    Case("interrupted-download", _train("--corpus", "timemachine"),
         lambda c: load_corpus("timemachine"), DownloadError,
         "was interrupted: got 14 of 100000 bytes",
         setup=lambda c: c.serve(b"part of a book", length=100_000)),
    Case("tampered-local-copy", _train("--corpus", "timemachine"),
         lambda c: load_corpus("timemachine"), DownloadError, "has SHA-1 .* expected",
         setup=lambda c: (
             (c.tmp / "timemachine.txt").write_text("tampered"),
             c.monkeypatch.setenv(corpus_mod.DATA_ENV, str(c.tmp)),
         )),
]  # fmt: skip


# Every hostile checkpoint (tests/hostile.py) through generate and load_checkpoint; the test
# after the table takes each through train --resume and train(resume=) too.
CASES += [
    Case(f"hostile-{h.id}", _generate_cli(), lambda c: load_checkpoint(c.ckpt), CheckpointError,
         h.needle, setup=lambda c, h=h: h.change(c.ckpt, c.tmp))
    for h in HOSTILE
]  # fmt: skip


@pytest.fixture
def ctx(tmp_path, finished_run, server, monkeypatch) -> Iterator[Ctx]:
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a default output directory (runs/...) lands here, if any
    with contextlib.ExitStack() as stack:
        yield Ctx(work, run, server, monkeypatch, stack)


def _user_error_classes() -> set[type[Exception]]:
    found, todo = set(), [UserError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo += cls.__subclasses__()
    return found


def test_every_kind_of_user_error_has_a_case():
    """Every UserError class the package defines is the exact exception of some case (the API
    test below checks the type exactly), so a new kind of user error cannot appear without a
    case that takes it through both doors, and no case names a class the package lacks."""
    assert {case.error for case in CASES} == _user_error_classes()


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_cli_says_what_is_wrong_in_one_line(case: Case, ctx: Ctx, capsys):
    if case.setup:
        case.setup(ctx)
    try:
        code = main(case.cli(ctx))
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert re.match(r"rnn-backends( train| generate| bench)?: error: ", lines[0]), lines[0]
    assert "Traceback" not in err
    assert re.search(case.cli_needle or case.needle, lines[0]), lines[0]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_api_raises_a_specific_exception(case: Case, ctx: Ctx):
    if case.setup:
        case.setup(ctx)
    with pytest.raises(case.error, match=case.needle) as info:
        case.api(ctx)
    assert type(info.value) is case.error, type(info.value)


def test_a_refused_run_leaves_the_other_run_untouched(ctx: Ctx, capsys):
    before = {p.name: p.read_bytes() for p in ctx.ckpt.iterdir()}
    history = (ctx.run / "history.json").read_bytes()
    assert main(["train", "--backend", "numpy", "--out", str(ctx.run), *SIZES, "--seed", "9"]) == 2
    capsys.readouterr()
    assert {p.name: p.read_bytes() for p in ctx.ckpt.iterdir()} == before
    assert (ctx.run / "history.json").read_bytes() == history
    # --overwrite replaces it: a new run with the new seed.
    argv = ["train", "--backend", "numpy", "--out", str(ctx.run), *SIZES, "--seed", "9"]
    assert main([*argv, "--overwrite"]) == 0
    assert load_checkpoint(ctx.ckpt).train_config.seed == 9


def test_prefix_outside_the_vocabulary_warns_and_reads_unk(ctx: Ctx, capsys):
    """Not an error: unknown prefix characters are read as <unk>, with a warning."""
    out = ctx.tmp / "abc"
    path = ctx.file(b"abc cab bca " * 40, "abc.txt")
    assert main(["train", "--backend", "numpy", "--corpus", path, "--out", str(out), *SIZES]) == 0
    capsys.readouterr()
    ckpt = load_checkpoint(out / "checkpoint")
    oracle = get_backend("numpy")
    with pytest.warns(UserWarning, match="'z' are not in the vocabulary; they are read as <unk>"):
        text = generate(oracle, ckpt.params, ckpt.vocab, "abz", 1)
    assert text[:3] == "abz"
    # What the model read is a, b, <unk>: its greedy next character is the oracle's for those ids.
    ids = np.array([[ckpt.vocab.token_to_idx["a"], ckpt.vocab.token_to_idx["b"], ckpt.vocab.unk]])
    logits, _ = oracle.forward(ckpt.params, ids)
    assert text[3] == ckpt.vocab.idx_to_token[int(np.argmax(logits[0, -1]))]
    code = main(["generate", "--checkpoint", str(out / "checkpoint"), "--prefix", "abz",
                 "--num-preds", "1"])  # fmt: skip
    stdout, err = capsys.readouterr()
    assert code == 0 and stdout.strip() == text
    assert err.startswith("rnn-backends: warning: ") and "'z'" in err and "<unk>" in err


def test_download_failures_keep_nothing(ctx: Ctx, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    for body, length in [(b"not the book", None), (b"part of a book", 100_000)]:
        ctx.serve(body, length)
        with pytest.raises(DownloadError):
            load_corpus("timemachine")
        assert not any(p.is_file() for p in cache.rglob("*"))


@pytest.mark.parametrize("hostile", HOSTILE, ids=lambda h: h.id)
def test_a_hostile_checkpoint_is_refused_the_same_way_when_resuming(
    hostile: Hostile, ctx: Ctx, capsys
):
    """The same refusal, word for word, on the resume path (the command line and the API): one
    loader reads every checkpoint."""
    hostile.change(ctx.ckpt, ctx.tmp)
    code = main(_resume_cli("--epochs", "3")(ctx))
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(hostile.needle, lines[0]), lines[0]
    with pytest.raises(CheckpointError, match=hostile.needle) as info:
        _resume_with(ctx, max_epochs=3)
    assert type(info.value) is CheckpointError
    assert str(info.value) in lines[0]


def test_a_full_disk_leaves_the_previous_checkpoint_whole(ctx: Ctx, capsys):
    before = load_checkpoint(ctx.ckpt)
    files = sorted(p.name for p in ctx.run.rglob("*"))
    _disk_full(ctx)
    assert main(_resume_cli("--epochs", "3")(ctx)) == 2
    capsys.readouterr()
    ctx.monkeypatch.undo()
    after = load_checkpoint(ctx.ckpt)
    assert after.step == before.step == 16
    assert all(np.array_equal(after.params[k], before.params[k]) for k in before.params)
    assert sorted(p.name for p in ctx.run.rglob("*")) == files  # no temporary, no orphan


def test_refusals_leave_the_users_files_and_create_nothing(ctx: Ctx, capsys):
    """The user's folder is left byte for byte (even with --overwrite), and a run refused for its
    memory creates no output directory at all."""
    mine = Path(_users_folder(ctx))
    before = {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()}
    for extra in ([], ["--overwrite"]):
        assert main(["train", "--backend", "numpy", "--out", str(mine), *SIZES, *extra]) == 2
    assert {p: p.read_bytes() for p in mine.rglob("*") if p.is_file()} == before
    assert main(["train", "--backend", "numpy", "--out", str(ctx.tmp / "huge"), *SIZES,
                 "--hidden-size", "100000"]) == 2  # fmt: skip
    capsys.readouterr()
    assert not (ctx.tmp / "huge").exists()


def test_a_stored_corpus_is_not_decoded_before_its_checksum_matches(ctx: Ctx, monkeypatch):
    """A run records its corpus file's size and SHA-256; a file of the same size but other
    bytes is refused from those alone, before a byte of it is decoded."""
    from rnn_backends import resume

    book = ctx.tmp / "book.txt"
    text = load_corpus("default").text
    book.write_text(text)
    out = ctx.tmp / "frun"
    assert main(["train", "--backend", "numpy", "--corpus", str(book), "--out", str(out),
                 *SIZES]) == 0  # fmt: skip
    book.write_text(text[::-1])  # the same size, the same letters, other bytes
    ckpt = load_checkpoint(out / "checkpoint")

    def never(*args, **kwargs):
        raise AssertionError("the file was decoded before its checksum was compared")

    monkeypatch.setattr(resume, "load_corpus", never)
    with pytest.raises(CorpusError, match="is not the corpus run"):
        stored_corpus(ckpt, out / "checkpoint")
