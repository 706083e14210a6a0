"""Reading a checkpoint's weights file (an uncompressed ``.npz``) as untrusted input.

``np.load`` trusts the file: it inflates whatever a member claims and allocates whatever a
``.npy`` header declares. Here every member is checked against what the model expects *before*
anything is allocated or inflated, with reads of bounded length:

* the zip's central directory: each member is ``<name>.npy`` for an expected name, appears once,
  is stored (never compressed: a 2 MB member could otherwise inflate to gigabytes, and this
  package never compresses) and lies inside the file;
* each member's ``.npy`` header (at most :data:`MAX_HEADER` bytes, parsed as a literal, never
  evaluated): the dtype must be exactly the expected little-endian float, the order C, the shape
  the expected one, and the member's size header plus exactly that many bytes;
* only then is the array allocated (at most the member's size, which is inside the file) and read.

Every refusal raises :class:`~rnn_backends.checkpoint_schema.Invalid` with what is wrong.
"""

from __future__ import annotations

import ast
import io
import math
import struct
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, cast

import numpy as np

from .checkpoint_schema import Invalid

MAGIC = b"\x93NUMPY"
MAX_HEADER = 4096  # NumPy writes 118-byte headers for these arrays
# Bytes a member may take beyond its data: the zip's local header and central directory entry
# (with zip64 extras) around twice its name, and the .npy header.
_MEMBER_OVERHEAD = 30 + 46 + 2 * 32 + 12 + MAX_HEADER
_ARCHIVE_OVERHEAD = 22 + 56 + 20  # end of central directory records (zip64 too)


@dataclass(frozen=True)
class Expected:
    """What one member must hold: a C-ordered array of this shape and little-endian dtype."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def size_bounds(expected: Mapping[str, Expected]) -> tuple[int, int]:
    """The least and the most bytes a weights file holding exactly ``expected`` can take."""
    data = sum(e.nbytes for e in expected.values())
    names = sum(2 * len(name) + 8 for name in expected)
    return data, data + names + len(expected) * _MEMBER_OVERHEAD + _ARCHIVE_OVERHEAD


def _show(name: str) -> str:
    return name if name.isprintable() and len(name) <= 80 else repr(name[:80])


def _dtype_words(descr: str) -> str:
    """``complex64``, ``int64``, ``bool`` for plain types; the descriptor itself (``>f4``,
    ``<U1``, ``|O``) where the name would hide the byte order or kind."""
    try:
        dtype = np.dtype(descr)
    except (TypeError, ValueError):
        return repr(descr[:40])
    if dtype.kind in "fciub" and dtype.byteorder in "=<|":
        return dtype.name
    return descr


def _read_exact(fh: io.BufferedIOBase, n: int, name: str) -> bytes:
    data = fh.read(n)
    if len(data) != n:
        raise Invalid(f"{name} ends inside its .npy header")
    return data


def _header(fh: io.BufferedIOBase, name: str) -> tuple[dict, int]:
    """The member's parsed ``.npy`` header and its length in bytes (magic and length included)."""
    magic = _read_exact(fh, 8, name)
    if magic[:6] != MAGIC or magic[6] not in (1, 2, 3) or magic[7] != 0:
        raise Invalid(f"{name} is not a .npy array")
    width = 2 if magic[6] == 1 else 4
    (length,) = struct.unpack("<H" if width == 2 else "<I", _read_exact(fh, width, name))
    if length > MAX_HEADER:
        raise Invalid(f"{name} has a malformed .npy header ({length} bytes long)")
    text = _read_exact(fh, length, name).decode("utf-8" if magic[6] == 3 else "latin1", "replace")
    try:
        header = ast.literal_eval(text)  # literals only: nothing in it can run
    except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
        header = None
    if not isinstance(header, dict) or set(header) != {"descr", "fortran_order", "shape"}:
        raise Invalid(f"{name} has a malformed .npy header")
    shape = header["shape"]
    if (
        not isinstance(header["descr"], str)
        or not isinstance(header["fortran_order"], bool)
        or not isinstance(shape, tuple)
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise Invalid(f"{name} has a malformed .npy header")
    return header, 8 + width + length


def _read_member(fh: io.BufferedIOBase, name: str, size: int, want: Expected) -> np.ndarray:
    """The array in member ``name`` of ``size`` bytes, checked against ``want`` first."""
    header, header_size = _header(fh, name)
    if header["descr"] != want.dtype.str:
        raise Invalid(f"{name} holds {_dtype_words(header['descr'])}, not {want.dtype.name}")
    if header["fortran_order"]:
        raise Invalid(f"{name} is stored in Fortran order; this package stores C order")
    if header["shape"] != want.shape:
        raise Invalid(f"{name} declares shape {header['shape']}; expected {want.shape}")
    if size - header_size != want.nbytes:
        raise Invalid(
            f"{name} holds {size - header_size} bytes of data; its header declares {want.nbytes}"
        )
    raw = np.empty(want.nbytes, dtype=np.uint8)
    view, done = raw.data, 0  # the array's memoryview (numpy's stubs don't call it a Buffer)
    while done < want.nbytes:
        got = fh.readinto(view[done:])
        if not got:
            raise Invalid(f"{name} ends before its data does")
        done += got
    if fh.read(1):  # also where zipfile checks the member's CRC-32
        raise Invalid(f"{name} holds more than its header declares")
    return raw.view(want.dtype).reshape(want.shape)


def _check_directory(
    zf: zipfile.ZipFile, expected: Mapping[str, Expected], file_size: int, free: str | None
) -> None:
    """Every member of the central directory: expected (or named ``free``-prefixed), once,
    stored, inside the file."""
    seen: set[str] = set()
    for info in zf.infolist():
        name = info.filename
        if name in seen:
            raise Invalid(f"member {_show(name)} appears twice")
        seen.add(name)
        known = name[:-4] in expected or (free is not None and name.startswith(free))
        if not name.endswith(".npy") or not known:
            raise Invalid(f"unknown member {_show(name)}")
        if info.compress_type != zipfile.ZIP_STORED:
            raise Invalid(
                f"member {name} is compressed (method {info.compress_type}); this package "
                "stores weights uncompressed and never inflates them"
            )
        if info.flag_bits & 0x1:
            raise Invalid(f"member {name} is encrypted")
        if info.compress_size != info.file_size or info.header_offset + info.file_size > file_size:
            raise Invalid(f"member {name} declares {info.file_size} bytes the file does not hold")
    missing = [name for name in expected if f"{name}.npy" not in seen]
    if missing:
        raise Invalid(f"member {_show(missing[0])}.npy is missing")


def _free_shape(fh: io.BufferedIOBase, name: str, size: int, dtype: np.dtype) -> Expected:
    """What a member whose shape nothing declared holds, from its own header: accepted only if
    the header's dtype is ``dtype`` and its data fill the member exactly (so what is allocated is
    no more than the member's bytes in the file)."""
    header, header_size = _header(fh, name)
    want = Expected(tuple(header["shape"]), dtype)
    if len(want.shape) > 8 or want.nbytes != size - header_size:
        raise Invalid(f"{name} declares shape {header['shape']}, which its data do not fill")
    return want


def read_npz(
    fh: IO[bytes],
    file_size: int,
    expected: Mapping[str, Expected],
    free: tuple[str, np.dtype] | None = None,
) -> dict[str, np.ndarray]:
    """Every array of the stored ``.npz`` open as ``fh`` (``file_size`` bytes), each exactly as
    ``expected`` describes it (name -> :class:`Expected`); nothing else is accepted, except, with
    ``free=(prefix, dtype)``, members named with ``prefix`` whose shape only their header gives
    (checkpoints of version 0.1 did not record the shapes of their ``aux:`` arrays)."""
    try:
        with zipfile.ZipFile(fh) as zf:
            _check_directory(zf, expected, file_size, free[0] if free else None)
            arrays = {}
            for info in zf.infolist():
                key = info.filename[:-4]
                want = expected.get(key)
                # ZipFile.open returns a ZipExtFile, an io.BufferedIOBase (which has readinto);
                # typeshed declares only IO[bytes].
                if want is None and free is not None:
                    with cast(io.BufferedIOBase, zf.open(info)) as member:
                        want = _free_shape(member, info.filename, info.file_size, free[1])
                # _check_directory admitted only expected names and, with free, prefixed ones.
                assert want is not None, f"{info.filename} passed the directory check unexpected"
                with cast(io.BufferedIOBase, zf.open(info)) as member:
                    arrays[key] = _read_member(member, info.filename, info.file_size, want)
            return arrays
    except zipfile.BadZipFile as exc:
        what = str(exc).splitlines()[0][:120] if str(exc) else "bad zip structure"
        raise Invalid(f"it is not a .npz archive this package wrote ({what})") from None
    except (zipfile.LargeZipFile, EOFError, zlib.error, NotImplementedError, OSError,
            ValueError) as exc:  # fmt: skip
        what = type(exc).__name__
        raise Invalid(f"it is not a .npz archive this package wrote ({what})") from None
