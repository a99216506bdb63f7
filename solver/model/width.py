"""The width discretisation: V_h on a distributed mesh and its assembled operators.

Holds, for the rows of V_h this rank owns (DOLFINx's owner-contiguous global
numbering), the lumped mass m (M_L = diag m), the stiffness matrix A as a PETSc
matrix, the dof coordinates, and the MPI plumbing that the batched solver needs
on row-distributed multivectors U ∈ R^{N×S} (local block: ``n × S``):

* :meth:`allgather` — all N rows on every width rank (for dense kernels),
* :meth:`reduce_scatter` — sum partial N-row blocks and keep the owned rows,
* :attr:`shared` — where all width ranks share a node, a pool of node-shared
  N×S arrays through which the dense kernel gathers and sums without messages
  (:mod:`~pontryx.solver.model.shared`; ``exchange="mpi"``: the collectives always),
* :meth:`canonical` — a partition-independent numbering of the dofs (sorted by
  coordinates), so that initial controls, saved models and checkpoints do not
  depend on the number of ranks.
"""

from __future__ import annotations

from functools import cached_property

from mpi4py import MPI

import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.mesh
import numpy as np
import scipy.sparse
from petsc4py import PETSc

from pontryx.forms.operators import function_space, mass_form, row_sum_form, stiffness_form
from pontryx.meshes.errors import InputError, show
from pontryx.meshes.levels import lexicographic
from pontryx.solver.model.shared import SharedRows
from pontryx.solver.model.workspace import HEAP, Workspace
from pontryx.solver.registry import EXCHANGES, LUMPINGS

__all__ = ["WidthSpace"]


class WidthSpace:
    """V_h = P_degree on ``mesh`` with assembled M_L and A (DESIGN.md §2).

    Lumping: ``"rowsum"`` (m_i = ∫ φ_i dx) or ``"hrz"`` (diagonal scaling
    m_i = M_ii |Ω| / Σ_k M_kk). ``"auto"`` takes row sums when they are all
    positive (P1; P2 on intervals, i.e. Simpson's rule) and HRZ otherwise
    (P2 on triangles/tetrahedra, whose vertex row sums vanish or are negative).

    Exchange on the width axis: ``"shared"`` (node-shared arrays, :attr:`shared`,
    where every width rank shares one node; else the MPI collectives) or ``"mpi"``
    (the collectives always).
    """

    def __init__(self, mesh, degree: int = 1, lumping: str = "auto", exchange: str = "shared"):
        if exchange not in EXCHANGES:
            expected = ", ".join(EXCHANGES)
            raise InputError(f"expected one of {expected}, got {show(exchange)}", "exchange")
        if not isinstance(mesh, dolfinx.mesh.Mesh):
            raise InputError(f"expected a dolfinx mesh, got {show(mesh)}", "mesh")
        self.mesh = mesh
        self.comm: MPI.Comm = mesh.comm
        self.V = function_space(mesh, degree)
        self.degree = degree
        imap = self.V.dofmap.index_map
        self.n = imap.size_local
        self.N = imap.size_global
        self.offset = imap.local_range[0]
        self._counts = np.array(self.comm.allgather(self.n), dtype=np.int64)
        self.lumping = self._lump(lumping)
        self.area = self.comm.allreduce(float(self.m.sum()), op=MPI.SUM)
        self.exchange = exchange
        #: The pool of node-shared N×S arrays of the width ranks, or None (one rank,
        #: several nodes, ``exchange="mpi"``).
        self.shared: SharedRows | None = SharedRows.of(self.comm) if exchange == "shared" else None

    # -- assembled operators ------------------------------------------------
    def _assemble_vector(self, form) -> np.ndarray:
        b = dolfinx.fem.assemble_vector(dolfinx.fem.form(form))
        b.scatter_reverse(dolfinx.la.InsertMode.add)
        return b.array[: self.n].copy()

    def _lump(self, lumping: str) -> str:
        if lumping not in LUMPINGS:
            expected = ", ".join(LUMPINGS)
            raise InputError(f"expected one of {expected}, got {show(lumping)}", "lumping")
        rowsum = self._assemble_vector(row_sum_form(self.V))
        positive = self.comm.allreduce(bool(np.all(rowsum > 0)), op=MPI.LAND)
        if lumping == "rowsum" and not positive:
            raise InputError(
                f"row-sum lumping of P{self.degree} on this cell is not positive; use hrz or auto",
                "lumping",
            )
        if lumping == "rowsum" or (lumping == "auto" and positive):
            self.m = rowsum
            return "rowsum"
        Mmat = self.assemble_matrix(mass_form(self.V))
        diag = Mmat.getDiagonal().array.copy()
        Mmat.destroy()
        area = self.comm.allreduce(float(rowsum.sum()), op=MPI.SUM)
        self.m = diag * area / self.comm.allreduce(float(diag.sum()), op=MPI.SUM)
        return "hrz"

    def assemble_matrix(self, form) -> PETSc.Mat:
        A = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(form))
        A.assemble()
        return A

    @cached_property
    def A(self) -> PETSc.Mat:
        """Stiffness matrix (PETSc AIJ, rows distributed like V_h)."""
        return self.assemble_matrix(stiffness_form(self.V))

    @cached_property
    def stiffness_csr(self) -> scipy.sparse.csr_matrix:
        """A as a SciPy CSR matrix of all N rows in DOLFINx's global dof order, on
        every width rank (for products with the column axis of a dense kernel)."""
        indptr, indices, data = self.A.getValuesCSR()
        local = scipy.sparse.csr_matrix(
            (np.asarray(data), np.asarray(indices), np.asarray(indptr)), shape=(self.n, self.N)
        )
        return scipy.sparse.vstack(self.comm.allgather(local), format="csr")

    @cached_property
    def x(self) -> np.ndarray:
        """Coordinates of the owned dofs, shape (n, gdim)."""
        gdim = self.mesh.geometry.dim
        return self.V.tabulate_dof_coordinates()[: self.n, :gdim].copy()

    @cached_property
    def bounding_box(self) -> tuple[np.ndarray, np.ndarray]:
        lo = self.x.min(axis=0, initial=np.inf)
        hi = self.x.max(axis=0, initial=-np.inf)
        self.comm.Allreduce(MPI.IN_PLACE, lo, op=MPI.MIN)
        self.comm.Allreduce(MPI.IN_PLACE, hi, op=MPI.MAX)
        return lo, hi

    # -- row-distributed multivectors --------------------------------------
    def allgather(self, X: np.ndarray, ws: Workspace = HEAP) -> np.ndarray:
        """All N rows of the row-distributed (n, …) array X, on every width rank
        (X itself on one rank; else a new array, from the workspace ``ws``)."""
        X = np.ascontiguousarray(X)
        if self.comm.size == 1:
            return X
        tail = X.shape[1:]
        width = int(np.prod(tail, dtype=np.int64))
        out = ws.take((self.N, *tail))
        self.comm.Allgatherv(X, [out, self._counts * width])
        return out

    def reduce_scatter(self, Y: np.ndarray, ws: Workspace = HEAP) -> np.ndarray:
        """Owned rows of Σ_ranks Y for a partial full-height (N, …) array Y
        (Y itself on one rank; else a new array, from the workspace ``ws``)."""
        Y = np.ascontiguousarray(Y)
        if self.comm.size == 1:
            return Y
        tail = Y.shape[1:]
        width = int(np.prod(tail, dtype=np.int64))
        out = ws.take((self.n, *tail))
        self.comm.Reduce_scatter(Y, out, self._counts * width, op=MPI.SUM)
        return out

    def sum(self, value):
        """Sum of a local partial value (scalar or array) over the width ranks (on one
        rank no MPI call: the value, an array copied, so that sweeps may run
        concurrently in threads, :mod:`pontryx.solver.adjoint.split`)."""
        if self.comm.size == 1:
            return value.copy() if isinstance(value, np.ndarray) else value
        return self.comm.allreduce(value, op=MPI.SUM)

    @cached_property
    def canonical(self) -> np.ndarray:
        """``canonical[i]`` = partition-independent index of global dof i (all N).

        Dofs are ordered lexicographically by their coordinates, each axis's
        values told apart up to round-off on its own scale
        (:func:`pontryx.meshes.levels.lexicographic`), so every partition gives the
        same numbering."""
        return lexicographic(self.allgather(self.x))

    @property
    def owned_canonical(self) -> np.ndarray:
        return self.canonical[self.offset : self.offset + self.n]

    def to_canonical(self, X: np.ndarray, axis_full: bool = False) -> np.ndarray:
        """Gather row-distributed X (n, …) into canonical order (N, …); if
        ``axis_full`` also permute a second axis of length N (dense kernels)."""
        full = self.allgather(X)
        out = np.empty_like(full)
        out[self.canonical] = full
        if axis_full:
            tmp = np.empty_like(out)
            tmp[:, self.canonical] = out
            out = tmp
        return out

    def gather_canonical(self, X: np.ndarray, axis_full: bool = False, root: int = 0):
        """Like :meth:`to_canonical`, but gathered on width rank ``root`` only (None
        elsewhere): the other ranks never hold more than their own rows."""
        X = np.ascontiguousarray(X)
        tail = X.shape[1:]
        width = int(np.prod(tail, dtype=np.int64))
        full = np.empty((self.N, *tail), dtype=X.dtype) if self.comm.rank == root else None
        self.comm.Gatherv(X, [full, self._counts * width] if full is not None else None, root)
        if full is None:
            return None
        out = np.empty_like(full)
        out[self.canonical] = full
        if axis_full:
            tmp = np.empty_like(out)
            tmp[:, self.canonical] = out
            out = tmp
        return out

    def from_canonical(self, Xc: np.ndarray, axis_full: bool = False) -> np.ndarray:
        """Owned rows (n, …) of a canonical-ordered (N, …) array; inverse of
        :meth:`to_canonical`."""
        out = Xc[self.owned_canonical]
        if axis_full:
            out = out[:, self.canonical]
        return np.ascontiguousarray(out)

    def row(self, local_rows: np.ndarray, canonical_index: int) -> np.ndarray:
        """Row ``canonical_index`` (canonical dof order) of a row-distributed
        array, on every width rank. Collective."""
        owned = np.flatnonzero(self.owned_canonical == canonical_index)
        mine = local_rows[owned[0]] if owned.size else None
        values = self.comm.allgather(mine)
        return next(v for v in values if v is not None)

    def matmul(self, mat: PETSc.Mat, X: np.ndarray, transpose: bool = False) -> np.ndarray:
        """``mat`` X (or matᵀ X) for a distributed PETSc matrix on V_h and a
        row-distributed multivector X (n × S). Collective."""
        n, S = X.shape
        Xd = PETSc.Mat().createDense(
            ((n, self.N), (None, S)), array=np.asfortranarray(X), comm=self.comm
        )
        Yd = mat.transposeMatMult(Xd) if transpose else mat.matMult(Xd)
        Y = np.array(Yd.getDenseArray(), order="C", copy=True)
        Xd.destroy()
        Yd.destroy()
        return Y

    def canonical_csr(self, mat) -> scipy.sparse.csr_matrix | None:
        """A distributed matrix on V_h (a PETSc AIJ matrix, or the owned rows as a
        SciPy CSR matrix with global column indices) as a canonical-order CSR matrix
        on width rank 0 (None elsewhere). Collective."""
        if isinstance(mat, scipy.sparse.spmatrix | scipy.sparse.sparray):
            indptr, indices, data = mat.indptr, mat.indices, mat.data
        else:
            indptr, indices, data = mat.getValuesCSR()
        rows = np.repeat(np.arange(self.n) + self.offset, np.diff(indptr))
        parts = self.comm.gather((rows, np.asarray(indices), np.asarray(data)), root=0)
        if self.comm.rank != 0:
            return None
        canon = self.canonical
        r = canon[np.concatenate([p[0] for p in parts])]
        c = canon[np.concatenate([p[1] for p in parts]).astype(np.int64)]
        v = np.concatenate([p[2] for p in parts])
        out = scipy.sparse.csr_matrix((v, (r, c)), shape=(self.N, self.N))
        out.sort_indices()
        return out

    def shared_rows(self, S: int) -> np.ndarray | None:
        """A node-shared N×S array (this rank's rows ``[offset : offset + n]`` its
        own to write, then ``shared.fence()``), or None. Collective."""
        return None if self.shared is None else self.shared.rows(self._counts, S)

    def shared_partials(self, S: int) -> list[np.ndarray] | None:
        """One node-shared N×S array per width rank (this rank's to write, then
        ``shared.fence()``), or None. Collective."""
        return None if self.shared is None else self.shared.partials(self.N, S)

    def destroy(self):
        """Free the PETSc matrix and the shared arrays of this space's shapes that
        are not in use (collective)."""
        if self.shared is not None:
            self.shared.clear(self._counts)
            self.shared = None
        if "A" in self.__dict__:
            self.A.destroy()
            del self.__dict__["A"]
