"""NPZ archives read without pickle, with the reason a file is not one.

NumPy's ``np.load`` takes any file that is not a zip archive for pickled data
and, with ``allow_pickle=False``, says so — and suggests loading it unsafely —
even for a text file or a truncated archive; a member whose ``.npy`` header is
malformed raises whatever its parser raises (a ``TokenError``), and one whose
header claims a huge shape is allocated before its data are found missing (a
``MemoryError``). :func:`read_npz` reads every member's header first
(:func:`npz_headers`: ``read_magic`` and ``read_array_header_1_0``/``2_0`` on
the zip member, nothing else), refuses one that is malformed or whose shape ×
item size is not the size of the member's data, and says what is wrong; its
callers put that reason into their own one-line errors (naming the file).
"""

from __future__ import annotations

import math
import os
import tokenize
import warnings
import zipfile
import zlib
from typing import NamedTuple

import numpy as np

from pontryx.meshes.errors import show_dtype

__all__ = ["Header", "npz_headers", "read_npz"]

#: the first bytes of a zip archive (a local file header, or an empty archive's end)
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
#: what NumPy's header parser raises for a malformed header (ValueError mostly; a
#: ``TokenError`` from its Python 2 fallback, a ``RecursionError`` for deep nesting, …)
_HEADER_ERRORS = (
    ValueError,
    SyntaxError,
    TypeError,
    KeyError,
    OverflowError,
    RecursionError,
    MemoryError,
    EOFError,
    tokenize.TokenError,
)
_ARCHIVE_ERRORS = (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, RuntimeError)


class Header(NamedTuple):
    """The ``.npy`` header of one member: its array's shape, dtype and order."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int  # of the data within the member

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _short(text: object, limit: int = 60) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> Header:
    """The checked header of member ``info`` (its data not read). ValueError
    naming the member if the header is malformed, claims an object array, or a
    shape × item size that is not the size of the data the member holds."""
    what = f"its member {name!r}"
    with zf.open(info) as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPy's note on Python 2 headers
        try:
            version = np.lib.format.read_magic(f)
        except _HEADER_ERRORS:
            raise ValueError(f"{what} is not a NumPy array (no .npy magic string)") from None
        try:
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise ValueError(f"format version {version[0]}.{version[1]} is not read")
            start = f.tell()
        except _HEADER_ERRORS as e:
            reason = str(e) if isinstance(e, ValueError | EOFError) else "it does not parse"
            raise ValueError(f"{what} has a malformed .npy header ({_short(reason)})") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"{what} has a malformed .npy header: shape {_short(shape)}")
    if dtype.hasobject:
        raise ValueError(f"{what} is an object array (pickled Python objects are not read)")
    claimed = math.prod(shape) * dtype.itemsize  # (Python integers: no overflow)
    held = info.file_size - start
    if claimed != held:
        raise ValueError(
            f"{what} has a malformed .npy header: shape {_short(shape)} of {show_dtype(dtype)} "
            f"is {claimed} bytes but the member holds {held}"
        )
    return Header(tuple(shape), dtype, bool(fortran), start)


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    members = {}
    for info in zf.infolist():
        name = info.filename.removesuffix(".npy")
        if name == info.filename:  # np.load would return it as bytes
            raise ValueError(f"not an NPZ archive: its member {name!r} is not a NumPy array")
        members[name] = info
    return members


def _open(path: str | os.PathLike) -> zipfile.ZipFile:
    if not zipfile.is_zipfile(path):
        raise ValueError("not a zip archive")
    with open(path, "rb") as f:
        if not f.read(4).startswith(_ZIP_MAGIC):  # a zip archive after other bytes
            raise ValueError("not an NPZ archive")
    try:
        return zipfile.ZipFile(path)
    except _ARCHIVE_ERRORS as e:
        raise ValueError(f"a damaged archive: {_short(e)}") from None


def npz_headers(path: str | os.PathLike) -> dict[str, Header]:
    """The :class:`Header` of every array of the NPZ archive at ``path``, read from
    the headers alone (no array is loaded). ValueError saying why it is not an NPZ
    archive (as :func:`read_npz`); OSError if it cannot be opened."""
    with _open(path) as zf:
        try:
            return {name: _header(zf, info, name) for name, info in _members(zf).items()}
        except _ARCHIVE_ERRORS as e:
            raise ValueError(f"a damaged archive: {_short(e)}") from None


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of the NPZ archive at ``path`` (no pickle), each header checked
    before its data are read. ValueError saying why it is not one (not a zip
    archive, not an NPZ archive, a damaged archive, a member that is not a NumPy
    array, a malformed header or one whose shape does not fit the member's size,
    an object array); OSError if it cannot be opened."""
    arrays = {}
    with _open(path) as zf:
        try:
            members = _members(zf)
            headers = {name: _header(zf, info, name) for name, info in members.items()}
            for name, info in members.items():
                h = headers[name]
                try:
                    arrays[name] = _read_data(zf, info, h)
                except MemoryError:
                    raise ValueError(
                        f"its member {name!r} (shape {_short(h.shape)} of {show_dtype(h.dtype)}) "
                        "does not fit in memory"
                    ) from None
                except _ARCHIVE_ERRORS as e:
                    raise ValueError(
                        f"a damaged archive: its member {name!r}: {_short(e)}"
                    ) from None
        except _ARCHIVE_ERRORS as e:
            raise ValueError(f"a damaged archive: {_short(e)}") from None
    return arrays


def _read_data(zf: zipfile.ZipFile, info: zipfile.ZipInfo, h: Header) -> np.ndarray:
    """The array of a member whose header ``h`` was checked, read in chunks into
    one allocation (EOFError if the member ends early)."""
    a = np.empty(math.prod(h.shape), dtype=h.dtype)
    if h.nbytes:
        buf = memoryview(a.view(np.uint8))
        with zf.open(info) as f:
            f.read(h.offset)  # the header
            pos = 0
            while pos < h.nbytes:
                chunk = f.read(min(h.nbytes - pos, 1 << 24))
                if not chunk:
                    raise EOFError(f"expected {h.nbytes} bytes of data, got {pos}")
                buf[pos : pos + len(chunk)] = chunk
                pos += len(chunk)
            f.read(1)  # the end of the member: zipfile checks its CRC-32
    if h.fortran_order:
        return a.reshape(h.shape[::-1]).transpose()
    return a.reshape(h.shape)
