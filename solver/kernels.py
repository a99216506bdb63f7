"""Kernel parametrisations of the nonlocal operator 𝒦(t) (DESIGN.md §1–2).

All three share one interface, used by every depth scheme and its adjoint:

* ``shapes``     — per-layer local shapes of the kernel's controls,
* ``weights``    — lumped-mass weights ω with ‖θ‖² = Σ ω θ² (the L² norms of
                   the regulariser: ∫∫ w² ≈ Σ_ij m_i m_j W_ij² etc.),
* ``layer(θⁿ)``  — prepare layer n (assemble, gather, …),
* ``apply``      — K U,  ``apply_T`` — Kᵀ D (both return new arrays, which
                   the schemes may overwrite in place; taken from the
                   :class:`~pontryx.solver.workspace.Workspace` ``ws`` where the
                   kernel supports it, temporaries given back to it),
* ``vjp``        — accumulate ∂/∂θ ⟨D, K(θ) U⟩ (the kernel part of ∂J/∂θⁿ).

Parametrisations (n owned rows, N global dofs, S samples):

* dense:    K = W M_L,                 W ∈ R^{N×N} by rows; cost N²S,
* low-rank: K = A Gᵀ M_L,              A, G ∈ R^{N×R};     cost NRS,
* local:    K = M_L⁻¹ L(κ, a, r),      L(u, v) = ∫ r u v − κ ∇u·∇v + (a·∇u) v dx,
            the short-range limit of 𝒦, a sparse matrix assembled from UFL.
"""

from __future__ import annotations

import dolfinx.fem
import dolfinx.fem.petsc
import numpy as np
import ufl
from petsc4py import PETSc

from pontryx.forms.kernels import local_operator, sample_sum
from pontryx.solver.workspace import HEAP, Workspace

__all__ = ["KERNELS", "DenseKernel", "Kernel", "LocalKernel", "LowRankKernel", "make_kernel"]


class Kernel:
    """Common interface; see the module docstring."""

    name = "kernel"

    def __init__(self, space):
        self.space = space

    def shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def weights(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def init(self, rng_for, gain: float) -> dict[str, np.ndarray]:
        """One layer's controls; ``rng_for(name)`` gives a seeded generator."""
        raise NotImplementedError

    def layer(self, theta: dict[str, np.ndarray]):
        return theta

    def apply(self, ctx, U: np.ndarray, ws: Workspace = HEAP) -> np.ndarray:
        raise NotImplementedError

    def apply_T(self, ctx, D: np.ndarray, ws: Workspace = HEAP) -> np.ndarray:
        raise NotImplementedError

    def vjp(
        self, ctx, U: np.ndarray, D: np.ndarray, out: dict[str, np.ndarray], ws: Workspace = HEAP
    ) -> None:
        raise NotImplementedError

    def release(self, ctx) -> None:
        """Free what :meth:`layer` made (PETSc objects)."""

    # -- convenience ---------------------------------------------------------
    def apply_adjoint(self, ctx, V: np.ndarray) -> np.ndarray:
        """The L²(M_L) adjoint K* = M_L⁻¹ Kᵀ M_L (the discrete 𝒦*)."""
        m = self.space.m[:, None]
        return self.apply_T(ctx, m * V) / m

    def normal(self, rng, shape_full, scale):
        return scale * rng.standard_normal(shape_full)


class DenseKernel(Kernel):
    """w(t, ·, ·) by its nodal values: K = W M_L (cost N²S per step)."""

    name = "dense"

    def shapes(self):
        return {"W": (self.space.n, self.space.N)}

    def weights(self):
        sp = self.space
        return {"W": sp.m[:, None] * sp.allgather(sp.m)[None, :]}

    def init(self, rng_for, gain):
        sp = self.space
        # Gain-normalised: Σ_j W_ij m_j u_j has variance ≈ gain² ‖u‖²_rms.
        scale = gain * np.sqrt(sp.N) / sp.area
        Wc = self.normal(rng_for("W"), (sp.N, sp.N), scale)
        return {"W": sp.from_canonical(Wc, axis_full=True)}

    def _gathered(self, U, ws):
        """All N rows of M_L U (a workspace array)."""
        sp = self.space
        X = np.multiply(sp.m[:, None], U, out=ws.take(U.shape))
        return ws.replaced(X, sp.allgather(X, ws))

    def apply(self, ctx, U, ws=HEAP):
        G = self._gathered(U, ws)
        Z = np.matmul(ctx["W"], G, out=ws.take((self.space.n, U.shape[1])))
        ws.give(G)
        return Z

    def apply_T(self, ctx, D, ws=HEAP):
        sp = self.space
        Yfull = np.matmul(ctx["W"].T, D, out=ws.take((sp.N, D.shape[1])))
        Y = ws.replaced(Yfull, sp.reduce_scatter(Yfull, ws))
        Y *= sp.m[:, None]
        return Y

    def vjp(self, ctx, U, D, out, ws=HEAP):
        G = self._gathered(U, ws)
        P = np.matmul(D, G.T, out=ws.take(out["W"].shape))
        out["W"] += P
        ws.give(G, P)


class LowRankKernel(Kernel):
    """w(t, x, y) = Σ_r a_r(t, x) g_r(t, y): K = A Gᵀ M_L (cost N R S per step)."""

    name = "lowrank"

    def __init__(self, space, rank: int):
        super().__init__(space)
        if not 1 <= rank <= space.N:
            raise ValueError(
                f"model.kernel.rank: expected 1 ≤ rank ≤ {space.N} (the number of dofs), got {rank}"
            )
        self.rank = rank

    def shapes(self):
        n = self.space.n
        return {"A": (n, self.rank), "G": (n, self.rank)}

    def weights(self):
        m = self.space.m[:, None]
        return {"A": m, "G": m}

    def init(self, rng_for, gain):
        sp = self.space
        scale = np.sqrt(gain * np.sqrt(sp.N / self.rank)) / np.sqrt(sp.area)
        return {
            key: sp.from_canonical(self.normal(rng_for(key), (sp.N, self.rank), scale))
            for key in ("A", "G")
        }

    def _project(self, G, U):
        """Gᵀ M_L U (R × S), summed over the width ranks."""
        sp = self.space
        return sp.sum(G.T @ (sp.m[:, None] * U))

    def apply(self, ctx, U, ws=HEAP):
        return ctx["A"] @ self._project(ctx["G"], U)

    def apply_T(self, ctx, D, ws=HEAP):
        return self.space.m[:, None] * (ctx["G"] @ self.space.sum(ctx["A"].T @ D))

    def vjp(self, ctx, U, D, out, ws=HEAP):
        sp = self.space
        P = self._project(ctx["G"], U)  # Gᵀ M_L U
        out["A"] += D @ P.T
        out["G"] += (sp.m[:, None] * U) @ sp.sum(ctx["A"].T @ D).T


class LocalKernel(Kernel):
    """Short-range limit of 𝒦: K = M_L⁻¹ L(κ, a, r) with learnable coefficient
    fields κ, r ∈ V_h and a ∈ V_h^d, L(u, v) = ∫ r u v − κ ∇u·∇v + (a·∇u) v dx
    assembled from UFL (a reaction–diffusion–advection operator)."""

    name = "local"

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

    def layer(self, theta):
        self._set_coefficients(theta)
        L = dolfinx.fem.petsc.assemble_matrix(self.operator)
        L.assemble()
        return {"theta": theta, "L": L}

    def release(self, ctx):
        ctx["L"].destroy()

    def _matmul(self, L, X, transpose=False):
        sp = self.space
        n, S = X.shape
        Xf = np.asfortranarray(X)
        Xd = PETSc.Mat().createDense(((n, sp.N), (None, S)), array=Xf, comm=sp.comm)
        Yd = L.transposeMatMult(Xd) if transpose else L.matMult(Xd)
        Y = np.array(Yd.getDenseArray(), order="C", copy=True)
        Xd.destroy()
        Yd.destroy()
        return Y

    def apply(self, ctx, U, ws=HEAP):
        return self._matmul(ctx["L"], U) / self.space.m[:, None]

    def apply_T(self, ctx, D, ws=HEAP):
        return self._matmul(ctx["L"], D / self.space.m[:, None], transpose=True)

    def vjp(self, ctx, U, D, out, ws=HEAP):
        self._set_coefficients(ctx["theta"])
        for key, g in self.sample_sum_gradient(U, D / self.space.m[:, None]).items():
            out[key] += g


KERNELS = {"dense": DenseKernel, "lowrank": LowRankKernel, "local": LocalKernel}


def make_kernel(space, type: str = "dense", **options) -> Kernel:
    """The kernel called ``type`` on ``space``; clear errors for bad input."""
    try:
        cls = KERNELS[type]
    except KeyError:
        raise ValueError(
            f"model.kernel.type: unknown kernel {type!r}; expected one of {sorted(KERNELS)}"
        ) from None
    if type == "lowrank":
        if "rank" not in options:
            raise ValueError("model.kernel.rank: required for the low-rank kernel")
        return cls(space, int(options.pop("rank")), **options)
    if options:
        raise ValueError(f"model.kernel.{next(iter(options))}: not an option of the {type} kernel")
    return cls(space)
