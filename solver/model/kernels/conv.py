"""The conv kernel: a differential operator in the image plane whose coefficients
are kernels across a channel axis — a PDE-based convolution layer with a
continuum of channels (Ruthotto & Haber 2018, J. Math. Imaging Vis. 62).

The width domain is a box Ω = P × Z whose dofs form a tensor grid: plane points
x ∈ P (the first two coordinates, e.g. the image plane) times channel levels
z ∈ Z (the third). With the plane operators D_0 = 1, D_1 = ℓ∂_x, D_2 = ℓ∂_y and,
at ``order`` 2, D_3 = ℓ²∂_xx, D_4 = ℓ²∂_yy, D_5 = ℓ²∂_xy (ℓ = ``length``),

    (𝒦(t)u)(x, z) = Σ_k ∫_Z a_k(t, x, z, z') (D_k u(·, z'))(x) dz',

i.e. w(t, x, z, y, z') = Σ_k a_k(t, x, z, z') D_k(x, y): local in the plane, dense
across channels. Each a_k(t, ·, ·, z') is a field on Ω (the coefficients vary
over the plane, as the local kernel's do). Discretely, with the plane's
operators D_k = ℓ^|k| M_P⁻¹ F_k (F_k assembled from :func:`pontryx.forms.kernels.plane_operators`
on the quadrilateral plane mesh of the grid, M_P its lumped mass) and the
trapezoid weights ω_Z of the channel levels,

    (K U)_(p, l) = Σ_{k, l'} a[(p, l), k, l'] ω_Z[l'] (D_k U_{·, l'})_p.

The D_k are 3 × 3 stencils on the uniform plane grid, so with U_j[p] = U[nbr(p, j)]
the value at the 9 neighbours j of p, (K U)[p] = W[p] (U_j[p])_j with the
L × 9L matrix W[p, l, j, l'] = Σ_k D_k[p, nbr(p, j)] a[(p, l), k, l'] ω_Z[l']
made once per layer: one batched GEMM over the plane points (18·L·N·S flops);
Kᵀ is a stencil of the same form, its matrices WT made from W with the layer.
With ``shared`` the layer applies the plane mean ā(z, z') = |P|⁻¹ ∫_P a dx of
the coefficients at every point (a translation-equivariant convolution; the
gradient with respect to a[(p, l)] is m_P[p]/|P| times that of ā).
Controls: ``a`` (n × K × L), row-distributed like every field;
‖a‖² = Σ m_i ω_Z[l'] a[i, k, l']² (∫_Ω ∫_Z a²). K is linear in a:
K'(a)[da] = K(da), second-order term zero. With several width ranks U and D
are all-gathered (N = |P|·L rows, as for the dense kernel) and every rank
evaluates the whole grid, keeping its own rows.
"""

from __future__ import annotations

from typing import ClassVar

from mpi4py import MPI

import dolfinx.fem
import dolfinx.mesh
import numpy as np
import scipy.sparse
import ufl

from pontryx.forms.kernels import plane_operators
from pontryx.forms.operators import function_space, row_sum_form
from pontryx.meshes.errors import InputError, show
from pontryx.meshes.levels import levels
from pontryx.solver.model.kernels.base import Kernel, Option
from pontryx.solver.model.workspace import HEAP

__all__ = ["ConvKernel"]


def _order(value) -> int:
    if isinstance(value, bool) or value not in (1, 2):
        raise InputError(f"expected 1 or 2, got {show(value)}")
    return int(value)


def _length(value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise InputError(f"expected a number > 0, got {show(value)}")
    return float(value)


def _flag(value) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"expected true or false, got {show(value)}")
    return value


class ConvKernel(Kernel):
    """Plane differential operators with channel-kernel coefficients (module docstring)."""

    name = "conv"
    #: samples per column block of apply, apply_T and vjp (:meth:`_blocks`)
    CHUNK = 128
    options: ClassVar[dict] = {
        "order": Option(_order, default=2, description="plane derivatives up to order 1 or 2"),
        "length": Option(_length, default=0.125, description="ℓ: D_k = ℓ^|k| ∂^k"),
        "shared": Option(
            _flag, default=False, description="coefficients constant over the plane: their mean"
        ),
    }

    def __init__(self, space, order: int = 2, length: float = 0.125, shared: bool = False):
        super().__init__(space)
        self.order, self.length, self.shared = order, length, shared
        self._grid()
        self._plane_operators()

    # -- the tensor grid P × Z -------------------------------------------------------
    def _grid(self):
        sp = self.space
        X = sp.allgather(sp.x)
        if X.shape[1] != 3:
            raise InputError(
                f"the conv kernel needs a 3D box (plane × channels), got a {X.shape[1]}D mesh",
                "type",  # the kernel chosen for this mesh (model.kernel.type)
            )
        self.xs, ix, self._xtol = levels(X[:, 0])
        self.ys, iy, self._ytol = levels(X[:, 1])
        self.zs, il, _ = levels(X[:, 2])
        nx, ny, L = self.xs.size, self.ys.size, self.zs.size
        p = iy * nx + ix  # plane points row by row
        grid = np.full((nx * ny, L), -1, dtype=np.int64)
        grid[p, il] = np.arange(sp.N)
        if nx * ny * L != sp.N or np.any(grid < 0):
            raise InputError(
                "the conv kernel needs dofs on a tensor grid (plane points × channel levels)",
                "type",  # the kernel chosen for this mesh (model.kernel.type)
            )
        self.Np, self.L = nx * ny, L
        self.grid = grid  # global dof of (p, l)
        own = np.arange(sp.offset, sp.offset + sp.n)
        self.p_of, self.l_of = p[own], il[own]
        # the trapezoid weights of the channel levels: ∫_Z f dz ≈ Σ ω_Z[l] f(z_l)
        dz = np.diff(self.zs)
        self.wz = np.zeros(L)
        self.wz[:-1] += dz / 2
        self.wz[1:] += dz / 2
        if L == 1:
            self.wz[:] = 1.0
        # the 3 × 3 neighbourhood of every plane point: nbr[p, j] for the offsets
        # j = 3(dy + 1) + (dx + 1), dx, dy ∈ {−1, 0, 1}; |P| (a zero pad) where none
        gx, gy = np.arange(self.Np) % nx, np.arange(self.Np) // nx
        self.nbr = np.full((self.Np, 9), self.Np, dtype=np.int64)
        for j in range(9):
            dx, dy = j % 3 - 1, j // 3 - 1
            inside = (0 <= gx + dx) & (gx + dx < nx) & (0 <= gy + dy) & (gy + dy < ny)
            self.nbr[inside, j] = (gy + dy)[inside] * nx + (gx + dx)[inside]
        # the dofs of the 9 neighbours of (p, l): nbr_dofs[p, j, l] (N, a zero row, where none)
        padded = np.vstack([grid, np.full((1, L), sp.N)])
        self._nbr_dofs = padded[self.nbr]
        self._own = self.p_of * L + self.l_of  # the owned dofs' rows of a grid array

    def _plane_operators(self):
        """D_k = ℓ^|k| M_P⁻¹ F_k on the plane grid (all |P| points, every rank)."""
        deg = self.space.degree
        nx, ny = self.xs.size, self.ys.size
        if deg != 1:
            raise InputError(f"the conv kernel needs P1 (Q1 on hexahedra), got P{deg}", "type")
        plane = dolfinx.mesh.create_rectangle(
            MPI.COMM_SELF,
            [[self.xs[0], self.ys[0]], [self.xs[-1], self.ys[-1]]],
            [(nx - 1) // deg, (ny - 1) // deg],
            dolfinx.mesh.CellType.quadrilateral,
        )
        V = function_space(plane, deg)
        x = V.tabulate_dof_coordinates()[:, :2]
        tx, ty = 2 * self._xtol, 2 * self._ytol  # the plane mesh's own round-off
        ix = np.searchsorted(self.xs, x[:, 0] - tx)
        iy = np.searchsorted(self.ys, x[:, 1] - ty)
        ok = (ix < nx) & (iy < ny)
        ok &= np.abs(self.xs[np.minimum(ix, nx - 1)] - x[:, 0]) <= tx
        ok &= np.abs(self.ys[np.minimum(iy, ny - 1)] - x[:, 1]) <= ty
        if x.shape[0] != self.Np or not ok.all():
            raise InputError(
                "the conv kernel needs a uniform grid in the plane (a box mesh)", "type"
            )
        perm = np.empty(self.Np, dtype=np.int64)
        perm[iy * nx + ix] = np.arange(self.Np)  # plane point p ↦ dof of the plane mesh
        mp = dolfinx.fem.assemble_vector(dolfinx.fem.form(row_sum_form(V))).array[perm]
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        ops = [scipy.sparse.identity(self.Np, format="csr")]
        self.K = 1 + len(plane_operators(u, v, self.order))
        for k, form in enumerate(plane_operators(u, v, self.order)):
            F = dolfinx.fem.assemble_matrix(dolfinx.fem.form(form)).to_scipy()
            F = F[perm][:, perm]
            ell = self.length ** (1 if k < 2 else 2)
            ops.append(scipy.sparse.csr_matrix(scipy.sparse.diags(ell / mp) @ F))
        self.mp = mp
        #: (K·|P|) × |P|: all plane operators stacked
        self.D = scipy.sparse.vstack(ops, format="csr")
        # their 3 × 3 stencils: Dn[p, j, k] = (D_k)[p, nbr[p, j]]
        pad = np.zeros((self.K, self.Np, self.Np + 1))
        pad[:, :, : self.Np] = self.D.toarray().reshape(self.K, self.Np, self.Np)
        at = (np.arange(self.Np)[:, None], self.nbr)
        self.Dn = np.stack([pad[k][at] for k in range(self.K)], axis=2)
        self.DnT = np.ascontiguousarray(self.Dn.transpose(0, 2, 1))
        if not np.allclose(abs(self.D).sum(), np.abs(self.Dn).sum()):
            raise RuntimeError("conv kernel: a plane operator reaches beyond the 3 × 3 stencil")

    # -- controls --------------------------------------------------------------------
    def shapes(self):
        return {"a": (self.space.n, self.K, self.L)}

    def weights(self):
        return {"a": self.space.m[:, None, None] * self.wz[None, None, :]}

    def _scale(self) -> float:
        """Σ_l' ω_Z[l'] a u has the size of a·u for a of standard deviation √L/|Z|."""
        return np.sqrt(self.L) / float(self.wz.sum())

    def init(self, rng_for, gain):
        sp = self.space
        full = self.normal(rng_for("a"), (sp.N, self.K, self.L), gain * self._scale())
        return {"a": sp.from_canonical(full)}

    def field_init(self, field, rng_for, variance):
        """Matérn fields in (x, z), independent over the K operators and the L
        source levels z' (pointwise variance ``variance``·L/|Z|²)."""
        sp = self.space
        a = field.scalar(rng_for("a"), self.K * self.L, np.sqrt(variance) * self._scale())
        return {"a": a.reshape(sp.n, self.K, self.L)}

    # -- the operator ----------------------------------------------------------------
    #
    # On the grid (p, l) of all N dofs (every width rank computes the whole grid from
    # all-gathered arrays and keeps its own rows), with U_j[p] = U[nbr[p, j]]:
    #     (K U)[p, l] = Σ_{j, l'} W[p, l, j, l'] U_j[p, l'],
    #     W[p, l, j, l'] = Σ_k Dn[p, j, k] a[(p, l), k, l'] ω_Z[l']   (one batched GEMM).
    def _plane_mean(self, a):
        """ā[l, k, l'] = |P|⁻¹ Σ_p m_P[p] a[(p, l), k, l'] (summed over the width ranks)."""
        abar = np.zeros((self.L, self.K, self.L))
        np.add.at(abar, self.l_of, (self.mp[self.p_of] / self.mp.sum())[:, None, None] * a)
        return self.space.sum(abar)

    def layer(self, theta, n=None):
        """The stencil matrices of the layer (shared: of the plane mean ā): W (|P| × L × 9L)
        of K, and WT of Kᵀ, which has the same form,
        (Kᵀ D)[q] = Σ_j W[nbr(q, j), :, 8 − j, :]ᵀ D_j[q]
        (the neighbour in direction j sees q in direction 8 − j)."""
        if self.shared:
            ag = np.broadcast_to(self._plane_mean(theta["a"]), (self.Np, self.L, self.K, self.L))
        else:
            ag = self.space.allgather(theta["a"])[self.grid]  # (|P|, L, K, L)
        L, K = self.L, self.K
        agT = np.ascontiguousarray((ag * self.wz).transpose(0, 2, 1, 3)).reshape(self.Np, K, L * L)
        W = np.matmul(self.Dn, agT).reshape(self.Np, 9, L, L)  # [p, j, l, l']
        Wpad = np.concatenate([W, np.zeros((1, 9, L, L))])  # no neighbour: zero
        WT = Wpad[self.nbr, 8 - np.arange(9)].transpose(0, 3, 1, 2)  # [q, l', j, l]
        return {
            "W": np.ascontiguousarray(W.transpose(0, 2, 1, 3)).reshape(self.Np, L, 9 * L),
            "WT": np.ascontiguousarray(WT).reshape(self.Np, L, 9 * L),
        }

    def tangent(self, ctx, dtheta):
        return self.layer(dtheta)

    # K U, Kᵀ D and the gradient run over column blocks of at most CHUNK samples,
    # gathering each block's U_j from the all-gathered rows with one index (the 9
    # neighbours' dofs; the pad points at a zero row): a block's 9 shifted copies
    # stay in cache. All S at once made 9 copies of the whole state (377 MB for
    # digits' 8 082 images) at a third of the speed a sample.
    def _blocks(self, A):
        """(slice, block) over the column blocks of the all-gathered rows of A: each
        block (N + 1) × s, C-contiguous, its last row zero."""
        Afull = self.space.allgather(A)
        N, S = Afull.shape
        for s0 in range(0, S, self.CHUNK):
            s = slice(s0, min(s0 + self.CHUNK, S))
            B = np.empty((N + 1, s.stop - s.start))
            B[:N], B[N] = Afull[:, s], 0.0
            yield s, B

    def _shifted(self, B):
        """U_j[p] of a block: |P| × 9L × s."""
        return np.take(B, self._nbr_dofs, axis=0).reshape(self.Np, 9 * self.L, B.shape[1])

    def _stencil(self, Wm, A, ws):
        """The owned rows of (Wm[p] (A_j[p])_j)_p: K A for W, Kᵀ A for WT."""
        Z = ws.take((self.space.n, A.shape[1]))
        for s, B in self._blocks(A):
            Z[:, s] = np.matmul(Wm, self._shifted(B)).reshape(self.Np * self.L, -1)[self._own]
        return Z

    def apply(self, ctx, U, ws=HEAP):
        return self._stencil(ctx["W"], U, ws)

    def apply_T(self, ctx, D, ws=HEAP):
        return self._stencil(ctx["WT"], D, ws)

    def vjp(self, ctx, U, D, out, ws=HEAP):
        G = np.zeros((self.Np, self.L, 9 * self.L))  # Σ_s D[p] U_j[p]ᵀ
        for (_, BU), (_, BD) in zip(self._blocks(U), self._blocks(D), strict=True):
            G += np.matmul(np.take(BD, self.grid, axis=0), self._shifted(BU).transpose(0, 2, 1))
        L, K = self.L, self.K
        GT = np.ascontiguousarray(G.reshape(self.Np, L, 9, L).transpose(0, 2, 1, 3))
        ga = np.matmul(self.DnT, GT.reshape(self.Np, 9, L * L)).reshape(self.Np, K, L, L)
        ga = ga.transpose(0, 2, 1, 3) * self.wz  # ∂/∂a[(p, l), k, l'] on the grid
        if self.shared:  # ∂/∂a[(p, l)] = m_P[p]/|P| · Σ_p' ∂/∂ā at (p', l)
            gbar = ga.sum(axis=0)
            out["a"] += (self.mp[self.p_of] / self.mp.sum())[:, None, None] * gbar[self.l_of]
        else:
            out["a"] += ga[self.p_of, self.l_of]

    # -- outputs ---------------------------------------------------------------------
    def matrix(self, ctx) -> scipy.sparse.csr_matrix:
        """Kⁿ of a layer context as a SciPy CSR matrix, all N rows and columns in
        DOLFINx's global dof order (every width rank)."""
        p, l, j, lp = np.meshgrid(
            np.arange(self.Np), np.arange(self.L), np.arange(9), np.arange(self.L), indexing="ij"
        )
        q = self.nbr[p, j]
        keep = q < self.Np
        rows = self.grid[p[keep], l[keep]]
        cols = self.grid[q[keep], lp[keep]]
        W = ctx["W"].reshape(self.Np, self.L, 9, self.L)
        return scipy.sparse.csr_matrix((W[keep], (rows, cols)), shape=(self.space.N, self.space.N))

    def export(self, controls, layers):
        """The matrices Lⁿ = M_L Kⁿ in canonical CSR (``L_data``, ``L_indices``
        (N_t, nnz), ``L_indptr``; Kⁿ U = M_L⁻¹ Lⁿ U as for the local kernel), on
        width rank 0."""
        sp = self.space
        lo, hi = sp.offset, sp.offset + sp.n
        mats = []
        for n in range(layers):
            L = self.matrix(self.layer({"a": controls["a"][n]}))[lo:hi]
            L.data *= np.repeat(sp.m, np.diff(L.indptr))  # explicit zeros kept: one pattern
            mats.append(sp.canonical_csr(L))
        if sp.comm.rank != 0:
            return {}
        nnz = max(M.nnz for M in mats)
        if any(M.nnz != nnz or not np.array_equal(M.indptr, mats[0].indptr) for M in mats):
            raise RuntimeError("conv kernel: the layers' patterns differ")
        return {
            "L_indptr": mats[0].indptr.astype(np.int64),
            "L_indices": np.stack([M.indices for M in mats]).astype(np.int64),
            "L_data": np.stack([M.data for M in mats]),
        }
