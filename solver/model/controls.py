"""Controls θ: named arrays, row-distributed over the width ranks.

Layer controls are stacked over depth (first axis N_t); the second axis is the
rank's owned dof rows. ``d`` (the readout offset) is replicated on every rank.
The inner product is the Euclidean one of the full (global) arrays, so Taylor
tests and optimisers see one consistent vector space on any number of ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from numbers import Real

from mpi4py import MPI

import numpy as np

from pontryx.meshes.errors import InputError, show, show_dtype

__all__ = ["Controls"]

REPLICATED = frozenset({"d"})


def _array(name, value) -> np.ndarray:
    """A control's values as a C-ordered float64 array (the same object where it is
    one already): the optimisers write through flat views, which of a Fortran-ordered
    or strided array would be copies, and the writes lost (the control never
    trained); numbers of other kinds are converted, complex ones refused."""
    a = np.asarray(value)
    if a.dtype.kind not in "biuf":
        raise InputError(f"expected real numbers, got an array of {show_dtype(a.dtype)}", name)
    return np.ascontiguousarray(a, dtype=np.float64)


class Controls(dict):
    """dict name → ndarray with vector-space operations over the width comm. Every
    array is kept C-ordered float64 (given otherwise, a converted copy is kept)."""

    def __init__(self, arrays, comm: MPI.Comm):
        if not isinstance(arrays, Mapping):
            raise InputError(f"expected a mapping name → array, got {show(arrays)}", "arrays")
        if not isinstance(comm, MPI.Comm):
            raise InputError(f"expected an MPI communicator, got {show(comm)}", "comm")
        super().__init__({k: _array(k, v) for k, v in dict(arrays).items()})
        self.comm = comm

    def __setitem__(self, name, value) -> None:
        super().__setitem__(name, _array(name, value))

    def update(self, *args, **kwargs) -> None:
        for k, v in dict(*args, **kwargs).items():
            self[k] = v

    def __ior__(self, other):
        self.update(other)
        return self

    def setdefault(self, name, default=None):
        if name not in self:
            self[name] = default
        return self[name]

    def _same_shapes(self, other: Controls) -> None:
        """``other``'s arrays have the shapes of this one's (of the same network)."""
        if not isinstance(other, Mapping):
            raise InputError(f"expected Controls, got {show(other)}", "other")
        for k, v in other.items():
            if k not in self or np.shape(v) != self[k].shape:
                want = self[k].shape if k in self else "no such control"
                raise InputError(
                    f"controls of another network: shape {np.shape(v)}, expected {want}", k
                )

    def _local_weight(self, name):
        return 1.0 if name not in REPLICATED or self.comm.rank == 0 else 0.0

    def dot(self, other: Controls) -> float:
        if not isinstance(other, Mapping):
            raise InputError(f"expected Controls, got {show(other)}", "other")
        Controls._same_shapes(other, self)
        local = sum(self._local_weight(k) * float(np.vdot(v, other[k])) for k, v in self.items())
        return self.comm.allreduce(local, op=MPI.SUM)

    def norm(self) -> float:
        return float(np.sqrt(self.dot(self)))

    def max_abs(self) -> float:
        """max |θ| over every array and rank; NaN if any value is NaN."""
        values = [float(np.max(np.abs(v))) for v in self.values() if v.size]
        if self.comm.allreduce(any(math.isnan(x) for x in values), op=MPI.LOR):
            return math.nan
        return self.comm.allreduce(max(values, default=0.0), op=MPI.MAX)

    def copy(self) -> Controls:
        return Controls({k: v.copy() for k, v in self.items()}, self.comm)

    def zeros_like(self) -> Controls:
        return Controls({k: np.zeros_like(v) for k, v in self.items()}, self.comm)

    def subset(self, names) -> Controls:
        """The arrays of ``names`` (the same objects)."""
        if not isinstance(names, str | Iterable):
            raise InputError(f"expected control names, got {show(names)}", "names")
        names = [names] if isinstance(names, str) else list(names)
        if missing := [k for k in names if k not in self]:
            raise InputError(f"no such control (have {', '.join(self)})", str(missing[0]))
        return Controls({k: self[k] for k in names}, self.comm)

    def axpy(self, a: float, x: Controls) -> Controls:
        """self += a·x (in place; names of x only)."""
        if isinstance(a, bool) or not isinstance(a, Real):
            raise InputError(f"expected a number, got {show(a)}", "a")
        self._same_shapes(x)
        for k, v in x.items():
            self[k] += a * v
        return self

    def __add__(self, other):
        return self.copy().axpy(1.0, other)

    def __sub__(self, other):
        return self.copy().axpy(-1.0, other)

    def __mul__(self, a: float):
        return Controls({k: a * v for k, v in self.items()}, self.comm)

    __rmul__ = __mul__

    def __neg__(self):
        return self * -1.0

    def __truediv__(self, a: float):
        return self * (1.0 / a)

    # -- flat local vectors (for PETSc Vecs and optimisers) ------------------
    def local_size(self) -> int:
        return sum(v.size for k, v in self.items() if self._local_weight(k))

    def to_flat(self, out: np.ndarray | None = None) -> np.ndarray:
        """The local values as one flat vector (replicated names on width rank 0
        only); written into ``out`` without a temporary if given."""
        if out is None:
            parts = [v.ravel() for k, v in self.items() if self._local_weight(k)]
            return np.concatenate(parts) if parts else np.zeros(0)
        i = 0
        for k, v in self.items():
            if self._local_weight(k):
                out[i : i + v.size] = v.ravel()
                i += v.size
        return out

    def set_flat(self, flat: np.ndarray) -> Controls:
        """Set the values from a flat local vector (replicated names broadcast
        from width rank 0)."""
        i = 0
        for k, v in self.items():
            if self._local_weight(k):
                v.ravel()[:] = flat[i : i + v.size]
                i += v.size
        for k in self.keys() & REPLICATED:
            self[k][...] = self.comm.bcast(self[k] if self.comm.rank == 0 else None, root=0)
        return self
