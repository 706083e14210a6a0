"""Corpus sources: the embedded default, a local text file, or the textbook's Time Machine.

The Time Machine is looked up in a data directory (``$RNN_BACKENDS_DATA``, then the user cache
directory), else downloaded from the textbook's data URL, verified by SHA-1 and cached. A file
whose checksum does not match is an error, and a bad download is never kept.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpointing import atomic_stream
from ..errors import CorpusError, DownloadError
from .default_corpus import default_text
from .text import preprocess, tokenize
from .vocab import Vocab

TIMEMACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIMEMACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
TIMEMACHINE_FILE = "timemachine.txt"
DATA_ENV = "RNN_BACKENDS_DATA"
URL_ENV = "RNN_BACKENDS_TIMEMACHINE_URL"


@dataclass(frozen=True)
class Corpus:
    """A preprocessed corpus: its name, the text, its vocabulary and the token ids."""

    name: str
    text: str
    vocab: Vocab
    ids: np.ndarray  # int64 token ids, shape (N,)


def cache_dir() -> Path:
    """The per-user cache directory (``$XDG_CACHE_HOME/rnn-backends`` or ``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnn-backends"


def data_dirs() -> list[Path]:
    """Where a named corpus file is looked for, in order."""
    dirs = []
    if os.environ.get(DATA_ENV):
        dirs.append(Path(os.environ[DATA_ENV]))
    dirs.append(cache_dir())
    return dirs


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, sha1: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically; keep it only if its SHA-1 is ``sha1``.

    The bytes stream into a temporary file beside ``dest`` (:func:`atomic_stream`), which becomes
    ``dest`` only after the length and checksum are verified; on any failure (network,
    interruption, checksum) it is removed.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_stream(dest) as out:
        digest = hashlib.sha1()
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                expected = resp.headers.get("Content-Length")
                received = 0
                for block in iter(lambda: resp.read(1 << 16), b""):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise DownloadError(
                f"could not download {url}: {exc}; check the network, or place "
                f"{dest.name} in ${DATA_ENV}"
            ) from None
        if expected is not None and received != int(expected):
            raise DownloadError(
                f"download of {url} was interrupted: got {received} of {expected} bytes; "
                "run the command again"
            )
        got = digest.hexdigest()
        if got != sha1:
            raise DownloadError(
                f"checksum mismatch for {url}: SHA-1 {got}, expected {sha1}; the file was "
                "discarded. Try again later, or place a correct copy in "
                f"${DATA_ENV}"
            )
    return dest


def timemachine_path(download_missing: bool = True) -> Path:
    """Path of a verified copy of the Time Machine, downloading it into the cache if needed."""
    for folder in data_dirs():
        candidate = folder / TIMEMACHINE_FILE
        if candidate.is_file():
            got = sha1_of(candidate)
            if got != TIMEMACHINE_SHA1:
                raise DownloadError(
                    f"{candidate} has SHA-1 {got}, expected {TIMEMACHINE_SHA1}; delete it or "
                    "replace it with the textbook's timemachine.txt"
                )
            return candidate
    if not download_missing:
        raise CorpusError(
            f"timemachine.txt not found in {', '.join(map(str, data_dirs()))}; set ${DATA_ENV}"
        )
    url = os.environ.get(URL_ENV, TIMEMACHINE_URL)
    return download(url, cache_dir() / TIMEMACHINE_FILE, TIMEMACHINE_SHA1)


def read_text_file(path: str | os.PathLike[str]) -> str:
    """Read a UTF-8 text file, with errors a user can act on."""
    p = Path(path)
    if not p.exists():
        raise CorpusError(f"corpus file {str(p)!r} does not exist; pass an existing text file")
    if p.is_dir():
        raise CorpusError(f"corpus path {str(p)!r} is a directory; pass a text file")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {str(p)!r}: {exc.strerror}") from None
    if b"\x00" in data:
        raise CorpusError(f"corpus file {str(p)!r} looks binary (it has NUL bytes); pass text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(
            f"corpus file {str(p)!r} is not UTF-8 (bad byte at offset {exc.start}); "
            "convert it to UTF-8 first"
        ) from None


def load_corpus(source: str = "default", vocab: Vocab | None = None) -> Corpus:
    """Load and preprocess a corpus.

    Arguments:
        source: ``"default"`` (the embedded corpus), ``"timemachine"`` or a path to a text file.
        vocab: reuse this vocabulary (e.g. a checkpoint's); else one is built from the corpus.
    Returns:
        a :class:`Corpus` whose ``ids`` are int64 token ids.
    """
    if source == "default":
        raw = default_text()
    elif source == "timemachine":
        raw = timemachine_path().read_text(encoding="utf-8")
    else:
        raw = read_text_file(source)
    text = preprocess(raw)
    if not text.strip():
        what = "is empty" if not raw.strip() else "has no letters A-Z/a-z"
        raise CorpusError(f"corpus {source!r} {what}; a char-level model needs letters to learn")
    tokens = tokenize(text)
    vocab = vocab if vocab is not None else Vocab(tokens)
    return Corpus(name=source, text=text, vocab=vocab, ids=vocab.encode(tokens))
