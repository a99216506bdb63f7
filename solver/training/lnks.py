"""The reduced-space (Lagrange–Newton–Krylov–Schur) preconditioner of the KKT system.

Biros & Ghattas, "Parallel Lagrange–Newton–Krylov–Schur methods for
PDE-constrained optimization", SIAM J. Sci. Comput. 27(2), 2005: with the KKT
matrix of :mod:`.kkt` in the variables (θ, U, Λ),

    K = [[W_θθ, W_θU, Cᵀ], [W_Uθ, W_UU, Aᵀ], [C, A, 0]],

block elimination gives the reduced Hessian W_z = Zᵀ W Z (Z = [I; −A⁻¹C]), the
Hessian of J(θ) when the states and costates are consistent. The
preconditioner replaces W_z by an approximation B_z and is applied exactly
otherwise (:meth:`LNKS.apply`, for the right-hand side r = (r_θ, r_U, r_Λ)):

``p4`` (their P₄):
    q   = A⁻¹ r_Λ                                  forward tangent sweep
    s   = A⁻ᵀ (r_U − W_UU q)                       backward second-order sweep
    p_θ = B_z⁻¹ (r_θ − W_θU q − Cᵀ s)
    p_U = A⁻¹ (r_Λ − C p_θ)                        forward tangent sweep
    p_Λ = A⁻ᵀ (r_U − W_UU p_U − W_Uθ p_θ)          backward second-order sweep

so that K P₄⁻¹ has the eigenvalue 1 (with multiplicity 2·dim U) and the
eigenvalues of W_z B_z⁻¹: the Krylov iterations are those of the reduced
Hessian preconditioned by B_z. ``p2`` (their P₂, the default: a quarter of the
cost, the W terms dropped): p_Λ = A⁻ᵀ r_U (adjoint sweep), p_θ = B_z⁻¹(r_θ − Cᵀ p_Λ),
p_U = A⁻¹(r_Λ − C p_θ). A⁻¹ is the scheme's ``tangent`` layer after layer,
A⁻ᵀ its ``adjoint`` (or ``adjoint2``, which adds the W terms), so a sweep costs
one tangent-linear or one adjoint sweep through depth. The weak-constraint
term −D of the state rows (precision annealing) is left out of the
preconditioner.

Control block (``control``): B_z⁻¹ g is either the L-BFGS inverse below
(``lbfgs``) or a truncated PCG solve (:mod:`.steihaug`, forcing ``inner_rtol``,
at most ``inner_max_it`` iterations, preconditioned by the L-BFGS inverse) of
W g' = g with W the exact reduced Hessian (``exact``; stopped at negative
curvature) or its Gauss–Newton part W_GN = Jᵀ (∂²Φ/∂Ŷ²) J + R'' (``gauss_newton``;
J = dŶ/dθ, no σ'' and no costate terms: positive semidefinite) — Biros &
Ghattas' control block that sees the data term's curvature; each inner
iteration is one forward tangent and one backward sweep.

B_z is the L-BFGS approximation (:class:`LBFGS`) in the L²(M_L) metric of the
regulariser: H₀ = γ Ω⁻¹ (Ω the lumped-mass weights ω of the controls, γ the
Barzilai–Borwein scaling of the newest pair), updated with pairs (s, W_z s) of
the exact reduced Hessian along the accepted Newton steps (and with gradient
differences during the L-BFGS warm start).

Depth axis: the sweeps are sequential in depth, so they are pipelined over
blocks of samples (the columns of U are independent): depth rank k runs its
layers on chunk c while rank k + 1 runs chunk c − 1. With c chunks on P depth
ranks a sweep takes (c + P − 1) chunk-steps instead of c·P: efficiency
c / (c + P − 1). The result does not depend on the chunks (columns are
independent) except through the order of the sums over samples.
"""

from __future__ import annotations

import itertools

import numpy as np

from pontryx.solver.training.kkt import columns
from pontryx.solver.training.steihaug import truncated_cg

__all__ = ["CONTROL_BLOCKS", "LBFGS", "LNKS", "PRECONDITIONERS"]

PRECONDITIONERS = ("p4", "p2")
CONTROL_BLOCKS = ("lbfgs", "gauss_newton", "exact")


class LBFGS:
    """The inverse of an L-BFGS approximation B ≈ W_z on θ parts of KKT vectors
    (two-loop recursion, Nocedal & Wright Alg. 7.4) with the initial inverse
    H₀ = γ Ω⁻¹ (``scaled``), or (``regulariser``) the inverse of the regulariser's
    Hessian diagonal R₀ on the controls it weighs (α Δt ω plus β/Δt ω per
    neighbouring layer) and γ Ω⁻¹ on the others (readout, embedding)."""

    def __init__(self, memory: int, omega: np.ndarray, dot, gamma: float = 1.0, reg=None):
        self.memory, self.omega, self.dot = int(memory), omega, dot
        self.gamma = float(gamma)
        self.reg = reg  # R₀ (zero where the regulariser does not act)
        self.pairs: list[tuple[np.ndarray, np.ndarray, float]] = []

    def update(self, s: np.ndarray, y: np.ndarray) -> bool:
        """Add the pair (s, y) if sᵀy > 10⁻¹² ‖s‖_Ω ‖y‖_{Ω⁻¹} (curvature condition);
        returns whether it was added."""
        sy = self.dot(s, y)
        ss, yy = self.dot(s, self.omega * s), self.dot(y, y / self.omega)
        if not sy > 1e-12 * np.sqrt(ss * yy):
            return False
        self.pairs.append((s.copy(), y.copy(), 1.0 / sy))
        del self.pairs[: max(len(self.pairs) - self.memory, 0)]
        self.gamma = sy / yy
        return True

    def initial(self, q: np.ndarray, kind: str = "scaled") -> np.ndarray:
        """H₀ q."""
        r = self.gamma * q / self.omega
        if kind == "regulariser" and self.reg is not None:
            on = self.reg > 0
            r[on] = q[on] / self.reg[on]
        return r

    def apply(self, g: np.ndarray, initial: str = "scaled") -> np.ndarray:
        """H g ≈ B⁻¹ g (``initial``: the H₀ of the class docstring)."""
        q = g.copy()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * self.dot(s, q)
            q -= a * y
            alphas.append(a)
        r = self.initial(q, initial)
        for (s, y, rho), a in zip(self.pairs, reversed(alphas)):
            r += (a - rho * self.dot(y, r)) * s
        return r

    def state(self, prefix: str) -> dict:
        out = {f"{prefix}gamma": np.array(self.gamma)}
        for i, (s, y, _) in enumerate(self.pairs):
            out[f"{prefix}s{i}"], out[f"{prefix}y{i}"] = s.copy(), y.copy()
        return out

    def restore(self, state: dict, prefix: str) -> None:
        self.gamma = float(state[f"{prefix}gamma"])
        self.pairs = []
        i = 0
        while f"{prefix}s{i}" in state:
            s, y = state[f"{prefix}s{i}"], state[f"{prefix}y{i}"]
            self.pairs.append((s.copy(), y.copy(), 1.0 / self.dot(s, y)))
            i += 1


class LNKS:
    """The preconditioner P₄ or P₂ (module docstring) at the linearisation point of
    ``kkt``, with B_z⁻¹ = ``lbfgs``; the sweeps in ``chunks`` sample blocks."""

    def __init__(
        self,
        kkt,
        lbfgs: LBFGS,
        kind: str = "p4",
        chunks: int = 1,
        initial: str = "scaled",
        control: str = "lbfgs",
        inner_rtol: float = 0.1,
        inner_max_it: int = 10,
    ):
        self.kkt, self.lbfgs, self.kind, self.initial = kkt, lbfgs, kind, initial
        self.control, self.inner_rtol, self.inner_max_it = control, inner_rtol, inner_max_it
        self.sweeps = self.inner_its = 0  # counters (sweeps through depth, inner CG its)
        S = kkt.S_local
        k = max(1, min(int(chunks), S))
        edges = np.linspace(0, S, k + 1).round().astype(int)
        self.chunks = [slice(a, b) for a, b in itertools.pairwise(edges) if b > a]

    # -- the sweeps ---------------------------------------------------------------------
    def forward(self, dth, drive, keep: bool = True):
        """q^{n+1} = ∂_U gⁿ qⁿ + ∂_θ gⁿ dθⁿ − drive^{n+1} for the local layers (q^{lo} from
        the previous depth rank, q⁰ = dE X): (q fields, tangent records per layer and
        chunk). ``drive`` None: zero. Pipelined over the chunks."""
        kkt = self.kkt
        P, b, scheme, kernel = kkt.point, kkt.blocks, kkt.scheme, kkt.kernel
        n, ns = kkt.space.n, kkt.n_states
        self.sweeps += 1
        out = [tuple(np.empty((n, kkt.S_local)) for _ in range(ns)) for _ in range(b.count)]
        trecs = [[None] * len(self.chunks) for _ in range(b.count)]
        sends = []
        for c, cols in enumerate(self.chunks):
            if b.first:
                dU0 = dth["E"] @ kkt.X[:, cols] if "E" in dth else np.zeros((n, _width(cols)))
                v = scheme.initial_tangent(dU0)
            else:
                v = b.recv((ns, n, _width(cols)), tag=c, forward=True)
            for i in range(b.count):
                rec = columns(P.records[i], cols)
                dctx = kernel.tangent(P.ctxs[i], self._layer(dth, i))  # (one slot: per use)
                v, trec = scheme.tangent(P.ctxs[i], dctx, dth["b"][i], rec, v, n=b.lo + i)
                if drive is not None:
                    v = tuple(a - r[:, cols] for a, r in zip(v, drive[i]))
                for o, a in zip(out[i], v):
                    o[:, cols] = a
                if keep:
                    trecs[i][c] = trec
            if not b.last:
                sends.append(b.isend(v, tag=c, forward=True))
        _wait(sends)
        return out, trecs

    def backward(self, dth, rU, q=None, trecs=None, keep: bool = True, gauss_newton=False):
        """s^m = [(∂_U gᵐ)ᵀ s^{m+1} + W_UU qᵐ + W_Uθ dθᵐ] − r_Uᵐ for the local U, from
        s^{N_t} = (terminal W)(q, dθ) − r_U^{N_t}; with ``trecs`` None the first-order
        adjoint (no W terms), from s^{N_t} = −r_U^{N_t} or, with ``gauss_newton``, from
        the loss Hessian's part of q^{N_t} (:meth:`.kkt.KKT.terminal_tangent`,
        ``gauss_newton``).
        Returns (s fields or None, z): z = Cᵀ s (+ W_θU q + W_θθ dθ of the layers and
        the loss) as the θ part on data rank 0 (summed over the data ranks; no
        regulariser). ``rU`` None: zero. Pipelined."""
        kkt = self.kkt
        P, b, scheme, kernel = kkt.point, kkt.blocks, kkt.scheme, kkt.kernel
        n, ns, second = kkt.space.n, kkt.n_states, trecs is not None
        self.sweeps += 1
        z = kkt._zeros()
        out = [tuple(np.empty((n, kkt.S_local)) for _ in range(ns)) for _ in range(b.count)]
        sends = []
        for c, cols in enumerate(self.chunks):
            if b.last:
                if second or gauss_newton:
                    w, readout = kkt.terminal_tangent(
                        columns(q[-1], cols), dth, cols, gauss_newton=not second
                    )
                    for k, v in readout.items():
                        z[k] += v
                else:
                    w = tuple(np.zeros((n, _width(cols))) for _ in range(ns))
            else:
                w = b.recv((ns, n, _width(cols)), tag=c, forward=False)
            if rU is not None:
                w = tuple(a - r[:, cols] for a, r in zip(w, rU[-1]))
            for i in reversed(range(b.count)):
                if keep:
                    for o, a in zip(out[i], w):
                        o[:, cols] = a
                rec, lam = columns(P.records[i], cols), columns(P.Lam[i], cols)
                zi = kkt._layer_grad(z, i)
                if second:
                    dthi = self._layer(dth, i)
                    dctx = kernel.tangent(P.ctxs[i], dthi)
                    _, dL = scheme.adjoint2(
                        P.ctxs[i], dctx, dthi, rec, trecs[i][c], lam, w,
                        kkt.layer_zeros(), zi, n=b.lo + i,
                    )  # fmt: skip
                else:
                    dL = scheme.adjoint(P.ctxs[i], rec, w, zi, n=b.lo + i)
                if i > 0:
                    w = dL if rU is None else tuple(a - r[:, cols] for a, r in zip(dL, rU[i - 1]))
                elif b.first:
                    if "E" in z:
                        z["E"] += dL[0] @ kkt.X[:, cols].T
                else:
                    sends.append(b.isend(dL, tag=c, forward=False))
        _wait(sends)
        return (out if keep else None), kkt._reduce_theta(z)

    def _layer(self, dth, i):
        return {k: dth[k][i] for k in self.kkt.kernel_names}

    def _theta(self, flat_theta):
        """θ blocks of a θ part (data rank 0), broadcast over the data ranks."""
        return self.kkt.theta(flat_theta)

    def zero_theta(self):
        return self._theta(np.zeros(self.kkt.n_theta))

    # -- the operators ------------------------------------------------------------------------
    def reduced_hessian(self, v: np.ndarray, gauss_newton: bool = False) -> np.ndarray:
        """W_z v = Zᵀ W Z v (the θ part): a forward tangent and a backward
        second-order sweep, plus the regulariser's Hessian. With ``gauss_newton`` its
        Gauss–Newton part W_GN v = Jᵀ (∂²Φ/∂Ŷ²) J v + R'' v (J = dŶ/dθ: the forward
        tangent sweep; Jᵀ: a first-order adjoint sweep; no σ'' terms, no costate
        curvature, no G terms of the readout): symmetric positive semidefinite."""
        kkt = self.kkt
        dth = self._theta(v)
        q, trecs = self.forward(dth, None, keep=not gauss_newton)
        if gauss_newton:
            _, z = self.backward(dth, None, q, None, keep=False, gauss_newton=True)
        else:
            _, z = self.backward(dth, None, q, trecs, keep=False)
        if kkt.owns_theta:
            reg = kkt._zeros()
            kkt.regulariser(dth, reg)
            z += kkt.pack_theta(reg)
        return z

    def solve_reduced(self, g: np.ndarray) -> np.ndarray:
        """B_z⁻¹ g on the θ part (data rank 0): the L-BFGS inverse (``control`` lbfgs),
        or truncated PCG (:func:`.steihaug.truncated_cg`, ≤ ``inner_max_it``
        iterations to the relative tolerance ``inner_rtol``, preconditioned by the
        L-BFGS inverse) on the Gauss–Newton (``gauss_newton``) or exact (``exact``)
        reduced Hessian. Collective."""
        if self.control == "lbfgs":
            return self.lbfgs.apply(g, self.initial)
        gn = self.control == "gauss_newton"
        x, its, _ = truncated_cg(
            lambda v: self.reduced_hessian(v, gauss_newton=gn),
            lambda r: self.lbfgs.apply(r, self.initial),
            g, self.kkt.dot, self.inner_rtol, self.inner_max_it,
        )  # fmt: skip
        self.inner_its += its
        return x

    def apply(self, r: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """P⁻¹ r for a local vector r (a new vector or ``out``)."""
        kkt = self.kkt
        r_theta = r[kkt.theta_slice]
        rU, rL = kkt.fields(r, 0), kkt.fields(r, 1)
        if self.kind == "p2":
            pL, z = self.backward(self.zero_theta(), rU)
            p_theta = self.solve_reduced(r_theta - z)
            pU, _ = self.forward(self._theta(p_theta), rL, keep=False)
        else:
            zero = self.zero_theta()
            q, trecs = self.forward(zero, rL)
            _, z = self.backward(zero, rU, q, trecs, keep=False)
            p_theta = self.solve_reduced(r_theta - z)
            dth = self._theta(p_theta)
            pU, trecs = self.forward(dth, rL)
            pL, _ = self.backward(dth, rU, pU, trecs)
        return kkt.pack(p_theta, pU, pL, out)


def _width(cols: slice) -> int:
    return cols.stop - cols.start


def _wait(sends) -> None:
    for req, _ in sends:
        req.Wait()
