"""Hostile checkpoints: a good checkpoint directory changed the way an attacker (or a broken disk)
would change it, each change paired with what the refusal must say.

Each change keeps the checkpoint self-consistent apart from the hostile part: a crafted weights
file gets its own name and SHA-256 in ``checkpoint.json``, so the checksum cannot be what refuses
it. ``tests/test_bad_input.py`` takes every case through the command line (``generate`` and
``train --resume``: one line, exit 2) and the Python API (``load_checkpoint``, ``train(resume=)``:
a :class:`CheckpointError`).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

META = "checkpoint.json"


# --- reading and rewriting the good checkpoint ----------------------------------------------------


def meta_of(ckpt: Path) -> dict:
    return json.loads((ckpt / META).read_text())


def write_meta(ckpt: Path, meta: dict) -> None:
    (ckpt / META).write_text(json.dumps(meta))


def edit_meta(ckpt: Path, change: Callable[[dict], object]) -> None:
    meta = meta_of(ckpt)
    change(meta)
    write_meta(ckpt, meta)


def weights_path(ckpt: Path) -> Path:
    return ckpt / meta_of(ckpt)["params_file"]


def good_arrays(ckpt: Path) -> dict[str, np.ndarray]:
    with np.load(weights_path(ckpt)) as npz:
        return {k: npz[k] for k in npz.files}


def npy(array: np.ndarray | None = None, header: str | None = None, data: bytes | None = None,
        version: tuple[int, int] = (1, 0)) -> bytes:
    """A .npy file: ``array`` as NumPy writes it, or a hand-made ``header`` and ``data``."""
    if header is None:
        buf = io.BytesIO()
        np.lib.format.write_array(buf, array, version=version, allow_pickle=False)
        return buf.getvalue()
    raw = header.encode("latin1")
    raw += b" " * (-(len(raw) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + (data or b"")


def npz(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def arrays_npz(arrays: dict[str, np.ndarray], **kw) -> bytes:
    return npz([(f"{k}.npy", npy(v)) for k, v in arrays.items()], **kw)


def put_weights(ckpt: Path, blob: bytes, name: str | None = None) -> Path:
    """Replace the weights by ``blob`` under a new name, recorded with its SHA-256."""
    sha = hashlib.sha256(blob).hexdigest()
    old = weights_path(ckpt)
    path = ckpt / (name or f"params-{sha[:16]}.npz")
    path.write_bytes(blob)
    if old != path:
        old.unlink()
    edit_meta(ckpt, lambda m: m.update(params_file=path.name, params_sha256=sha))
    return path


def with_arrays(ckpt: Path, change: Callable[[dict[str, np.ndarray]], object], **kw) -> None:
    arrays = good_arrays(ckpt)
    change(arrays)
    put_weights(ckpt, arrays_npz(arrays, **kw))


def with_member(ckpt: Path, name: str, data: bytes) -> None:
    """The good members, with ``name``'s bytes replaced (or added)."""
    members = {f"{k}.npy": npy(v) for k, v in good_arrays(ckpt).items()}
    members[name] = data
    put_weights(ckpt, npz(list(members.items())))


def set_raw_meta(ckpt: Path, text: str) -> None:
    (ckpt / META).write_text(text)


# --- the changes ------------------------------------------------------------------------------


def _outside_weights(ckpt: Path, tmp: Path) -> None:
    """A valid weights file outside the directory, with the right checksum, named by a path."""
    blob = weights_path(ckpt).read_bytes()
    (tmp / "outside.npz").write_bytes(blob)
    rel = os.path.relpath(tmp / "outside.npz", ckpt)
    edit_meta(ckpt, lambda m: m.update(params_file=rel))


def _symlinked_weights(ckpt: Path, tmp: Path) -> None:
    weights = weights_path(ckpt)
    (tmp / "elsewhere.npz").write_bytes(weights.read_bytes())
    weights.unlink()
    weights.symlink_to(tmp / "elsewhere.npz")


def _symlink_inside(ckpt: Path, tmp: Path) -> None:
    weights = weights_path(ckpt)
    weights.rename(ckpt / "real.npz")
    weights.symlink_to("real.npz")


def _symlinked_meta(ckpt: Path, tmp: Path) -> None:
    (tmp / "meta.json").write_text((ckpt / META).read_text())
    (ckpt / META).unlink()
    (ckpt / META).symlink_to(tmp / "meta.json")


def _weights_are_a_folder(ckpt: Path, tmp: Path) -> None:
    weights = weights_path(ckpt)
    weights.unlink()
    weights.mkdir()


def _bomb(ckpt: Path, tmp: Path) -> None:
    """A deflated member that claims 2 GB of float32 zeros (its header says (23170, 23170), the
    zip's sizes say 2 GB); only the header and one megabyte of zeros are really there (what
    would inflate to 2 GB is the same stream, longer), and the file is about 1 kB."""
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (23170, 23170), }"
    body = npy(header=header) + bytes(1 << 20)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for key, value in good_arrays(ckpt).items():
            if key != "W_hh":
                zf.writestr(f"{key}.npy", npy(value))
        zf.writestr(zipfile.ZipInfo("W_hh.npy"), body, compress_type=zipfile.ZIP_DEFLATED)
    blob = bytearray(buf.getvalue())
    claimed = 23170 * 23170 * 4 + len(npy(header=header))
    # The uncompressed size: at byte 22 of the local header (name at 30), 24 of the central
    # directory entry (name at 46).
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        pos = blob.find(signature)
        while blob[pos + name_at : pos + name_at + 8] != b"W_hh.npy":
            pos = blob.find(signature, pos + 1)
        struct.pack_into("<I", blob, pos + size_at, claimed)
    put_weights(ckpt, bytes(blob))


def _deflated_member(ckpt: Path, tmp: Path) -> None:
    with_arrays(ckpt, lambda a: None, compression=zipfile.ZIP_DEFLATED)


def _corrupt_deflate(ckpt: Path, tmp: Path) -> None:
    arrays = good_arrays(ckpt)
    blob = bytearray(arrays_npz(arrays, compression=zipfile.ZIP_DEFLATED))
    start = blob.find(b"W_hh.npy") + len("W_hh.npy")
    blob[start + 5 : start + 25] = bytes(20)  # inside W_hh's deflate stream
    put_weights(ckpt, bytes(blob))


def _huge_header(ckpt: Path, tmp: Path) -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (10000000, 10000000), }"
    with_member(ckpt, "W_xh.npy", npy(header=header, data=bytes(64)))


def _size_mismatch(ckpt: Path, tmp: Path) -> None:
    arrays = good_arrays(ckpt)
    with_member(ckpt, "W_xh.npy", npy(arrays["W_xh"])[:-8])  # header promises 8 more bytes


def _malformed_header(ckpt: Path, tmp: Path) -> None:
    with_member(ckpt, "W_xh.npy", npy(header="__import__('os').system('true')"))


def _fortran(ckpt: Path, tmp: Path) -> None:
    with_arrays(ckpt, lambda a: a.update(W_hh=np.asfortranarray(a["W_hh"])))


def _dtype(new: str) -> Callable[[Path, Path], None]:
    def change(ckpt: Path, tmp: Path) -> None:
        with_arrays(ckpt, lambda a: a.update(W_xh=a["W_xh"].astype(new)))

    return change


def _strings(ckpt: Path, tmp: Path) -> None:
    with_arrays(ckpt, lambda a: a.update(b_q=np.array(["x"] * a["b_q"].size)))


def _big_endian(ckpt: Path, tmp: Path) -> None:
    with_arrays(ckpt, lambda a: a.update(W_xh=a["W_xh"].astype(">f4")))


def _poison(value: float) -> Callable[[Path, Path], None]:
    def change(ckpt: Path, tmp: Path) -> None:
        def put(a: dict[str, np.ndarray]) -> None:
            a["W_hh"] = a["W_hh"].copy()
            a["W_hh"][1, 2] = value

        with_arrays(ckpt, put)

    return change


def _unknown_member(ckpt: Path, tmp: Path) -> None:
    with_member(ckpt, "evil.npy", npy(np.zeros(3, dtype=np.float32)))


def _missing_member(ckpt: Path, tmp: Path) -> None:
    with_arrays(ckpt, lambda a: a.pop("W_hq"))


def _duplicate_member(ckpt: Path, tmp: Path) -> None:
    arrays = good_arrays(ckpt)
    members = [(f"{k}.npy", npy(v)) for k, v in arrays.items()]
    members.append(("b_q.npy", npy(arrays["b_q"])))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        put_weights(ckpt, npz(members))


def _not_a_zip(ckpt: Path, tmp: Path) -> None:
    put_weights(ckpt, b"not a zip archive at all, but the right checksum" * 100)


def _extra_bytes(ckpt: Path, tmp: Path) -> None:
    put_weights(ckpt, weights_path(ckpt).read_bytes() + bytes(1 << 20))


def _aux_unlisted(ckpt: Path, tmp: Path) -> None:
    with_member(ckpt, "aux:carry0.npy", npy(np.zeros((1, 8, 8), dtype=np.float32)))


def _aux_shape(ckpt: Path, tmp: Path) -> None:
    with_member(ckpt, "aux:carry0.npy", npy(np.zeros((1, 8, 9), dtype=np.float32)))
    edit_meta(ckpt, lambda m: m.update(arrays={"carry0": {"shape": [1, 8, 8],
                                                           "dtype": "float32"}}))


def _model_bigger_than_file(ckpt: Path, tmp: Path) -> None:
    edit_meta(ckpt, lambda m: m["model_config"].update(hidden_size=100_000))


def _field(path: str, value: object) -> Callable[[Path, Path], None]:
    """Set a metadata field (dotted path) to ``value``."""

    def change(ckpt: Path, tmp: Path) -> None:
        def put(meta: dict) -> None:
            *parents, last = path.split(".")
            node = meta
            for key in parents:
                node = node[key]
            node[last] = value

        edit_meta(ckpt, put)

    return change


def _raw_meta(transform: Callable[[str], str]) -> Callable[[Path, Path], None]:
    def change(ckpt: Path, tmp: Path) -> None:
        set_raw_meta(ckpt, transform((ckpt / META).read_text()))

    return change


def _deep_json(text: str) -> str:
    return text[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"


def _huge_meta(ckpt: Path, tmp: Path) -> None:
    meta = meta_of(ckpt)
    meta["extra"]["padding"] = "x" * (65 << 20)
    write_meta(ckpt, meta)


@dataclass(frozen=True)
class Hostile:
    id: str
    change: Callable[[Path, Path], None]  # (checkpoint directory, a scratch folder)
    needle: str  # a regular expression the refusal must match


HOSTILE = [
    # --- where the loader may read
    Hostile("params-file-traversal", _outside_weights,
            r"params_file '\.\./.*outside\.npz' is not a plain file name"),
    Hostile("params-file-absolute-existing", _field("params_file", "/etc/passwd"),
            r"params_file '/etc/passwd' is not a plain file name"),
    Hostile("params-file-absolute-missing", _field("params_file", "/no/such/file.npz"),
            r"params_file '/no/such/file.npz' is not a plain file name"),
    Hostile("params-file-empty", _field("params_file", ""), r"params_file '' is not a plain"),
    Hostile("params-file-not-a-string", _field("params_file", ["a.npz"]),
            r"params_file must be a string, got a list"),
    Hostile("weights-symlink-outside", _symlinked_weights,
            r"params\.npz: it is a symbolic link"),
    Hostile("weights-symlink-inside", _symlink_inside, r"params\.npz: it is a symbolic link"),
    Hostile("metadata-symlink", _symlinked_meta, r"checkpoint\.json: it is a symbolic link"),
    Hostile("weights-are-a-folder", _weights_are_a_folder,
            r"params\.npz: it is not a regular file"),
    # --- decompression and allocation bombs
    Hostile("deflate-bomb", _bomb, r"member W_hh\.npy is compressed"),
    Hostile("deflated-members", _deflated_member, r"member \w+\.npy is compressed"),
    Hostile("corrupted-deflate-stream", _corrupt_deflate, r"member \w+\.npy is compressed"),
    Hostile("header-claims-a-huge-array", _huge_header,
            r"W_xh\.npy declares shape \(10000000, 10000000\); expected \(\d+, 8\)"),
    Hostile("member-shorter-than-its-header", _size_mismatch,
            r"W_xh\.npy holds \d+ bytes of data; its header declares \d+"),
    Hostile("malformed-npy-header", _malformed_header, r"W_xh\.npy has a malformed \.npy header"),
    Hostile("unknown-member", _unknown_member, r"unknown member evil\.npy"),
    Hostile("missing-member", _missing_member, r"member W_hq\.npy is missing"),
    Hostile("duplicate-member", _duplicate_member, r"member b_q\.npy appears twice"),
    Hostile("weights-not-a-zip", _not_a_zip, r"is not a \.npz archive"),
    Hostile("weights-with-trailing-megabyte", _extra_bytes,
            r"is \d+ bytes, more than the \d+ a checkpoint of this model takes"),
    Hostile("model-bigger-than-its-weights", _model_bigger_than_file,
            r"needs \d+ bytes of weights but the weights file has \d+"),
    Hostile("unlisted-aux-array", _aux_unlisted, r"unknown member aux:carry0\.npy"),
    Hostile("aux-array-of-another-shape", _aux_shape,
            r"aux:carry0\.npy declares shape \(1, 8, 9\); expected \(1, 8, 8\)"),
    # --- what the weights hold
    Hostile("nan-weight", _poison(float("nan")), r"W_hh is not finite \(NaN or Inf\)"),
    Hostile("inf-weight", _poison(float("inf")), r"W_hh is not finite \(NaN or Inf\)"),
    Hostile("complex-weights", _dtype("complex64"), r"W_xh\.npy holds complex64, not float32"),
    Hostile("bool-weights", _dtype("bool"), r"W_xh\.npy holds bool, not float32"),
    Hostile("float16-weights", _dtype("float16"), r"W_xh\.npy holds float16, not float32"),
    Hostile("int-weights", _dtype("int64"), r"W_xh\.npy holds int64, not float32"),
    Hostile("float64-in-a-float32-checkpoint", _dtype("float64"),
            r"W_xh\.npy holds float64, not float32"),
    Hostile("string-weights", _strings, r"b_q\.npy holds <U1, not float32"),
    Hostile("big-endian-weights", _big_endian, r"W_xh\.npy holds >f4, not float32"),
    Hostile("fortran-order", _fortran, r"W_hh\.npy is stored in Fortran order"),
    # --- the vocabulary
    Hostile("multi-character-token", _field("vocab", ["<unk>", "ab", *"cdefghijklmnopqrstuvwxyz"]),
            r"vocab token 'ab' is neither one character nor '<unk>'"),
    Hostile("non-string-token", _field("vocab", ["<unk>", 3, *"bcdefghijklmnopqrstuvwxyz "]),
            r"vocab token 3 is neither one character nor '<unk>'"),
    Hostile("duplicate-token", _field("vocab", ["<unk>", "a", *"abcdefghijklmnopqrstuvwxy"]),
            r"vocab lists 'a' twice"),
    Hostile("vocab-without-unk", _field("vocab", list(" abcdefghijklmnopqrstuvwxyz")),
            r"vocab lacks '<unk>'"),
    Hostile("vocab-not-a-list", _field("vocab", "abc"), r"vocab must be a list, got a string"),
    # --- the metadata
    Hostile("json-nested-100000-deep", _raw_meta(_deep_json), r"nested deeper than 64 levels"),
    Hostile("metadata-too-large", _huge_meta,
            r"checkpoint\.json: it is \d+ bytes, more than the 67108864 a checkpoint's metadata"),
    Hostile("metadata-not-an-object", _raw_meta(lambda t: "[" + t + "]"),
            r"must hold a JSON object, got a list"),
    Hostile("step-as-string", _field("step", "12"), r"step must be an integer >= 0, got '12'"),
    Hostile("step-null", _field("step", None), r"step must be an integer >= 0, got None"),
    Hostile("step-nan", _raw_meta(lambda t: t.replace('"step": 16', '"step": NaN')),
            r"holds NaN, which is not JSON"),
    Hostile("step-negative", _field("step", -1), r"step must be an integer >= 0, got -1"),
    Hostile("extra-as-list", _field("extra", [1, 2]), r"extra must be a JSON object, got a list"),
    Hostile("extra-as-string", _field("extra", "x"), r"extra must be a JSON object, got a string"),
    Hostile("format-unknown", _field("format", 7), r"format 7 is not one this version reads"),
    Hostile("sha-not-hex", _field("params_sha256", "z" * 64),
            r"params_sha256 must be 64 hexadecimal digits"),
    Hostile("dtype-float16", _field("dtype", "float16"),
            r"dtype must be one of float32, float64, got 'float16'"),
    Hostile("model-config-wrong-type", _field("model_config.hidden_size", "8"),
            r"model_config: ModelConfig\.hidden_size must be a positive integer, got '8'"),
    Hostile("model-config-unknown-field", _field("model_config.dropout", 0.5),
            r"model_config: ModelConfig has no field\(s\) dropout"),
    Hostile("train-config-as-list", _field("train_config", [1]),
            r"train_config must be a JSON object or null, got a list"),
    Hostile("arrays-listing-malformed", _field("arrays", {"carry0": [1, 2]}),
            r"arrays\.carry0 must be an object with shape and dtype, got a list"),
    # --- the training position (only a resume reads it)
    Hostile("resume-epoch-as-string", _field("extra.resume.epoch", "x"),
            r"resume\.epoch must be an integer >= 0, got 'x'"),
    Hostile("resume-history-as-list", _field("extra.resume.history", []),
            r"resume\.history must be a JSON object, got a list"),
    Hostile("resume-meter-sum-as-string", _field("extra.resume.meter.loss_sum", "1.5"),
            r"resume\.meter\.loss_sum must be a finite number >= 0, got '1\.5'"),
    Hostile("resume-batch-ppl-as-dict", _field("extra.resume.meter.batch_ppl", {}),
            r"resume\.meter\.batch_ppl must be a list of finite numbers"),
    Hostile("resume-carry-as-string", _field("extra.resume.carry", "2"),
            r"resume\.carry must be null or 1 \(the state tensors of the rnn cell\), got '2'"),
    Hostile("resume-step-history-mismatch", _field("extra.resume.history.step_loss", [1.0]),
            r"resume\.history\.step_loss has 1 entries but the checkpoint is at step 16"),
    Hostile("resume-corpus-not-a-string", _field("extra.corpus", 5),
            r"extra\.corpus must be a string, got an integer"),
]  # fmt: skip
