"""The low-rank kernel w(t, x, y) = Σ_r a_r(t, x) g_r(t, y): K = A Gᵀ M_L (cost N R S per step).

A, G ∈ R^{N×R} are distributed by rows; Gᵀ M_L U is a sum over the width ranks.
The kernel is bilinear in (A, G), so its tangent K'[dA, dG] = dA Gᵀ M_L + A dGᵀ M_L
and ∂_θ⟨D, K'[dθ] U⟩ ≠ 0 (the mixed second derivative).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pontryx.meshes.errors import InputError
from pontryx.solver.model.blas import matmul
from pontryx.solver.model.kernels.base import Kernel, Option, plus, positive_int
from pontryx.solver.model.threads import scale_rows
from pontryx.solver.model.workspace import HEAP

__all__ = ["LowRankKernel"]


class _Tangent:
    """K'(θ)[dθ] = dA Gᵀ M_L + A dGᵀ M_L."""

    def __init__(self, ctx, dtheta):
        self.A, self.G, self.dA, self.dG = ctx["A"], ctx["G"], dtheta["A"], dtheta["G"]


class LowRankKernel(Kernel):
    """w(t, x, y) = Σ_r a_r(t, x) g_r(t, y): K = A Gᵀ M_L (cost N R S per step)."""

    name = "lowrank"
    threadsafe = True
    options: ClassVar[dict] = {
        "rank": Option(positive_int, required=True, description="R, 1 ≤ R ≤ N (the dofs)")
    }
    has_rows = True

    def __init__(self, space, rank: int):
        super().__init__(space)
        if not 1 <= rank <= space.N:
            raise InputError(
                f"expected 1 ≤ rank ≤ {space.N} (the number of dofs), got {rank}", "rank"
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

    def field_init(self, field, rng_for, variance):
        # w = Σ_r a_r g_r with independent factor fields: Var w = R s⁴ = σ_w²
        s = (variance / self.rank) ** 0.25
        return {key: field.scalar(rng_for(key), self.rank, s) for key in ("A", "G")}

    def _project(self, G, U, mU=None):
        """Gᵀ M_L U (R × S), summed over the width ranks (``mU``: M_L U if known)."""
        sp = self.space
        return sp.sum(matmul(G.T, scale_rows(sp.m, U) if mU is None else mU))

    def apply(self, ctx, U, ws=HEAP):
        if isinstance(ctx, _Tangent):
            return matmul(ctx.dA, self._project(ctx.G, U)) + matmul(ctx.A, self._project(ctx.dG, U))
        return matmul(ctx["A"], self._project(ctx["G"], U))

    def apply_and_record(self, ctx, U, ws=HEAP):
        """(K U, M_L U): the product scales U anyway, and the backward's
        (M_L U)(Aᵀ D)ᵀ and Gᵀ M_L U take it (a workspace array)."""
        if isinstance(ctx, _Tangent):
            return self.apply(ctx, U, ws), U
        mU = scale_rows(self.space.m, U, out=ws.take(U.shape))
        return matmul(ctx["A"], self._project(ctx["G"], U, mU)), mU

    def apply_T(self, ctx, D, ws=HEAP):
        m, sp = self.space.m, self.space
        if isinstance(ctx, _Tangent):
            Y = matmul(ctx.dG, sp.sum(matmul(ctx.A.T, D)))
            Y += matmul(ctx.G, sp.sum(matmul(ctx.dA.T, D)))
        else:
            Y = matmul(ctx["G"], sp.sum(matmul(ctx["A"].T, D)))
        return scale_rows(m, Y, out=Y)

    def vjp(self, ctx, U, D, out, ws=HEAP):
        sp = self.space
        mU = scale_rows(sp.m, U)
        P = self._project(ctx["G"], U, mU)  # Gᵀ M_L U
        out["A"] += matmul(D, P.T)
        out["G"] += matmul(mU, sp.sum(matmul(ctx["A"].T, D)).T)

    def backward(self, ctx, U, D, out, ws=HEAP, assign=False, recorded=False, add=None):
        """Kᵀ D = M_L G (Aᵀ D) (+ add) and the vjp, sharing Aᵀ D and M_L U
        (``recorded``: ``U`` is M_L U already, :meth:`apply_and_record`)."""
        if out is None or isinstance(ctx, _Tangent):
            return super().backward(ctx, U, D, out, ws, assign, add=add)
        sp = self.space
        AD = sp.sum(matmul(ctx["A"].T, D))  # Aᵀ D (R × S)
        mU = U if recorded else scale_rows(sp.m, U)
        P = self._project(ctx["G"], U, mU)
        if assign:  # written straight into the gradient (0 + x = x: the same values)
            matmul(D, P.T, out=out["A"])
            matmul(mU, AD.T, out=out["G"])
        else:
            out["A"] += matmul(D, P.T)
            out["G"] += matmul(mU, AD.T)
        Y = matmul(ctx["G"], AD)
        scale_rows(sp.m, Y, out=Y)
        return plus(Y, add)

    def tangent(self, ctx, dtheta):
        return _Tangent(ctx, dtheta)

    def second_vjp(self, ctx, dtheta, U, D, out):
        """∂_A⟨D, dA Gᵀ M U + A dGᵀ M U⟩ = D (dGᵀ M U)ᵀ, ∂_G = M U (dAᵀ D)ᵀ."""
        sp = self.space
        mU = scale_rows(sp.m, U)
        out["A"] += matmul(D, self._project(dtheta["G"], U, mU).T)
        out["G"] += matmul(mU, sp.sum(matmul(dtheta["A"].T, D)).T)

    def row(self, theta, i):
        return theta["G"] @ self.space.row(theta["A"], i)
