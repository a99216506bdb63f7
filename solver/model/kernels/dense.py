"""The dense kernel: w(t, ·, ·) by its nodal values, K = W M_L (cost N²S per step).

W ∈ R^{N×N} is distributed by rows; its column axis runs over all N dofs (in
DOLFINx's global numbering), so K U needs all rows of M_L U on every width rank
(an allgather) and Kᵀ D a reduce-scatter of the partial products. The GEMMs run
on the BLAS threads; the scalings by M_L and the accumulation of ∂J/∂W on as many
threads in row blocks (:mod:`pontryx.solver.model.threads`). (An accumulating
GEMM, β = 1, would need SciPy's BLAS: a second OpenBLAS, whose idle threads
spin while NumPy's work; measured slower with 2 threads.)
"""

from __future__ import annotations

import numpy as np

from pontryx.solver.model.blas import matmul
from pontryx.solver.model.kernels.base import Kernel
from pontryx.solver.model.threads import add_into, rows, scale_rows
from pontryx.solver.model.workspace import HEAP

__all__ = ["DenseKernel"]


class DenseKernel(Kernel):
    """w(t, ·, ·) by its nodal values: K = W M_L (cost N²S per step)."""

    name = "dense"
    full_axis = ("W",)
    has_rows = True
    threadsafe = True

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
        Z, X = self.apply_and_record(ctx, U, ws)
        ws.give(X)
        return Z

    def apply_and_record(self, ctx, U, ws=HEAP):
        """(K U, M_L U): the owned rows of M_L U, which the product scales anyway,
        for the vjp's D (M_L U)ᵀ (a workspace array)."""
        sp = self.space
        X = scale_rows(sp.m, U, out=ws.take(U.shape))
        G = sp.allgather(X, ws)
        Z = matmul(ctx["W"], G, out=ws.take((sp.n, U.shape[1])))
        if G is not X:
            ws.give(G)
        return Z, X

    def apply_T(self, ctx, D, ws=HEAP, add=None):
        """Kᵀ D = M_L Wᵀ D (``add``: + add, in the same pass as the scaling)."""
        sp = self.space
        Yfull = matmul(ctx["W"].T, D, out=ws.take((sp.N, D.shape[1])))
        Y = ws.replaced(Yfull, sp.reduce_scatter(Yfull, ws))
        if add is None:
            return scale_rows(sp.m, Y, out=Y)
        m = sp.m

        def block(r):  # the operations of scale_rows, then add_into
            y = np.multiply(m[r, None], Y[r], out=Y[r])
            np.add(y, add[r], out=y)

        rows(block, *Y.shape)
        return Y

    def vjp(self, ctx, U, D, out, ws=HEAP, assign=False, recorded=False):
        """∂J/∂W += D (M_L U)ᵀ; with ``assign`` the GEMM writes ∂J/∂W itself (no
        zero-filled gradient, no temporary, no addition: 0 + x = x, the same values);
        ``recorded``: ``U`` is M_L U already (:meth:`apply_and_record`)."""
        if recorded:
            G = self.space.allgather(U, ws)
        else:
            G = self._gathered(U, ws)
        W = out["W"]
        if assign:
            matmul(D, G.T, out=W)
        else:
            P = matmul(D, G.T, out=ws.take(W.shape))
            add_into(W, P)
            ws.give(P)
        if G is not U:
            ws.give(G)

    def backward(self, ctx, U, D, out, ws=HEAP, assign=False, recorded=False, add=None):
        if out is not None:
            self.vjp(ctx, U, D, out, ws, assign, recorded)
        return self.apply_T(ctx, D, ws, add)

    def row(self, theta, i):
        sp = self.space
        return sp.row(theta["W"], i)[sp.offset : sp.offset + sp.n]
