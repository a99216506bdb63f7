"""The local kernel: the short-range limit of 𝒦, K = M_L⁻¹ L(κ, a, r).

    L(κ, a, r; u, v) = ∫_Ω r u v − κ ∇u·∇v + (a·∇u) v dx

is a reaction–diffusion–advection operator with learnable coefficient fields
κ, r ∈ V_h and a ∈ V_h^d (:func:`pontryx.forms.kernels.local_operator`).

L is linear in θ = (κ, r, a), so its entries are a fixed linear map of the
coefficient dofs: vec(L(θ)) = B t, t = (κ, r, a₁ … a_d) stacked over all N dofs.
B (nnz(L) × (2 + d)N, sparse) is assembled once from UFL: with a distance-2
colouring of the dof graph, each (component, colour) probe assembles L with the
coefficient equal to 1 on the dofs of that colour, and entry (i, k) of the
probe belongs to the one dof j of that colour adjacent to i. Then per layer

* L(θ) = B t — a sparse product instead of a finite-element assembly,
* K U = M_L⁻¹ L U and Kᵀ D = Lᵀ M_L⁻¹ D — one product on all S sample columns
  (:mod:`.banded`: GEMMs on the dense bands of L's pattern, CSR elsewhere; with
  several width ranks on the all-gathered rows, the transpose followed by a
  reduce-scatter, like the dense kernel),
* ∂/∂θ ⟨D, K U⟩ = Bᵀ p with p_(i,k) = Σ_s (M_L⁻¹ D)_is U_ks on the pattern of L
  (the sampled product of :mod:`.banded`).

B t equals the assembled matrix up to round-off, and the gradient is exact for
the operator the network applies (B t).
"""

from __future__ import annotations

from typing import ClassVar

import dolfinx.fem
import dolfinx.fem.petsc
import numpy as np
import scipy.sparse
import ufl

from pontryx.forms.kernels import local_operator
from pontryx.solver.model.kernels.banded import Pattern
from pontryx.solver.model.kernels.base import Kernel
from pontryx.solver.model.threads import add_into, rows
from pontryx.solver.model.workspace import HEAP

__all__ = ["LocalKernel", "distance2_colouring"]


def distance2_colouring(adjacency: scipy.sparse.csr_matrix) -> np.ndarray:
    """Greedy colours (0, 1, …) of the vertices of a graph such that vertices at
    distance ≤ 2 differ (``adjacency``: symmetric pattern with the diagonal)."""
    A = adjacency.astype(bool).astype(np.int8)
    two = (A @ A).tocsr()
    colour = np.full(A.shape[0], -1, dtype=np.int64)
    for j in range(A.shape[0]):
        taken = colour[two.indices[two.indptr[j] : two.indptr[j + 1]]]
        free = np.ones(taken.size + 1, dtype=bool)
        free[taken[(taken >= 0) & (taken <= taken.size)]] = False
        colour[j] = int(np.argmax(free))
    return colour


class _Layer:
    """L(θ) of one layer: its values on the pattern of L (the local rows, global
    columns)."""

    def __init__(self, theta, values, kernel):
        self.theta, self.values, self._kernel = theta, values, kernel
        self._T = None

    @property
    def values_T(self):
        """The values of Lᵀ on its pattern."""
        if self._T is None:
            self._T = self.values[self._kernel.perm]
        return self._T

    @property
    def L(self) -> scipy.sparse.csr_matrix:
        """L as a SciPy CSR matrix (n × N, global columns)."""
        k = self._kernel
        return scipy.sparse.csr_matrix(
            (self.values, k.indices, k.indptr), shape=(k.space.n, k.space.N)
        )

    def __getitem__(self, key):  # the controls, as for the other kernels
        return self.theta[key]


class LocalKernel(Kernel):
    """Short-range limit of 𝒦: K = M_L⁻¹ L(κ, a, r) with learnable coefficient
    fields κ, r ∈ V_h and a ∈ V_h^d (see the module docstring)."""

    name = "local"
    fields: ClassVar[dict] = {"kappa": (), "r": (), "a": "gdim"}

    def __init__(self, space):
        super().__init__(space)
        V, mesh = space.V, space.mesh
        self.gdim = gdim = mesh.geometry.dim
        Va = dolfinx.fem.functionspace(mesh, ("Lagrange", space.degree, (gdim,)))
        self.coef = {
            "kappa": dolfinx.fem.Function(V),
            "r": dolfinx.fem.Function(V),
            "a": dolfinx.fem.Function(Va),
        }
        kappa, r, a = (self.coef[k] for k in ("kappa", "r", "a"))
        self.operator = dolfinx.fem.form(
            local_operator(kappa, r, a, ufl.TrialFunction(V), ufl.TestFunction(V))
        )
        #: (field, component) of each block of N entries of t
        self.components = [("kappa", None), ("r", None)] + [("a", c) for c in range(gdim)]
        self._build_map()

    # -- the linear map B: t ↦ vec(L) --------------------------------------------------
    def _probe(self, theta):
        """The local CSR (indptr, global column indices, values) of L(θ) assembled."""
        self._set_coefficients(theta)
        L = dolfinx.fem.petsc.create_matrix(self.operator)
        dolfinx.fem.petsc.assemble_matrix(L, self.operator)
        L.assemble()
        indptr, indices, data = (np.array(x, copy=True) for x in L.getValuesCSR())
        L.destroy()
        return indptr.astype(np.int64), indices.astype(np.int64), data

    def _build_map(self):
        sp = self.space
        n, N = sp.n, sp.N
        zero = {k: np.zeros(s) for k, s in self.shapes().items()}
        indptr, indices, _ = self._probe(zero)
        self.indptr, self.indices = indptr, indices
        row = np.repeat(np.arange(n), np.diff(indptr))
        # the global dof graph on every width rank, its distance-2 colouring
        parts = sp.comm.allgather((row + sp.offset, indices))
        grow = np.concatenate([p[0] for p in parts])
        gcol = np.concatenate([p[1] for p in parts])
        graph = scipy.sparse.csr_matrix((np.ones(grow.size, np.int8), (grow, gcol)), (N, N))
        colour = distance2_colouring(graph + graph.T)
        ncol = int(colour.max()) + 1
        # member[i, c]: the dof of colour c adjacent to owned row i (−1: none)
        member = np.full((n, ncol), -1, dtype=np.int64)
        member[row, colour[indices]] = indices
        owned_colour = colour[sp.offset : sp.offset + n]
        entries, cols, vals = [], [], []
        for block, (name, comp) in enumerate(self.components):
            for c in range(ncol):
                theta = {k: v.copy() for k, v in zero.items()}
                on = (owned_colour == c).astype(float)
                if comp is None:
                    theta[name][:] = on
                else:
                    theta[name][:, comp] = on
                p_indptr, p_indices, data = self._probe(theta)
                if not (np.array_equal(p_indptr, indptr) and np.array_equal(p_indices, indices)):
                    raise RuntimeError("local kernel: the sparsity pattern of L changed")
                j = member[row, c]
                keep = (j >= 0) & (data != 0.0)
                entries.append(np.flatnonzero(keep))
                cols.append(block * N + j[keep])
                vals.append(data[keep])
        self.B = scipy.sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(entries), np.concatenate(cols))),
            shape=(indices.size, len(self.components) * N),
        )
        self.BT = self.B.T.tocsr()
        self.colours = ncol
        self.pattern = Pattern(indptr, indices, (n, N))
        self.pattern_T, self.perm = self.pattern.transpose()

    def _stacked(self, theta) -> np.ndarray:
        """t = (κ, r, a₁ … a_d) over all N dofs (all-gathered)."""
        sp = self.space
        local = np.column_stack(
            [theta[k] if comp is None else theta[k][:, comp] for k, comp in self.components]
        )
        return np.ascontiguousarray(sp.allgather(local).T).ravel()

    def _set(self, f, values):
        bs = f.function_space.dofmap.index_map_bs
        f.x.array[: self.space.n * bs] = values.ravel()
        f.x.scatter_forward()

    def _set_coefficients(self, theta):
        for key, f in self.coef.items():
            self._set(f, theta[key])

    # -- controls ------------------------------------------------------------------------
    def shapes(self):
        n = self.space.n
        return {"kappa": (n,), "r": (n,), "a": (n, self.gdim)}

    def weights(self):
        m = self.space.m
        return {"kappa": m, "r": m, "a": m[:, None]}

    def init(self, rng_for, gain):
        sp = self.space
        return {
            "kappa": sp.from_canonical(self.normal(rng_for("kappa"), (sp.N,), 0.01 * gain)),
            "r": sp.from_canonical(self.normal(rng_for("r"), (sp.N,), gain)),
            "a": sp.from_canonical(self.normal(rng_for("a"), (sp.N, self.gdim), 0.1 * gain)),
        }

    def field_init(self, field, rng_for, variance):
        std = np.sqrt(variance)  # the reaction r; κ and a relative to it, as in init
        return {
            "kappa": field.scalar(rng_for("kappa"), 1, 0.01 * std)[:, 0],
            "r": field.scalar(rng_for("r"), 1, std)[:, 0],
            "a": field.scalar(rng_for("a"), self.gdim, 0.1 * std),
        }

    # -- the operator ----------------------------------------------------------------------
    def layer(self, theta, n=None):
        return _Layer(theta, self.B @ self._stacked(theta), self)

    def tangent(self, ctx, dtheta):
        return self.layer(dtheta)

    def _over_m(self, X, ws=HEAP):
        """M_L⁻¹ X (a workspace array), in row blocks on the BLAS threads."""
        m, Y = self.space.m, ws.take(X.shape)
        rows(lambda r: np.divide(X[r], m[r, None], out=Y[r]), *X.shape)
        return Y

    def _gathered(self, U, ws):
        """All N rows of U (U itself on one width rank, else a workspace array)."""
        return self.space.allgather(U, ws)

    def apply(self, ctx, U, ws=HEAP):
        sp = self.space
        Ufull = self._gathered(U, ws)
        Y = self.pattern.matmul(ctx.values, Ufull, out=ws.take((sp.n, U.shape[1])))
        if Ufull is not U:
            ws.give(Ufull)
        m = sp.m
        rows(lambda r: np.divide(Y[r], m[r, None], out=Y[r]), *Y.shape)
        return Y

    def _transposed(self, ctx, Q, ws):
        """Lᵀ Q on the owned rows (summed over the width ranks; a workspace array)."""
        sp = self.space
        Yfull = self.pattern_T.matmul(ctx.values_T, Q, out=ws.take((sp.N, Q.shape[1])))
        return ws.replaced(Yfull, sp.reduce_scatter(Yfull, ws))

    def apply_T(self, ctx, D, ws=HEAP):
        Q = self._over_m(D, ws)
        Y = self._transposed(ctx, Q, ws)
        ws.give(Q)
        return Y

    def vjp(self, ctx, U, D, out, ws=HEAP):
        self._backward(ctx, U, D, out, ws, transpose=False)

    def backward(self, ctx, U, D, out, ws=HEAP, assign=False, recorded=False, add=None):
        """Kᵀ D (+ add) and the vjp, sharing M_L⁻¹ D."""
        if out is not None and assign:
            self.clear(out)
        Y = self._backward(ctx, U, D, out, ws, transpose=True)
        return Y if add is None else add_into(Y, add)

    def _backward(self, ctx, U, D, out, ws, transpose):
        Q = self._over_m(D, ws)
        if out is not None:
            Ufull = self._gathered(U, ws)
            self._accumulate(self.pattern.sampled(Q, Ufull), out)
            if Ufull is not U:
                ws.give(Ufull)
        Y = self._transposed(ctx, Q, ws) if transpose else None
        ws.give(Q)
        return Y

    def _accumulate(self, p, out):
        """∂/∂θ Σ_e L_e(θ) p_e = Bᵀ p into ``out`` (owned dofs, summed over width ranks)."""
        sp = self.space
        g = sp.reduce_scatter((self.BT @ p).reshape(len(self.components), sp.N).T.copy())
        for block_index, (name, comp) in enumerate(self.components):
            if comp is None:
                out[name] += g[:, block_index]
            else:
                out[name][:, comp] += g[:, block_index]

    def export(self, controls, layers):
        """The matrices Lⁿ = B tⁿ of the layers in canonical CSR (``L_data``,
        ``L_indices`` (N_t, nnz), ``L_indptr``), on width rank 0."""
        sp = self.space
        mats = [
            sp.canonical_csr(self.layer({k: controls[k][n] for k in self.coef}).L)
            for n in range(layers)
        ]
        if sp.comm.rank != 0:
            return {}
        return {
            "L_indptr": mats[0].indptr.astype(np.int64),
            "L_indices": np.stack([M.indices for M in mats]).astype(np.int64),
            "L_data": np.stack([M.data for M in mats]),
        }
