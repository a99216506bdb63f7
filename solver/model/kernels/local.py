"""The local kernel: the short-range limit of 𝒦, K = M_L⁻¹ L(κ, a, r).

    L(κ, a, r; u, v) = ∫_Ω r u v − κ ∇u·∇v + (a·∇u) v dx

is a reaction–diffusion–advection operator with learnable coefficient fields
κ, r ∈ V_h and a ∈ V_h^d (:func:`pontryx.forms.kernels.local_operator`), a sparse
PETSc matrix assembled from UFL. L is linear in (κ, a, r), so K'(θ)[dθ] = K(dθ).
One matrix per layer is created once and refilled (``zeroEntries`` + assembly)
whenever the layer's coefficients change.
"""

from __future__ import annotations

from typing import ClassVar

import dolfinx.fem
import dolfinx.fem.petsc
import numpy as np
import ufl
from petsc4py import PETSc

from pontryx.forms.kernels import local_operator, sample_sum
from pontryx.solver.model.kernels.base import Kernel
from pontryx.solver.model.workspace import HEAP

__all__ = ["LocalKernel"]


class LocalKernel(Kernel):
    """Short-range limit of 𝒦: K = M_L⁻¹ L(κ, a, r) with learnable coefficient
    fields κ, r ∈ V_h and a ∈ V_h^d (see the module docstring)."""

    name = "local"
    fields: ClassVar[dict] = {"kappa": (), "r": (), "a": "gdim"}

    def __init__(self, space, block: int = 8):
        super().__init__(space)
        V, mesh = space.V, space.mesh
        self.gdim = gdim = mesh.geometry.dim
        self.block = block
        Va = dolfinx.fem.functionspace(mesh, ("Lagrange", space.degree, (gdim,)))
        Vb = dolfinx.fem.functionspace(mesh, ("Lagrange", space.degree, (block,)))
        self.coef = {
            "kappa": dolfinx.fem.Function(V),
            "r": dolfinx.fem.Function(V),
            "a": dolfinx.fem.Function(Va),
        }
        kappa, r, a = (self.coef[k] for k in ("kappa", "r", "a"))
        self.operator = dolfinx.fem.form(
            local_operator(kappa, r, a, ufl.TrialFunction(V), ufl.TestFunction(V))
        )
        self.U, self.Q = dolfinx.fem.Function(Vb), dolfinx.fem.Function(Vb)
        total = sample_sum(kappa, r, a, self.U, self.Q)
        self.grad_forms = {
            key: dolfinx.fem.form(ufl.derivative(total, f, ufl.TestFunction(f.function_space)))
            for key, f in self.coef.items()
        }
        self._mats: dict[object, PETSc.Mat] = {}  # one matrix per layer (and slot)

    def _set(self, f, values):
        bs = f.function_space.dofmap.index_map_bs
        f.x.array[: self.space.n * bs] = values.ravel()
        f.x.scatter_forward()

    def _set_coefficients(self, theta):
        for key, f in self.coef.items():
            self._set(f, theta[key])

    def sample_sum_gradient(self, U, Q):
        """∂/∂θ Σ_s L(θ; u_s, q_s), in blocks of ``self.block`` samples."""
        n, S = U.shape
        grads = {k: np.zeros((n, *self.shapes()[k][1:])) for k in self.coef}
        blk = self.block
        for start in range(0, S, blk):
            Ub = np.zeros((n, blk))
            Qb = np.zeros((n, blk))
            Ub[:, : min(blk, S - start)] = U[:, start : start + blk]
            Qb[:, : min(blk, S - start)] = Q[:, start : start + blk]
            self._set(self.U, Ub)
            self._set(self.Q, Qb)
            for key, form in self.grad_forms.items():
                vec = dolfinx.fem.assemble_vector(form)
                vec.scatter_reverse(dolfinx.la.InsertMode.add)
                bs = self.coef[key].function_space.dofmap.index_map_bs
                grads[key] += vec.array[: n * bs].reshape(grads[key].shape)
        return grads

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

    def _assemble(self, theta, slot) -> PETSc.Mat:
        """L(θ) into the matrix of ``slot`` (created on first use, then refilled)."""
        self._set_coefficients(theta)
        L = self._mats.get(slot)
        if L is None:
            L = self._mats[slot] = dolfinx.fem.petsc.create_matrix(self.operator)
        L.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(L, self.operator)
        L.assemble()
        return L

    def layer(self, theta, n=None):
        return {"theta": theta, "L": self._assemble(theta, n)}

    def tangent(self, ctx, dtheta):
        return {"theta": dtheta, "L": self._assemble(dtheta, "tangent")}

    def _matmul(self, L, X, transpose=False):
        return self.space.matmul(L, X, transpose)

    def apply(self, ctx, U, ws=HEAP):
        return self._matmul(ctx["L"], U) / self.space.m[:, None]

    def apply_T(self, ctx, D, ws=HEAP):
        return self._matmul(ctx["L"], D / self.space.m[:, None], transpose=True)

    def vjp(self, ctx, U, D, out, ws=HEAP):
        self._set_coefficients(ctx["theta"])
        for key, g in self.sample_sum_gradient(U, D / self.space.m[:, None]).items():
            out[key] += g

    def export(self, controls, layers):
        """The assembled matrices Lⁿ in canonical CSR (``L_data``, ``L_indices``
        (N_t, nnz), ``L_indptr``), on width rank 0."""
        sp = self.space
        mats = []
        for n in range(layers):
            ctx = self.layer({k: controls[k][n] for k in self.coef}, n)
            mats.append(sp.canonical_csr(ctx["L"]))
        if sp.comm.rank != 0:
            return {}
        return {
            "L_indptr": mats[0].indptr.astype(np.int64),
            "L_indices": np.stack([M.indices for M in mats]).astype(np.int64),
            "L_data": np.stack([M.data for M in mats]),
        }

    def destroy(self):
        for L in self._mats.values():
            L.destroy()
        self._mats.clear()
