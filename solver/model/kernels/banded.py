"""Products with a sparse matrix of fixed pattern on many sample columns, by row
blocks: dense bands where the pattern is narrow, CSR elsewhere.

A finite-element matrix in DOLFINx's dof order (reordered for locality) is
banded: the entries of b consecutive rows fall in a window of w ≈ b + 2·bandwidth
columns. A block whose entries fill at least 1/``FILL`` of its b × w window is
applied as a dense b × w matrix — one GEMM on the BLAS threads at the GEMM rate,
instead of SciPy's single-threaded CSR product at a small fraction of it; the
explicit zeros add exact zeros. The other blocks use SciPy's CSR product.

* :meth:`Pattern.matmul`   — Y = A X for values of A on the pattern,
* :meth:`Pattern.sampled`  — p_e = Σ_s Q_is X_ks for every entry e = (i, k) of
  the pattern (the sampled product Q Xᵀ on the pattern; in dense blocks one GEMM
  Q_b X_wᵀ read at the pattern's positions).

With several BLAS threads the blocks run concurrently on the row-block threads
(:mod:`pontryx.solver.model.threads`), each small GEMM on one BLAS thread (a
multi-threaded BLAS spends more on synchronising than on a 64-row block). The
blocks and their GEMMs are the same for any number of threads, so results are
bit-identical; they agree with SciPy's CSR product up to round-off.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse

from pontryx.solver.model.threads import blas_threads, rows, single_threaded_blas

__all__ = ["Pattern"]

#: Rows per block.
ROWS = 64
#: A block is dense when its window holds at most FILL times its entries.
FILL = 40


class _Block:
    __slots__ = ("c0", "c1", "e0", "e1", "pos", "r0", "r1")

    def __init__(self, r0, r1, e0, e1, c0, c1, pos):
        self.r0, self.r1, self.e0, self.e1, self.c0, self.c1, self.pos = r0, r1, e0, e1, c0, c1, pos


class Pattern:
    """The CSR pattern (``indptr``, ``indices``) of an ``shape`` matrix, in row blocks."""

    def __init__(self, indptr, indices, shape, rows: int = ROWS, fill: float = FILL):
        self.indptr = np.asarray(indptr, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)
        self.shape = (int(shape[0]), int(shape[1]))
        self.blocks: list[_Block] = []
        n = self.shape[0]
        for r0 in range(0, n, rows):
            r1 = min(r0 + rows, n)
            e0, e1 = int(self.indptr[r0]), int(self.indptr[r1])
            if e1 == e0:
                self.blocks.append(_Block(r0, r1, e0, e1, 0, 0, None))
                continue
            cols = self.indices[e0:e1]
            c0, c1 = int(cols.min()), int(cols.max()) + 1
            pos = None
            if (r1 - r0) * (c1 - c0) <= fill * (e1 - e0):
                local_rows = np.repeat(np.arange(r1 - r0), np.diff(self.indptr[r0 : r1 + 1]))
                pos = local_rows * (c1 - c0) + (cols - c0)
            self.blocks.append(_Block(r0, r1, e0, e1, c0, c1, pos))

    @property
    def dense_share(self) -> float:
        """The share of the entries in dense blocks."""
        dense = sum(b.e1 - b.e0 for b in self.blocks if b.pos is not None)
        return dense / max(self.indices.size, 1)

    def _csr(self, values, b):
        ip = self.indptr[b.r0 : b.r1 + 1] - b.e0
        return scipy.sparse.csr_matrix(
            (values[b.e0 : b.e1], self.indices[b.e0 : b.e1], ip), shape=(b.r1 - b.r0, self.shape[1])
        )

    def _each(self, fn) -> None:
        """``fn(block)`` for every block: on the row-block threads when the BLAS has
        several (each block's small GEMM then on one BLAS thread), else in order."""
        T = blas_threads()
        if T <= 1 or len(self.blocks) < 2:
            for b in self.blocks:
                fn(b)
            return

        def run(sl):
            for b in self.blocks[sl]:
                fn(b)

        with single_threaded_blas():
            rows(run, len(self.blocks), 1 << 30, threads=T)

    def matmul(self, values: np.ndarray, X: np.ndarray, out: np.ndarray | None = None):
        """A X for the matrix A with ``values`` on the pattern (into ``out`` if given)."""
        Y = np.empty((self.shape[0], X.shape[1])) if out is None else out
        self._each(lambda b: self._matmul_block(values, X, Y, b))
        return Y

    def _matmul_block(self, values, X, Y, b) -> None:
        out = Y[b.r0 : b.r1]
        if b.e1 == b.e0:
            out[...] = 0.0
        elif b.pos is not None:
            A = np.zeros((b.r1 - b.r0, b.c1 - b.c0))
            A.flat[b.pos] = values[b.e0 : b.e1]
            np.matmul(A, X[b.c0 : b.c1], out=out)
        else:
            out[...] = self._csr(values, b) @ X

    def sampled(self, Q: np.ndarray, X: np.ndarray) -> np.ndarray:
        """p_e = Σ_s Q_is X_ks for every entry e = (i, k) of the pattern."""
        p = np.empty(self.indices.size)
        self._each(lambda b: self._sampled_block(Q, X, p, b))
        return p

    def _sampled_block(self, Q, X, p, b) -> None:
        if b.e1 == b.e0:
            return
        if b.pos is not None:
            P = Q[b.r0 : b.r1] @ X[b.c0 : b.c1].T
            p[b.e0 : b.e1] = P.ravel()[b.pos]
        else:
            counts = np.diff(self.indptr[b.r0 : b.r1 + 1])
            ri = b.r0 + np.repeat(np.arange(b.r1 - b.r0), counts)
            cols = self.indices[b.e0 : b.e1]
            p[b.e0 : b.e1] = np.einsum("is,is->i", Q[ri], X[cols])

    def transpose(self) -> tuple[Pattern, np.ndarray]:
        """The pattern of Aᵀ and ``perm`` with values(Aᵀ) = values(A)[perm]."""
        n, N = self.shape
        order = np.arange(self.indices.size, dtype=np.float64)
        T = scipy.sparse.csr_matrix((order, self.indices, self.indptr), shape=(n, N)).T.tocsr()
        T.sort_indices()
        return Pattern(T.indptr, T.indices, (N, n)), T.data.astype(np.int64)
