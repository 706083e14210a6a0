"""Corpus sources: the embedded default, a local text file, or the textbook's Time Machine.

The Time Machine is looked up in a data directory (``$RNN_BACKENDS_DATA``, then the user cache
directory), else downloaded from the textbook's data URL, verified by SHA-1 and cached. A file
whose checksum does not match is an error, and a bad download is never kept.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import stat
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpointing import atomic_stream
from ..errors import CorpusError, DownloadError
from .default_corpus import default_text
from .text import preprocess
from .vocab import Vocab

TIMEMACHINE_URL = "http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt"
TIMEMACHINE_SHA1 = "090b5e7e70c295757f55df93cb0a180b9691891a"
TIMEMACHINE_FILE = "timemachine.txt"
DATA_ENV = "RNN_BACKENDS_DATA"
URL_ENV = "RNN_BACKENDS_TIMEMACHINE_URL"


@dataclass(frozen=True)
class CorpusFile:
    """The file a corpus was read from: its absolute path, size and the SHA-256 of its bytes
    (what a resumed run checks before it reads the file again)."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Corpus:
    """A preprocessed corpus: its name, the text, its vocabulary and the token ids, and the file
    it was read from (None for the embedded corpus)."""

    name: str
    text: str
    vocab: Vocab
    ids: np.ndarray  # token ids (N,), uint8 for a character vocabulary (see load_corpus)
    file: CorpusFile | None = None


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


# A corpus costs about two bytes of memory per character once loaded (the preprocessed text and
# its uint8 ids) and three while loading; beyond this size a file is refused rather than read.
MAX_CORPUS_BYTES = 1 << 30
CHUNK_BYTES = 1 << 22  # read, decoded and preprocessed this many bytes at a time


def _open_regular_file(path: Path) -> tuple[int, int]:
    """An open descriptor of ``path`` and its size, refusing anything but a regular file of at
    most :data:`MAX_CORPUS_BYTES` before a byte is read.

    Opened non-blocking, so a named pipe cannot block the open; checked with ``fstat`` on the
    descriptor itself, so what is checked is what is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise CorpusError(
            f"corpus file {str(path)!r} does not exist; pass an existing text file"
        ) from None
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {str(path)!r}: {exc.strerror}") from None
    info = os.fstat(fd)
    problem = None
    if stat.S_ISDIR(info.st_mode):
        problem = f"corpus path {str(path)!r} is a directory; pass a text file"
    elif not stat.S_ISREG(info.st_mode):
        problem = (
            f"corpus path {str(path)!r} is not a regular file (a device, pipe or socket); pass "
            "a text file"
        )
    elif info.st_size > MAX_CORPUS_BYTES:
        problem = (
            f"corpus file {str(path)!r} is {info.st_size} bytes, more than the "
            f"{MAX_CORPUS_BYTES} bytes this package reads (it holds about 2 bytes per character); "
            "use a part of it"
        )
    if problem:
        os.close(fd)
        raise CorpusError(problem)
    return fd, info.st_size


class _ChunkedText:
    """Decodes UTF-8 and preprocesses a chunk at a time, into ASCII bytes (letters and spaces).

    The result equals ``preprocess`` of the whole text: a multi-byte character split by a chunk
    boundary waits in the incremental decoder, and a run of non-letters that crosses a boundary
    still becomes one space (a chunk's leading space is dropped after a trailing one).
    """

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.decoder = codecs.getincrementaldecoder("utf-8")("strict")
        self.out = np.empty(capacity, dtype=np.uint8)  # preprocessing never lengthens the text
        self.size = 0  # bytes of self.out in use
        self.read = 0  # bytes of the file consumed so far
        self.has_text = False  # anything but whitespace in the raw file

    def feed(self, data: bytes, final: bool = False) -> None:
        if b"\x00" in data:
            raise CorpusError(
                f"corpus file {str(self.path)!r} looks binary (it has NUL bytes); pass text"
            )
        pending = len(self.decoder.getstate()[0])
        try:
            text = self.decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            raise CorpusError(
                f"corpus file {str(self.path)!r} is not UTF-8 (bad byte at offset "
                f"{self.read - pending + exc.start}); convert it to UTF-8 first"
            ) from None
        self.read += len(data)
        self.has_text = self.has_text or bool(text.strip())
        clean = preprocess(text).encode("ascii")
        if clean[:1] == b" " and self.size and self.out[self.size - 1] == ord(" "):
            clean = clean[1:]
        if self.size + len(clean) > len(self.out):  # the file grew while it was read
            raise CorpusError(
                f"corpus file {str(self.path)!r} changed while it was read; read it again"
            )
        self.out[self.size : self.size + len(clean)] = np.frombuffer(clean, dtype=np.uint8)
        self.size += len(clean)


def _read_preprocessed(path: Path) -> tuple[np.ndarray, bool, CorpusFile]:
    """The preprocessed text of a UTF-8 file as ASCII codes (uint8), read in chunks of
    :data:`CHUNK_BYTES`, whether the raw file had anything but whitespace, and the file's
    :class:`CorpusFile` (its bytes hashed as they are read)."""
    fd, size = _open_regular_file(path)
    digest = hashlib.sha256()
    try:
        reader = _ChunkedText(path, size)
        with os.fdopen(fd, "rb", buffering=0, closefd=False) as fh:
            while chunk := fh.read(CHUNK_BYTES):
                digest.update(chunk)
                reader.feed(chunk)
        reader.feed(b"", final=True)
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {str(path)!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    file = CorpusFile(str(Path(path).resolve()), reader.read, digest.hexdigest())
    return reader.out[: reader.size], reader.has_text, file


def file_fingerprint(path: str | os.PathLike[str]) -> tuple[int, str]:
    """Size and SHA-256 of the corpus file ``path``, read in chunks, after the checks every
    corpus file gets (a regular file within :data:`MAX_CORPUS_BYTES`); nothing is decoded."""
    fd, _ = _open_regular_file(Path(path))
    digest, size = hashlib.sha256(), 0
    try:
        while chunk := os.read(fd, CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
            if size > MAX_CORPUS_BYTES:
                raise CorpusError(f"corpus file {str(path)!r} grew while it was read")
    except OSError as exc:
        raise CorpusError(f"cannot read corpus file {str(path)!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
    return size, digest.hexdigest()


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids below ``vocab_size``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _encode(chars: np.ndarray, vocab: Vocab) -> np.ndarray:
    """Ids of ASCII codes ``chars`` (N,) through a 256-entry table; tokens the vocabulary lacks
    become ``<unk>``. (N,) of :func:`id_dtype`."""
    table = np.full(256, vocab.unk, dtype=id_dtype(len(vocab)))
    for token, index in vocab.token_to_idx.items():
        if len(token) == 1 and ord(token) < 256:
            table[ord(token)] = index
    return table[chars]


def _counts(chars: np.ndarray, block: int = 1 << 20) -> np.ndarray:
    """How often each ASCII code occurs in ``chars`` (N,): (256,) int64. Counted a block at a
    time, since bincount widens its input to int64 first."""
    counts = np.zeros(256, dtype=np.int64)
    for start in range(0, len(chars), block):
        counts += np.bincount(chars[start : start + block], minlength=256)
    return counts


def load_corpus(source: str = "default", vocab: Vocab | None = None) -> Corpus:
    """Load and preprocess a corpus.

    Arguments:
        source: ``"default"`` (the embedded corpus), ``"timemachine"`` or a path to a text file
            (a regular file of at most :data:`MAX_CORPUS_BYTES`, read in chunks).
        vocab: reuse this vocabulary (e.g. a checkpoint's); else one is built from the corpus.
    Returns:
        a :class:`Corpus` whose ``ids`` (N,) are of the smallest unsigned type that holds the
        vocabulary (uint8 for a character vocabulary); batches convert them to int64.
    """
    file = None
    if source == "default":
        raw = default_text()
        chars = np.frombuffer(preprocess(raw).encode("ascii"), dtype=np.uint8)
        has_text = bool(raw.strip())
    else:
        path = timemachine_path() if source == "timemachine" else Path(source)
        chars, has_text, file = _read_preprocessed(path)
    counts = _counts(chars)
    if counts.sum() == counts[ord(" ")]:
        what = "is empty" if not has_text else "has no letters A-Z/a-z"
        raise CorpusError(f"corpus {source!r} {what}; a char-level model needs letters to learn")
    if vocab is None:  # the textbook's vocabulary, from the counts (no list of tokens)
        vocab = Vocab({chr(code): int(n) for code, n in enumerate(counts) if n})
    ids = _encode(chars, vocab)
    # str() of a buffer decodes it in place: no bytes copy of the whole text.
    text = str(chars.data, "ascii")  # .data: the memoryview, as numpy's stubs type it
    return Corpus(name=source, text=text, vocab=vocab, ids=ids, file=file)
