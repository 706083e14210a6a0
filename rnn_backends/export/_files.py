"""Framework-free exports: a safetensors file and a plain ``.npz``, both under the book's names.

safetensors (the format, written here without the ``safetensors`` package): an unsigned 64-bit
little-endian header length N, then N bytes of UTF-8 JSON mapping each tensor's name to its
``dtype`` (``"F64"``, ``"F32"``, ...), ``shape`` and ``data_offsets`` ``[begin, end)`` into the
data that follows, plus an optional ``"__metadata__"`` object of strings; then the tensors' raw
little-endian bytes in C order, back to back with no gaps. The header is padded with spaces to a
multiple of 8 bytes so that the data starts aligned, as the reference implementation does.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointError
from ..params import param_shapes
from ._source import Weights

# safetensors dtype names <-> little-endian NumPy dtypes (bfloat16 has no NumPy dtype).
DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
    "I8": "i1", "U8": "u1", "BOOL": "?",
}  # fmt: skip
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}
MAX_HEADER = 100 * 2**20  # the reference implementation refuses larger headers too
METADATA = "__metadata__"


def metadata(weights: Weights) -> dict[str, str]:
    """What a safetensors export records beside the tensors: the model and the vocabulary."""
    meta = {"format": "rnn-backends", "model_config": json.dumps(weights.model.to_dict())}
    if weights.vocab is not None:
        meta["vocab"] = json.dumps(weights.vocab)
    return meta


def safetensors_bytes(tensors: Mapping[str, np.ndarray], meta: Mapping[str, str]) -> bytes:
    """The safetensors encoding of ``tensors`` (in the given order) with string ``meta``."""
    header: dict[str, object] = {METADATA: dict(meta)} if meta else {}
    chunks, offset = [], 0
    for name, value in tensors.items():
        arr = np.asarray(value)
        if arr.dtype not in NAMES:
            raise TypeError(f"{name}: dtype {arr.dtype} has no safetensors name")
        data = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": NAMES[arr.dtype], "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }  # fmt: skip
        chunks.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def read_safetensors(
    path: str | os.PathLike[str],
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The tensors (in file order) and the metadata of a safetensors file.

    The file is untrusted: the header length is bounded by the file and by 100 MiB, every entry
    is checked (dtype, shape, offsets that tile the data exactly) before an array is made.

    Raises:
        CheckpointError: not a safetensors file, truncated, or an entry that does not fit.
    """
    path = Path(path)

    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{str(path)!r} is not a valid safetensors file: {why}")

    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read {str(path)!r}: {exc}") from None
    if len(blob) < 8:
        raise bad("shorter than its 8-byte header length")
    n = int.from_bytes(blob[:8], "little")
    if n > min(MAX_HEADER, len(blob) - 8):
        raise bad(f"header length {n} exceeds the file or 100 MiB")
    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as exc:
        raise bad(f"header is not JSON ({exc})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    meta = header.pop(METADATA, {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("__metadata__ is not an object of strings")
    return _tensors(header, memoryview(blob)[8 + n :], bad), meta


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted(k for k in keys if keys.count(k) > 1)[0]
        raise ValueError(f"a name occurs twice: {twice!r}")
    return dict(pairs)


def _tensors(
    header: dict[str, Any], data: memoryview, bad: Callable[[str], CheckpointError]
) -> dict[str, np.ndarray]:
    """The arrays ``header``'s entries describe in ``data``, after checking that they tile it."""
    spans = []
    for name, entry in header.items():
        fields = isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"}
        shape, span = (entry["shape"], entry["data_offsets"]) if fields else (None, None)
        if not (
            fields
            and isinstance(entry["dtype"], str)
            and entry["dtype"] in DTYPES
            and isinstance(shape, list)
            and isinstance(span, list)
            and all(type(d) is int and d >= 0 for d in [*shape, *span])
            and len(span) == 2
        ):
            raise bad(f"entry {name!r} is not {{dtype, shape, data_offsets}} of a known dtype")
        size = math.prod(shape) * np.dtype(DTYPES[entry["dtype"]]).itemsize
        if span[1] - span[0] != size:
            raise bad(f"{name!r}: offsets {span} do not hold {entry['dtype']} of shape {shape}")
        spans.append((span[0], span[1], name))
    end = 0
    for begin, stop, name in sorted(spans):
        if begin != end:
            raise bad(f"{name!r} starts at {begin}, not where the previous tensor ends ({end})")
        end = stop
    if end != len(data):
        raise bad(f"tensors cover {end} bytes of data but the file holds {len(data)}")
    out = {}
    for name, entry in header.items():
        begin, stop = entry["data_offsets"]
        raw = np.frombuffer(data[begin:stop], dtype=DTYPES[entry["dtype"]])
        out[name] = raw.reshape(entry["shape"]).astype(raw.dtype.newbyteorder("="))
    return out


def safetensors_export(weights: Weights) -> bytes:
    """``weights`` as a safetensors file: the book's names in :func:`param_shapes` order."""
    order = param_shapes(weights.model)
    return safetensors_bytes({k: weights.params[k] for k in order}, metadata(weights))


def npz_export(weights: Weights) -> bytes:
    """``weights`` as a plain ``np.savez`` archive under the book's names (no pickle)."""
    buf = io.BytesIO()
    # numpy's stub types **kwds as if a name could be its allow_pickle flag; none is here.
    np.savez(buf, **{k: weights.params[k] for k in param_shapes(weights.model)})  # type: ignore[arg-type]
    return buf.getvalue()
