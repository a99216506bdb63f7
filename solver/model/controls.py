"""Controls θ: named arrays, row-distributed over the width ranks.

Layer controls are stacked over depth (first axis N_t); the second axis is the
rank's owned dof rows. ``d`` (the readout offset) is replicated on every rank.
The inner product is the Euclidean one of the full (global) arrays, so Taylor
tests and optimisers see one consistent vector space on any number of ranks.
"""

from __future__ import annotations

from mpi4py import MPI

import numpy as np

__all__ = ["Controls"]

REPLICATED = frozenset({"d"})


class Controls(dict):
    """dict name → ndarray with vector-space operations over the width comm."""

    def __init__(self, arrays, comm: MPI.Comm):
        super().__init__(arrays)
        self.comm = comm

    def _local_weight(self, name):
        return 1.0 if name not in REPLICATED or self.comm.rank == 0 else 0.0

    def dot(self, other: Controls) -> float:
        local = sum(self._local_weight(k) * float(np.vdot(v, other[k])) for k, v in self.items())
        return self.comm.allreduce(local, op=MPI.SUM)

    def norm(self) -> float:
        return float(np.sqrt(self.dot(self)))

    def max_abs(self) -> float:
        local = max((float(np.max(np.abs(v))) for v in self.values() if v.size), default=0.0)
        return self.comm.allreduce(local, op=MPI.MAX)

    def copy(self) -> Controls:
        return Controls({k: v.copy() for k, v in self.items()}, self.comm)

    def zeros_like(self) -> Controls:
        return Controls({k: np.zeros_like(v) for k, v in self.items()}, self.comm)

    def subset(self, names) -> Controls:
        return Controls({k: self[k] for k in names}, self.comm)

    def axpy(self, a: float, x: Controls) -> Controls:
        """self += a·x (in place; names of x only)."""
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
