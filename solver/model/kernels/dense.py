"""The dense kernel: w(t, ·, ·) by its nodal values, K = W M_L (cost N²S per step).

W ∈ R^{N×N} is distributed by rows; its column axis runs over all N dofs (in
DOLFINx's global numbering), so K U needs all rows of M_L U on every width rank
(an allgather) and Kᵀ D a reduce-scatter of the partial products. Where the
width ranks share a node both go through node-shared arrays instead
(:mod:`~pontryx.solver.model.shared`): each rank writes its rows of M_L U into
one array all of them read, and the gradient's record keeps that array, so the
vjp needs no second gather. The GEMMs run
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

    def _shared(self, U):
        """All N rows of M_L U in a node-shared array (this rank writes its own,
        then the fence), or None where the space has none."""
        sp = self.space
        G = sp.shared_rows(U.shape[1])
        if G is not None:
            scale_rows(sp.m, U, out=G[sp.offset : sp.offset + sp.n])
            sp.shared.fence()
        return G

    def _gathered(self, U, ws):
        """All N rows of M_L U: a node-shared array or a workspace array
        (:meth:`_give` gives either back)."""
        G = self._shared(U)
        if G is not None:
            return G
        sp = self.space
        X = scale_rows(sp.m, U, out=ws.take(U.shape))
        return ws.replaced(X, sp.allgather(X, ws))

    def _give(self, G, ws):
        pool = self.space.shared
        if pool is not None and pool.owns(G):
            pool.give(G)
        else:
            ws.give(G)

    def apply(self, ctx, U, ws=HEAP):
        sp = self.space
        G = self._gathered(U, ws)
        Z = matmul(ctx["W"], G, out=ws.take((sp.n, U.shape[1])))
        self._give(G, ws)
        return Z

    def apply_and_record(self, ctx, U, ws=HEAP):
        """(K U, V) with V = M_L U for the vjp's D (M_L U)ᵀ: all N rows where they
        are node-shared (lent through ``ws``, which gives them back), else the owned
        rows, which the product scales anyway (a workspace array)."""
        sp = self.space
        G = self._shared(U) if ws.adopts else None
        if G is not None:
            ws.adopt(G, sp.shared)
            return matmul(ctx["W"], G, out=ws.take((sp.n, U.shape[1]))), G
        X = scale_rows(sp.m, U, out=ws.take(U.shape))
        G = sp.allgather(X, ws)
        Z = matmul(ctx["W"], G, out=ws.take((sp.n, U.shape[1])))
        if G is not X:
            ws.give(G)
        return Z, X

    def apply_T(self, ctx, D, ws=HEAP, add=None):
        """Kᵀ D = M_L Wᵀ D (``add``: + add, in the same pass as the scaling)."""
        sp = self.space
        pool = sp.shared
        partials = sp.shared_partials(D.shape[1])
        if partials is None:
            Yfull = matmul(ctx["W"].T, D, out=ws.take((sp.N, D.shape[1])))
            Y = ws.replaced(Yfull, sp.reduce_scatter(Yfull, ws))
        else:  # each rank's Wᵀ D in its node-shared array; each sums its own rows
            mine = partials[sp.comm.rank]
            matmul(ctx["W"].T, D, out=mine)
            pool.fence()
            Y = ws.take((sp.n, D.shape[1]))
        m, offset = sp.m, sp.offset

        def block(r):  # Y = M_L Σ_ranks (Wᵀ D)_rank (+ add), rows r
            if partials is not None:
                rr = slice(offset + r.start, offset + r.stop)
                y = np.add(partials[0][rr], partials[1][rr], out=Y[r])
                for P in partials[2:]:
                    y += P[rr]
            y = np.multiply(m[r, None], Y[r], out=Y[r])
            if add is not None:
                np.add(y, add[r], out=y)

        rows(block, *Y.shape)
        if partials is not None:
            pool.give(mine)
        return Y

    def vjp(self, ctx, U, D, out, ws=HEAP, assign=False, recorded=False):
        """∂J/∂W += D (M_L U)ᵀ; with ``assign`` the GEMM writes ∂J/∂W itself (no
        zero-filled gradient, no temporary, no addition: 0 + x = x, the same values);
        ``recorded``: ``U`` is the V of :meth:`apply_and_record` (M_L U)."""
        sp = self.space
        if not recorded:
            G = self._gathered(U, ws)
        elif sp.shared is not None and sp.shared.owns(U):
            G = U  # all N rows already (the record gives them back)
        else:
            G = sp.allgather(U, ws)
        W = out["W"]
        if assign:
            matmul(D, G.T, out=W)
        else:
            P = matmul(D, G.T, out=ws.take(W.shape))
            add_into(W, P)
            ws.give(P)
        if G is not U:
            self._give(G, ws)

    def backward(self, ctx, U, D, out, ws=HEAP, assign=False, recorded=False, add=None):
        if out is not None:
            self.vjp(ctx, U, D, out, ws, assign, recorded)
        return self.apply_T(ctx, D, ws, add)

    def row(self, theta, i):
        sp = self.space
        return sp.row(theta["W"], i)[sp.offset : sp.offset + sp.n]
