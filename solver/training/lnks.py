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
independent) except through the order of the sums over samples. The sweeps read
the linearisation point's records chunk by chunk from contiguous copies (made
once per point: :meth:`LNKS._columns`). One loop
(:meth:`LNKS._pipeline`) runs every sweep here: the tangent and (second-order)
adjoint sweeps at the linearisation point and, for the trust region's trial
points, the nonlinear forward sweep U^{n+1} = gⁿ(Uⁿ, θⁿ) with J(θ)
(:meth:`LNKS.states`) and its adjoint sweep Λⁿ = (∂_U gⁿ)ᵀ Λ^{n+1} from
Λ^{N_t} = ∇_U Φ with ∇J(θ) (:meth:`LNKS.costates`) — the sweeps of
:class:`pontryx.solver.adjoint.sweep.Sweep`, distributed over depth.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from mpi4py import MPI

import numpy as np

from pontryx.solver.model.workspace import HEAP, Workspace
from pontryx.solver.training.kkt import columns
from pontryx.solver.training.steihaug import truncated_cg

__all__ = ["CONTROL_BLOCKS", "LBFGS", "LNKS", "PRECONDITIONERS", "Trajectory", "default_chunks"]

PRECONDITIONERS = ("p4", "p2")
CONTROL_BLOCKS = ("lbfgs", "gauss_newton", "exact")
#: the chunk width the default aims at: narrower chunks pay more per sample
#: (a layer step's fixed cost, column slices of the (n × S) fields and records)
CHUNK_SAMPLES = 128


def default_chunks(depth: int, samples: int) -> int:
    """The sample chunks c of the pipelined sweeps (``chunks: auto``) on ``depth``
    depth ranks with ``samples`` local samples: 1 on one depth rank; otherwise about
    one chunk per :data:`CHUNK_SAMPLES` samples, kept within 2P ≤ c ≤ 4P (so the
    pipeline's bound c/(c + P − 1) is at least 2/3) and to at least one sample each."""
    if depth <= 1:
        return 1
    c = min(max(round(samples / CHUNK_SAMPLES), 2 * depth), 4 * depth)
    return max(1, min(c, samples))


@dataclass
class Trajectory:
    """The forward sweep at a trial point on this depth rank (:meth:`LNKS.states`): θ
    blocks, with embedding and readout (``full``), the states U^{lo} … U^{hi}, the
    local layers' contexts and records (per layer and chunk), Ŷ and ∂Φ/∂Ŷ (last depth
    rank) and the global misfit, statistic and J."""

    theta: dict
    full: dict
    states: list
    ctxs: list
    records: list
    Yhat: np.ndarray | None = None
    G: np.ndarray | None = None
    misfit: float = 0.0
    stat: float = 0.0
    J: float = 0.0


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
        # the arrays of the last Trajectory and of its costates, recycled by the next
        # call (:meth:`states`, :meth:`costates`): no first-touch page faults per trial;
        # its own arrays only (the last trajectory stays lent, and its records are
        # copied by chunk: no node-shared records, solver/model/shared.py)
        self.ws, self._lent, self._lent_costates = Workspace(adopts=False), [], []
        # contiguous copies of the linearisation point's records and Λ per layer and
        # chunk (:meth:`_columns`), for the point ``_point``
        self._point, self._chunked, self._buffers = None, {}, {}

    def _columns(self, name: str, i: int, c: int, cols: slice) -> tuple:
        """Chunk c (the columns ``cols``) of the linearisation point's ``name``
        (``records`` or ``Lam``) of local layer i. With several chunks, contiguous
        copies made once per point (column slices of (n × S) arrays cost up to twice as
        much per element in the sweeps' element-wise work), all in one buffer per name
        that the next point reuses; with one chunk, views."""
        P = self.kkt.point
        if len(self.chunks) == 1:
            return columns(getattr(P, name)[i], cols)
        if P is not self._point:
            self._point, self._chunked = P, {}
        if name not in self._chunked:
            self._chunked[name] = self._chunk_copies(name, getattr(P, name))
        return self._chunked[name][i][c]

    def _chunk_copies(self, name: str, layers: list) -> list:
        """[layer][chunk] → tuple of contiguous copies of the chunk's columns of each
        array of the layer's tuple, carved from one buffer (kept for the next point)."""
        size = sum(a.size for arrays in layers for a in arrays)
        buf = self._buffers.get(name)
        if buf is None or buf.size != size:
            buf = self._buffers[name] = np.empty(size)
        out, at = [], 0
        for arrays in layers:
            row = []
            for cols in self.chunks:
                copies = []
                for a in arrays:
                    v = a[:, cols]
                    dst = buf[at : at + v.size].reshape(v.shape)
                    np.copyto(dst, v)
                    copies.append(dst)
                    at += v.size
                row.append(tuple(copies))
            out.append(row)
        return out

    # -- the sweeps ---------------------------------------------------------------------
    def _pipeline(self, forward: bool, start, layer, end=None) -> None:
        """The one loop of the sweeps below, through this rank's layers (ascending if
        ``forward``, else descending) chunk by chunk: chunk c's value entering the
        block is ``start(c, cols)`` on the depth rank where the sweep begins and
        received from the neighbour elsewhere; ``v = layer(i, c, cols, v)`` for each
        local layer i; the result goes on to the next rank, or to ``end(c, cols, v)``
        where the sweep ends. Chunk c is sent before chunk c + 1 starts (pipelined)."""
        b, n, ns = self.kkt.blocks, self.kkt.space.n, self.kkt.n_states
        head, tail = (b.first, b.last) if forward else (b.last, b.first)
        order = range(b.count) if forward else range(b.count - 1, -1, -1)
        sends = []
        for c, cols in enumerate(self.chunks):
            v = start(c, cols) if head else b.recv((ns, n, _width(cols)), c, forward)
            for i in order:
                v = layer(i, c, cols, v)
            if not tail:
                sends.append(b.isend(v, tag=c, forward=forward))
            elif end is not None:
                end(c, cols, v)
        _wait(sends)

    def _fields(self, count=None, ws=HEAP) -> list:
        """``count`` (default: the local layers) state tuples of (n × S_local) arrays
        (from the workspace ``ws``)."""
        k = self.kkt
        count = k.blocks.count if count is None else count
        return [tuple(ws.take((k.space.n, k.S_local)) for _ in range(k.n_states))
                for _ in range(count)]  # fmt: skip

    def forward(self, dth, drive, keep: bool = True, into=None):
        """q^{n+1} = ∂_U gⁿ qⁿ + ∂_θ gⁿ dθⁿ − drive^{n+1} for the local layers (q^{lo} from
        the previous depth rank, q⁰ = dE X): (q fields, tangent records per layer and
        chunk). ``drive`` None: zero. ``into``: the fields to write q into (default:
        new arrays). Pipelined over the chunks."""
        kkt = self.kkt
        P, b, scheme, kernel = kkt.point, kkt.blocks, kkt.scheme, kkt.kernel
        self.sweeps += 1
        out = self._fields() if into is None else into
        trecs = [[None] * len(self.chunks) for _ in range(b.count)]

        def start(c, cols):
            X = kkt.X[:, cols]
            return scheme.initial_tangent(
                dth["E"] @ X if "E" in dth else np.zeros((kkt.space.n, X.shape[1]))
            )

        def layer(i, c, cols, v):
            dctx = kernel.tangent(P.ctxs[i], self._layer(dth, i))  # (one slot: per use)
            rec = self._columns("records", i, c, cols)
            v, trec = scheme.tangent(P.ctxs[i], dctx, dth["b"][i], rec, v, n=b.lo + i)
            if drive is not None:
                v = tuple(a - r[:, cols] for a, r in zip(v, drive[i]))
            _store(out[i], cols, v)
            if keep:
                trecs[i][c] = trec
            return v

        self._pipeline(True, start, layer)
        return out, trecs

    def backward(
        self, dth, rU, q=None, trecs=None, keep: bool = True, gauss_newton=False, into=None
    ):
        """s^m = [(∂_U gᵐ)ᵀ s^{m+1} + W_UU qᵐ + W_Uθ dθᵐ] − r_Uᵐ for the local U, from
        s^{N_t} = (terminal W)(q, dθ) − r_U^{N_t}; with ``trecs`` None the first-order
        adjoint (no W terms), from s^{N_t} = −r_U^{N_t} or, with ``gauss_newton``, from
        the loss Hessian's part of q^{N_t} (:meth:`.kkt.KKT.terminal_tangent`,
        ``gauss_newton``).
        Returns (s fields or None, z): z = Cᵀ s (+ W_θU q + W_θθ dθ of the layers and
        the loss) as the θ part on data rank 0 (summed over the data ranks; no
        regulariser). ``rU`` None: zero. ``into``: the fields to write s into (with
        ``keep``; default: new arrays). Pipelined."""
        kkt = self.kkt
        P, b, scheme, kernel = kkt.point, kkt.blocks, kkt.scheme, kkt.kernel
        second = trecs is not None
        self.sweeps += 1
        z = kkt._zeros()
        out = (self._fields() if into is None else into) if keep else None

        def start(c, cols):
            if not (second or gauss_newton):
                return tuple(np.zeros((kkt.space.n, _width(cols))) for _ in range(kkt.n_states))
            w, readout = kkt.terminal_tangent(
                columns(q[-1], cols), dth, cols, gauss_newton=not second
            )
            for k, v in readout.items():
                z[k] += v
            return w

        def layer(i, c, cols, w):
            if rU is not None:
                w = tuple(a - r[:, cols] for a, r in zip(w, rU[i]))
            if keep:
                _store(out[i], cols, w)
            rec, zi = self._columns("records", i, c, cols), kkt._layer_grad(z, i)
            if not second:
                return scheme.adjoint(P.ctxs[i], rec, w, zi, n=b.lo + i)
            dthi = self._layer(dth, i)
            dctx = kernel.tangent(P.ctxs[i], dthi)
            _, dL = scheme.adjoint2(
                P.ctxs[i], dctx, dthi, rec, trecs[i][c], self._columns("Lam", i, c, cols), w,
                kkt.layer_zeros(), zi, n=b.lo + i,
            )  # fmt: skip
            return dL

        self._pipeline(False, start, layer, self._embedding_gradient(z))
        return out, kkt._reduce_theta(z)

    def _embedding_gradient(self, z):
        """The end of a backward sweep (first depth rank): ∂/∂E += (∂_U g⁰)ᵀ s¹ Xᵀ."""
        X = self.kkt.X

        def end(c, cols, dL):
            if "E" in z:
                z["E"] += dL[0] @ X[:, cols].T

        return end

    def states(self, th) -> Trajectory:
        """The forward sweep U^{n+1} = gⁿ(Uⁿ, θⁿ) from U⁰ = E X at the θ blocks ``th``
        (a trial point: its own kernel contexts), pipelined, with J(θ): the
        :class:`Trajectory` (U^{lo} … U^{hi} and the records of the local layers for
        the adjoint step; Ŷ and ∂Φ/∂Ŷ on the last depth rank). Its arrays come from
        this object's workspace and are recycled by the next call: a Trajectory (and
        the costates of :meth:`costates`) is valid until then. Collective."""
        kkt, ws = self.kkt, self.ws
        b, scheme = kkt.blocks, kkt.scheme
        ws.give(*_arrays(self._lent + self._lent_costates))  # the last trajectory's
        full = kkt.full(th)
        ctxs = [kkt._ctx(th, i, False) for i in range(b.count)]
        U = self._fields(b.count + 1, ws)
        recs = [[None] * len(self.chunks) for _ in range(b.count)]
        spent = []  # the steps' outputs (copied into U; records may hold them)
        self._lent, self._lent_costates = [U, recs, spent], []

        def start(c, cols):
            return scheme.initial_state(kkt.net.embed(full, kkt.X[:, cols]))

        def layer(i, c, cols, v):
            if i == 0:
                _store(U[0], cols, v)
            v, recs[i][c] = scheme.step(ctxs[i], th["b"][i], v, n=b.lo + i, ws=ws,
                                        record="adjoint")  # fmt: skip
            _store(U[i + 1], cols, v)
            spent.append(v)
            return v

        self._pipeline(True, start, layer)
        t = Trajectory(th, full, U, ctxs, recs)
        sums = np.zeros(3)  # misfit, statistic, regulariser
        if b.last:
            t.Yhat = kkt.net.readout(full, U[-1][0])
            misfit, t.G, stat = kkt.rf.misfit(t.Yhat)
            if kkt.width.rank == 0:
                sums[:2] = misfit, stat
        if kkt.owns_theta:  # the same on every rank of the depth communicator
            sums[2] = kkt.regulariser(th)
        kkt.world.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        t.misfit, t.stat, t.J = float(sums[0]), float(sums[1]), float(sums[0] + sums[2])
        return t

    def costates(self, t: Trajectory):
        """The adjoint sweep of a :class:`Trajectory`: Λ^{N_t} = ∇_U Φ, Λⁿ = (∂_U gⁿ)ᵀ
        Λ^{n+1}, pipelined. Returns (Λ^{lo+1} … Λ^{hi}, the θ part of ∇J(θ) on data
        rank 0, the regulariser's gradient included); Λ is valid until the next call of
        :meth:`costates` or :meth:`states`. Collective."""
        kkt, ws = self.kkt, self.ws
        b, scheme = kkt.blocks, kkt.scheme
        z = kkt._zeros()
        ws.give(*_arrays(self._lent_costates))
        Lam, spent = self._fields(ws=ws), []
        self._lent_costates = [Lam, spent]

        def start(c, cols):
            return kkt.terminal(t.full, columns(t.states[-1], cols), t.G[:, cols], z)

        def layer(i, c, cols, w):
            _store(Lam[i], cols, w)
            grad = kkt._layer_grad(z, i)
            w = scheme.adjoint(t.ctxs[i], t.records[i][c], w, grad, n=b.lo + i, ws=ws)
            spent.append(w)
            return w

        self._pipeline(False, start, layer, self._embedding_gradient(z))
        if kkt.owns_theta:
            kkt.regulariser(t.theta, z)
        return Lam, kkt._reduce_theta(z)

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
        """P⁻¹ r for a local vector r (a new vector or ``out``, not ``r``): the sweeps
        write p_U and p_Λ into it."""
        kkt = self.kkt
        out = np.empty(kkt.size) if out is None else out
        r_theta = r[kkt.theta_slice]
        rU, rL = kkt.fields(r, 0), kkt.fields(r, 1)
        pU, pL = kkt.fields(out, 0), kkt.fields(out, 1)
        if self.kind == "p2":
            _, z = self.backward(self.zero_theta(), rU, into=pL)
            p_theta = self.solve_reduced(r_theta - z)
            self.forward(self._theta(p_theta), rL, keep=False, into=pU)
        else:
            zero = self.zero_theta()
            q, trecs = self.forward(zero, rL)
            _, z = self.backward(zero, rU, q, trecs, keep=False)
            p_theta = self.solve_reduced(r_theta - z)
            dth = self._theta(p_theta)
            _, trecs = self.forward(dth, rL, into=pU)
            self.backward(dth, rU, pU, trecs, into=pL)
        if kkt.owns_theta:
            out[kkt.theta_slice] = p_theta
        return out


def _width(cols: slice) -> int:
    return cols.stop - cols.start


def _arrays(obj):
    """The arrays in nested lists and tuples (records, fields)."""
    if isinstance(obj, tuple | list):
        for item in obj:
            yield from _arrays(item)
    elif isinstance(obj, np.ndarray):
        yield obj


def _store(fields, cols, values) -> None:
    """fields[c][:, cols] = values[c] for each component c."""
    for o, a in zip(fields, values):
        o[:, cols] = a


def _wait(sends) -> None:
    for req, _ in sends:
        req.Wait()
