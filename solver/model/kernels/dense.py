"""The dense kernel: w(t, ·, ·) by its nodal values, K = W M_L (cost N²S per step).

W ∈ R^{N×N} is distributed by rows; its column axis runs over all N dofs (in
DOLFINx's global numbering), so K U needs all rows of M_L U on every width rank
(an allgather) and Kᵀ D a reduce-scatter of the partial products. The GEMMs run
on the BLAS threads (∂J/∂W accumulated by the GEMM itself, β = 1), the scalings
by M_L on the same number of threads in row blocks
(:mod:`pontryx.solver.model.threads`).
"""

from __future__ import annotations

import numpy as np
from scipy.linalg.blas import dgemm

from pontryx.solver.model.kernels.base import Kernel
from pontryx.solver.model.threads import add_into, scale_rows
from pontryx.solver.model.workspace import HEAP

__all__ = ["DenseKernel", "gemm_accumulate"]


def gemm_accumulate(A: np.ndarray, B: np.ndarray, C: np.ndarray) -> bool:
    """C += A Bᵀ in one BLAS GEMM with β = 1 (no temporary, no extra pass over C);
    False (nothing done) unless A, B, C are C-contiguous float64. Row-major C
    is column-major Cᵀ, so this is Cᵀ += B Aᵀ for Fortran's dgemm."""
    if not all(x.dtype == np.float64 and x.flags.c_contiguous for x in (A, B, C)):
        return False
    if C.size == 0 or A.shape[1] == 0:
        return True  # nothing to add
    out = dgemm(1.0, B.T, A.T, beta=1.0, c=C.T, trans_a=1, trans_b=0, overwrite_c=1)
    if not np.shares_memory(out, C):  # pragma: no cover - f2py made a copy
        C[...] = out.T
    return True


class DenseKernel(Kernel):
    """w(t, ·, ·) by its nodal values: K = W M_L (cost N²S per step)."""

    name = "dense"
    full_axis = ("W",)
    has_rows = True

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

    def field_init(self, field, rng_for, variance):
        return {"W": field.kernel(rng_for("W"), np.sqrt(variance))}

    def _gathered(self, U, ws):
        """All N rows of M_L U (a workspace array)."""
        sp = self.space
        X = scale_rows(sp.m, U, out=ws.take(U.shape))
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
        return scale_rows(sp.m, Y, out=Y)

    def vjp(self, ctx, U, D, out, ws=HEAP):
        G = self._gathered(U, ws)
        W = out["W"]
        if not gemm_accumulate(D, G, W):
            P = np.matmul(D, G.T, out=ws.take(W.shape))
            add_into(W, P)
            ws.give(P)
        ws.give(G)

    def row(self, theta, i):
        sp = self.space
        return sp.row(theta["W"], i)[sp.offset : sp.offset + sp.n]
