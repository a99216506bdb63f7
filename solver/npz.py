"""NPZ archives read without pickle, with the reason a file is not one.

NumPy's ``np.load`` takes any file that is not a zip archive for pickled data
and, with ``allow_pickle=False``, says so — and suggests loading it unsafely —
even for a text file or a truncated archive. :func:`read_npz` says what is wrong
instead; its callers put that reason into their own one-line errors.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

__all__ = ["read_npz"]


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of the NPZ archive at ``path`` (no pickle). ValueError saying why
    it is not one (not a zip archive, not an NPZ archive, a damaged archive, an
    object array, a member that is not a NumPy array); OSError if it cannot be
    opened."""
    if not zipfile.is_zipfile(path):
        raise ValueError("not a zip archive")
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("not an NPZ archive")
        with f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, zlib.error) as e:
        raise ValueError(f"a damaged archive: {e}") from None
    for name, value in arrays.items():
        if not isinstance(value, np.ndarray):  # NpzFile returns such members as bytes
            raise ValueError(f"not an NPZ archive: its member {name!r} is not a NumPy array")
    return arrays
