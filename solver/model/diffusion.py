"""The implicit width-diffusion solve X = B⁻¹ R with B = M_L + c A (c = θ Δt ε).

One PETSc KSP per (scheme, c), options prefix ``pontryx_diffusion_`` (default: a
direct LU factorisation with MUMPS, factored once and re-used for every layer
and sample), applied to whole multivectors with ``KSPMatSolve``. Any KSP/PC can
be chosen through the options database, e.g.
``-pontryx_diffusion_ksp_type cg -pontryx_diffusion_pc_type gamg``; pontryx's
defaults are pushed only while the KSP is configured (:func:`pontryx.solver.petsc.configure`).
A solve that does not converge (in any column) raises
:class:`~pontryx.solver.errors.SolveError`: its result is not the B⁻¹ R the
gradient assumes.

MUMPS's parallel factorisation is not reproducible bit for bit: on several
ranks its dynamic scheduling adds the fronts' contributions in the order they
arrive, so two runs differ at round-off (measured: the initial controls of a
2-rank run differed in the last bits from process to process). Where a result
should repeat exactly — the random fields of ``model.init`` and of the
noise in depth, drawn in the canonical dof order so that a draw does not depend
on the partition — ``redundant=True`` solves on every rank with the whole
matrix in the canonical order on ``PETSc.COMM_SELF`` (the same prefix, options
and defaults; sequential MUMPS), the columns split over the ranks, and the
draws repeat bit for bit from run to run on a given number of ranks — up to
:data:`REDUNDANT_MAX_DOFS` dofs; a larger width mesh is solved distributed.

SuperLU_DIST (``pc_factor_mat_solver_type: superlu_dist``) on several ranks
aborts in ``KSPMatSolve`` (glibc: "double free or corruption", PETSc 3.25 of
the binary wheels, 2 ranks); it solves column by column instead.
"""

from __future__ import annotations

import itertools

import numpy as np
from petsc4py import PETSc

from pontryx.solver.petsc import Converged, configure, destroy

__all__ = ["PREFIX", "DiffusionSolver"]

PREFIX = "pontryx_diffusion_"
DEFAULTS = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}
#: Above this many dofs a redundant solve is distributed instead: every rank would
#: factorise the whole matrix (a 2-D P1 Laplacian of 2·10⁵ dofs: about 10⁷ factor
#: entries, 0.1 GB), which does not scale with the ranks.
REDUNDANT_MAX_DOFS = 200_000


class DiffusionSolver:
    """Solve (M_L + c A) X = R for row-distributed multivectors R (n × S); or
    B X = R for a given assembled ``matrix`` B. ``what`` names the solve in the
    :class:`~pontryx.solver.errors.SolveError` of a solve that did not converge."""

    def __init__(
        self,
        space,
        c: float,
        prefix: str = PREFIX,
        matrix: PETSc.Mat | None = None,
        what: str = "the width-diffusion solve",
        redundant: bool = False,
    ):
        self.space = space
        self.redundant = redundant and 1 < space.comm.size and space.N <= REDUNDANT_MAX_DOFS
        self.c = float(c)
        if matrix is not None:  # B assembled elsewhere (from a UFL form); owned from here on
            self.B = matrix
        else:
            self.B = space.A.copy()
            self.B.scale(self.c)
            m = self.B.createVecRight()
            m.array[:] = space.m
            self.B.setDiagonal(m, addv=PETSc.InsertMode.ADD_VALUES)
            m.destroy()
        if self.redundant:  # the whole matrix in the canonical order on every rank
            _ = space.canonical  # collective: made on every rank before rank 0 needs it
            csr = space.comm.bcast(space.canonical_csr(self.B), root=0)
            self.B.destroy()
            self.B = PETSc.Mat().createAIJ(
                (space.N, space.N), csr=(csr.indptr, csr.indices, csr.data), comm=PETSc.COMM_SELF
            )
        self.ksp = PETSc.KSP().create(self.B.getComm())
        self.ksp.setOperators(self.B)
        configure(self.ksp, prefix, DEFAULTS)
        self.ksp.setUp()
        self._converged = Converged(self.ksp, what)
        pc = self.ksp.getPC()
        factor = pc.getFactorSolverType() if pc.getType() in ("lu", "cholesky") else None
        self._by_column = factor == "superlu_dist" and self.B.getComm().getSize() > 1

    def solve(self, R: np.ndarray) -> np.ndarray:
        """X = B⁻¹ R (same shape as R). No columns (a data rank's empty share of a
        minibatch; the width ranks of a data group hold the same columns, so they
        all skip): nothing to solve (MUMPS refuses 0 right-hand sides)."""
        if R.shape[1] == 0:
            return np.zeros_like(R)
        if self.redundant:
            return self._split_solve(R)
        return self._solve(R, self.space.comm)

    def _split_solve(self, R: np.ndarray) -> np.ndarray:
        """The redundant solve: the columns in the canonical order, split over the
        ranks in contiguous blocks; each rank solves its block with the whole matrix
        (``PETSc.COMM_SELF``), the blocks are gathered, and each keeps its rows."""
        sp = self.space
        comm = sp.comm
        full = sp.to_canonical(R)  # N × S, every rank
        N, S = full.shape
        edges = [S * k // comm.size for k in range(comm.size + 1)]
        lo, hi = edges[comm.rank], edges[comm.rank + 1]
        mine = np.empty((0, N))  # the block's columns as rows, for one Allgatherv
        if hi > lo:
            mine = np.ascontiguousarray(self._solve(full[:, lo:hi], PETSc.COMM_SELF).T)
        XT = np.empty((S, N))
        comm.Allgatherv(mine, [XT, [(b - a) * N for a, b in itertools.pairwise(edges)]])
        return sp.from_canonical(XT.T)

    def _solve(self, R: np.ndarray, comm) -> np.ndarray:
        n, S = R.shape
        N = self.space.N
        Rf = np.asfortranarray(R)
        Xf = np.empty_like(Rf, order="F")
        if self._by_column:
            r = PETSc.Vec().createMPI((n, N), comm=comm)
            x = r.duplicate()
            for j in range(S):
                r.array[:] = Rf[:, j]
                self.ksp.solve(r, x)
                Xf[:, j] = x.array_r
            destroy(r, x)
        else:
            RB = PETSc.Mat().createDense(((n, N), (None, S)), array=Rf, comm=comm)
            XB = PETSc.Mat().createDense(((n, N), (None, S)), array=Xf, comm=comm)
            self.ksp.matSolve(RB, XB)
            destroy(RB, XB)
        self._converged.check()
        return np.ascontiguousarray(Xf)

    def apply_inverse_times_mass(self, U: np.ndarray) -> np.ndarray:
        """B⁻¹ M_L U."""
        return self.solve(self.space.m[:, None] * U)

    def destroy(self):
        destroy(self.ksp, self.B)
