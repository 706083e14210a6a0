"""The Time Machine download, against a local HTTP server on 127.0.0.1 (never the internet)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from rnn_backends.data import corpus as corpus_mod
from rnn_backends.errors import DownloadError


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""
    declared_length: int | None = None

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        length = self.declared_length if self.declared_length is not None else len(self.body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _serve(server, body: bytes, declared_length: int | None = None) -> str:
    _Handler.body = body
    _Handler.declared_length = declared_length
    return f"http://127.0.0.1:{server.server_address[1]}/timemachine.txt"


def test_download_verifies_and_caches(server, tmp_path):
    body = b"The Time Machine, in a test.\n" * 100
    url = _serve(server, body)
    dest = tmp_path / "cache" / "tm.txt"
    corpus_mod.download(url, dest, hashlib.sha1(body).hexdigest())
    assert dest.read_bytes() == body
    assert [p.name for p in dest.parent.iterdir()] == ["tm.txt"]


def test_checksum_mismatch_keeps_nothing(server, tmp_path):
    url = _serve(server, b"not the book")
    dest = tmp_path / "tm.txt"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        corpus_mod.download(url, dest, "0" * 40)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_keeps_nothing(server, tmp_path):
    url = _serve(server, b"only part of it", declared_length=10_000)
    dest = tmp_path / "tm.txt"
    with pytest.raises(DownloadError):
        corpus_mod.download(url, dest, "0" * 40)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(DownloadError, match="could not download"):
        corpus_mod.download("http://127.0.0.1:9/none.txt", tmp_path / "x.txt", "0" * 40, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_timemachine_downloads_into_cache_when_missing(server, tmp_path, monkeypatch):
    body = b"A stand-in book.\n"
    monkeypatch.setattr(corpus_mod, "TIMEMACHINE_SHA1", hashlib.sha1(body).hexdigest())
    monkeypatch.setenv(corpus_mod.URL_ENV, _serve(server, body))
    monkeypatch.delenv(corpus_mod.DATA_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = corpus_mod.timemachine_path()
    assert path == tmp_path / "rnn-backends" / "timemachine.txt"
    assert path.read_bytes() == body
    _serve(server, b"changed upstream")  # a second call reads the cache, not the server
    assert corpus_mod.timemachine_path().read_bytes() == body


def test_corrupted_local_copy_is_reported(tmp_path, monkeypatch):
    (tmp_path / "timemachine.txt").write_text("tampered")
    monkeypatch.setenv(corpus_mod.DATA_ENV, str(tmp_path))
    with pytest.raises(DownloadError, match="SHA-1"):
        corpus_mod.timemachine_path()
    assert Path(tmp_path / "timemachine.txt").exists()  # the user's own file is never deleted
