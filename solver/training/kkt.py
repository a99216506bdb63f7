"""The KKT system of the discrete Euler–Lagrange problem, in layer blocks over depth.

For the discrete model of DESIGN.md §2 (layers U^{n+1} = gⁿ(Uⁿ, θⁿ), the depth
scheme's step; U⁰ = E X) the Lagrangian of J is

    L(θ, U, Λ) = Φ(U^{N_t}; C, d) + R(θ) + Σ_n ⟨Λ^{n+1}, gⁿ(Uⁿ, θⁿ) − U^{n+1}⟩
                 − (S / 2R_f) Σ_n ‖Λ^{n+1}‖²_{M_L⁻¹}

(Φ = (1/S) Σ ℓ the misfit of the readout, R the regulariser; the last term is
the weak-constraint relaxation of precision R_f, absent for R_f = ∞). The
unknowns are x = (θ, U¹ … U^{N_t}, Λ¹ … Λ^{N_t}) and the residual is F = ∇L:

    F_θ       = Σ_n (∂_θ gⁿ)ᵀ Λ^{n+1} + ∇R + ∂Φ/∂(C, d) + ((∂_U g⁰)ᵀ Λ¹) Xᵀ (E)   stationarity
    F_Uᵐ      = (∂_U gᵐ)ᵀ Λ^{m+1} − Λᵐ  (m < N_t),   ∇_U Φ − Λ^{N_t}                costate
    F_Λ^{n+1} = gⁿ(Uⁿ, θⁿ) − U^{n+1} − (S/R_f) M_L⁻¹ Λ^{n+1}                          state

F = 0 is the Euler–Lagrange two-point boundary value problem: the state
equations forward from U⁰, the costate equations backward from Λ^{N_t} = ∇Φ
(Λ is the discrete adjoint of :mod:`pontryx.solver.adjoint`), stationarity
∂_θ H = 0 (Pontryagin). Every term is one layer's ``step`` and ``adjoint``
(:mod:`pontryx.solver.model.schemes`), so the residual is evaluated layer by
layer with the layers independent.

The Jacobian is the Hessian of L (symmetric, indefinite):

    ∇²L = [[W_θθ, W_θU, Cᵀ], [W_Uθ, W_UU, Aᵀ], [C, A, −D]],

with A, C the derivatives of the state equations by U and θ (A = −I on the block
diagonal and ∂_U gⁿ below it), W the second derivatives of L in (θ, U) and
D = (S/R_f) M_L⁻¹. Its action :meth:`KKT.apply` is, per layer n, the scheme's
``tangent`` (∂_U gⁿ dUⁿ + ∂_θ gⁿ dθⁿ, the state rows) and ``adjoint2`` (the
derivative of (∂_U gⁿ)ᵀ Λ^{n+1} and of (∂_θ gⁿ)ᵀ Λ^{n+1} along (dUⁿ, dθⁿ,
dΛ^{n+1}): the costate and stationarity rows, σ'' included), the loss Hessian
at the terminal layer and the regulariser's Hessian: exact, no finite
differences (each block Taylor-tested in tests/test_oneshot.py).

Depth axis: the ranks of the depth communicator (:class:`pontryx.solver.layout.Layout`)
hold contiguous blocks of layers (:class:`DepthBlocks`): rank k owns layers
n ∈ [lo, hi) with θⁿ, U^{n+1}, Λ^{n+1}, the embedding E on the first and the
readout C, d on the last rank. A residual or a Jacobian action exchanges only
neighbouring layers: U^{lo} (forward) and (∂_U g^{lo})ᵀ Λ^{lo+1} (backward),
plus θ at the block ends when β > 0. On the data axis every data group holds
its samples' U, Λ; θ lives on data rank 0 and is broadcast, its gradients are
summed (one Allreduce).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from mpi4py import MPI

import numpy as np

from pontryx.meshes.errors import InputError

__all__ = ["KKT", "DepthBlocks", "Point"]

_FORWARD, _BACKWARD = 101, 202  # message tags of the exchanges


def _dot(a, b) -> float:
    """Σ ⟨a_c, b_c⟩ over the components of two tuples of arrays (local)."""
    return sum(float(np.vdot(x, y)) for x, y in zip(a, b))


def columns(arrays, cols):
    """The sample columns ``cols`` of a tuple of (n × S) arrays (views)."""
    return tuple(a[:, cols] for a in arrays)


class DepthBlocks:
    """The layers 0 … N_t − 1 in contiguous blocks over the depth communicator:
    this rank owns [lo, hi) (the first N_t mod P ranks one layer more)."""

    def __init__(self, comm: MPI.Comm, layers: int):
        P, k = comm.size, comm.rank
        if layers < P:
            ranks = "1 depth rank" if layers == 1 else f"{layers} depth ranks"
            raise InputError(f"expected at most {ranks} (one layer each), got {P}", "depth")
        base, extra = divmod(layers, P)
        counts = [base + (1 if i < extra else 0) for i in range(P)]
        self.comm, self.layers, self.counts = comm, layers, counts
        self.lo = sum(counts[:k])
        self.hi = self.lo + counts[k]
        self.first, self.last = k == 0, k == P - 1
        self.prev = MPI.PROC_NULL if self.first else k - 1
        self.next = MPI.PROC_NULL if self.last else k + 1

    @property
    def count(self) -> int:
        return self.hi - self.lo

    def shift(self, arrays, forward: bool = True):
        """Send a tuple of equally shaped arrays to the next (``forward``) or previous
        depth rank and return the tuple received from the other side (None at the
        end of the chain). Every rank of the depth communicator calls it."""
        if self.comm.size == 1:
            return None
        dest, source = (self.next, self.prev) if forward else (self.prev, self.next)
        send = np.ascontiguousarray(np.stack(arrays))
        recv = np.empty_like(send)
        tag = _FORWARD if forward else _BACKWARD
        self.comm.Sendrecv(send, dest=dest, sendtag=tag, recvbuf=recv, source=source, recvtag=tag)
        return None if source == MPI.PROC_NULL else tuple(recv)

    def isend(self, arrays, tag: int, forward: bool):
        """Start sending a tuple of arrays along the chain; (request, buffer)."""
        buf = np.ascontiguousarray(np.stack(arrays))
        dest = self.next if forward else self.prev
        return self.comm.Isend(buf, dest=dest, tag=tag), buf

    def recv(self, shape, tag: int, forward: bool):
        """Receive a tuple of arrays of ``shape`` (components first) sent by :meth:`isend`."""
        buf = np.empty(shape)
        self.comm.Recv(buf, source=self.prev if forward else self.next, tag=tag)
        return tuple(buf)


@dataclass
class Point:
    """The linearisation point of the Jacobian: θ blocks, the states Uⁿ entering
    each local layer and U^{hi}, Λ^{n+1}, the layer contexts and records, and
    the terminal Ŷ, ∂Φ/∂Ŷ (last depth rank)."""

    theta: dict
    full: dict  # θ blocks plus E, C, d (trainable or not)
    states: list  # U^{lo} … U^{hi}
    Lam: list  # Λ^{lo+1} … Λ^{hi}
    ctxs: list
    records: list
    Yhat: np.ndarray | None = None
    G: np.ndarray | None = None


class KKT:
    """The residual F = ∇L and the Jacobian action of the Lagrangian above, on this
    rank's blocks (see the module docstring).

    ``rf`` is the reduced functional (network, samples, loss, regulariser, layout),
    ``controls`` the full controls (the values of names that are not trained
    are read from it). A local vector holds [θ (data rank 0 only) | U^{lo+1} …
    U^{hi} | Λ^{lo+1} … Λ^{hi}]; θ has the layer controls of layers lo … hi − 1
    (name by name, as :meth:`Controls.to_flat`), then E (first depth rank), C and
    d (last depth rank) if trained; the replicated d is held by width rank 0.
    """

    def __init__(self, rf, controls, R_f: float = float("inf")):
        net = rf.net
        self.rf, self.net, self.controls = rf, net, controls
        self.scheme, self.kernel, self.space = net.scheme, net.kernel, net.space
        layout = rf.layout
        depth = layout.depth if layout is not None else MPI.COMM_SELF
        self.world = layout.world if layout is not None else net.space.comm
        self.width, self.data = net.space.comm, rf.data_comm
        self.blocks = b = DepthBlocks(depth, net.layers)
        self._check_partition()
        self.kernel_names = tuple(self.kernel.shapes())
        self.layer_names = tuple(net.layer_names)
        trainable = set(net.trainable)
        owned = ["E"] if "E" in trainable and b.first else []
        owned += [k for k in ("C", "d") if k in trainable and b.last]
        self.globals = tuple(owned)
        self.owns_theta = self.data.rank == 0
        self.theta_spec = [(k, (b.count, *controls[k].shape[1:])) for k in self.layer_names]
        self.theta_spec += [(k, controls[k].shape) for k in self.globals]
        self.n_theta = sum(int(np.prod(s)) for k, s in self.theta_spec if self._counted(k))
        self.n_states = net.scheme.n_states
        self.S_local = rf.X.shape[1]
        self.field_shape = (b.count, self.n_states, net.space.n, self.S_local)
        self.n_field = int(np.prod(self.field_shape))
        self.size = (self.n_theta if self.owns_theta else 0) + 2 * self.n_field
        self.R_f = float(R_f)
        self.m = net.space.m[:, None]
        self.X, self.S = rf.X, float(rf.S)
        self.point: Point | None = None
        self._omega = None

    # -- layout -------------------------------------------------------------------------
    def _check_partition(self):
        """Neighbouring depth ranks exchange rows of V_h: their meshes must be
        partitioned alike (DOLFINx partitions the same mesh on the same number of
        ranks identically; checked here)."""
        comm = self.blocks.comm
        if comm.size == 1:
            return
        key = zlib.crc32(np.ascontiguousarray(self.space.owned_canonical).tobytes())
        if comm.allreduce(key, op=MPI.MIN) != comm.allreduce(key, op=MPI.MAX):
            raise RuntimeError("the depth ranks' meshes are partitioned differently")

    def _counted(self, name) -> bool:
        """Whether this width rank holds ``name`` in the vector (d on width rank 0 only)."""
        return name != "d" or self.width.rank == 0

    @property
    def theta_slice(self) -> slice:
        return slice(0, self.n_theta if self.owns_theta else 0)

    def _offset(self, which: int) -> int:
        return (self.n_theta if self.owns_theta else 0) + which * self.n_field

    def fields(self, flat, which: int) -> list:
        """U (``which`` = 0) or Λ (1) of the local layers: a list of tuples of (n × S)
        views into ``flat``."""
        i = self._offset(which)
        arr = flat[i : i + self.n_field].reshape(self.field_shape)
        return [tuple(arr[j, c] for c in range(self.n_states)) for j in range(self.blocks.count)]

    def theta(self, flat) -> dict:
        """θ blocks (name → array) from the θ part of a local vector, broadcast over
        the data ranks (and d over the width ranks). Views into ``flat`` on data
        rank 0 when nothing is broadcast; read only."""
        buf = flat[: self.n_theta] if self.owns_theta else np.empty(self.n_theta)
        if self.data.size > 1:
            buf = np.array(buf)
            self.data.Bcast(buf, root=0)
        out, i = {}, 0
        for k, shape in self.theta_spec:
            if self._counted(k):
                size = int(np.prod(shape))
                out[k] = buf[i : i + size].reshape(shape)
                i += size
            else:
                out[k] = np.empty(shape)
        if "d" in out and self.width.size > 1:
            d = np.array(out["d"])
            self.width.Bcast(d, root=0)
            out["d"] = d
        return out

    def pack_theta(self, theta: dict, out=None) -> np.ndarray:
        """The θ part (n_theta values) of a vector from θ blocks (name → array)."""
        out = np.empty(self.n_theta) if out is None else out
        i = 0
        for k, shape in self.theta_spec:
            if self._counted(k):
                size = int(np.prod(shape))
                out[i : i + size] = np.asarray(theta[k]).ravel()
                i += size
        return out

    def theta_of_controls(self, controls) -> np.ndarray:
        """The θ part of this rank's blocks of full controls (every layer)."""
        lo, hi = self.blocks.lo, self.blocks.hi
        blocks = {k: controls[k][lo:hi] for k in self.layer_names}
        blocks.update({k: controls[k] for k in self.globals})
        return self.pack_theta(blocks)

    def controls_of_theta(self, flat_theta, controls) -> None:
        """Write θ blocks (the θ part of a vector, on data rank 0) into full
        ``controls`` on every rank: broadcast over the data ranks, gathered over
        the depth ranks. Collective."""
        th = self.theta(flat_theta)
        b = self.blocks
        for k in self.layer_names:
            if b.comm.size == 1:
                controls[k][...] = th[k]
            else:
                controls[k][...] = np.concatenate(b.comm.allgather(np.ascontiguousarray(th[k])))
        for k in ("E", "C", "d"):
            if k in self.net.trainable:
                owner = 0 if k == "E" else b.comm.size - 1
                value = th[k] if k in th else None
                controls[k][...] = value if b.comm.size == 1 else b.comm.bcast(value, root=owner)

    def pack(self, theta, U, Lam, out=None) -> np.ndarray:
        """A local vector from θ blocks (dict, or a flat θ part) and field lists."""
        out = np.empty(self.size) if out is None else out
        if self.owns_theta:
            if isinstance(theta, dict):
                self.pack_theta(theta, out[: self.n_theta])
            else:
                out[: self.n_theta] = theta
        for which, fields in ((0, U), (1, Lam)):
            arr = out[self._offset(which) : self._offset(which) + self.n_field]
            arr = arr.reshape(self.field_shape)
            for j, state in enumerate(fields):
                for c, a in enumerate(state):
                    arr[j, c] = a
        return out

    def omega(self) -> np.ndarray:
        """The L²(M_L) weights ω of the θ part (:mod:`pontryx.solver.adjoint.riesz`)."""
        if self._omega is None:
            from pontryx.solver.adjoint.riesz import l2_weights

            w = l2_weights(self.net, [k for k, _ in self.theta_spec])
            self._omega = self.pack_theta(
                {k: np.broadcast_to(w[k], shape) for k, shape in self.theta_spec}
            )
        return self._omega

    def regulariser_diagonal(self) -> np.ndarray:
        """The diagonal of the regulariser's Hessian on the θ part: α Δt ω plus β/Δt ω
        for each neighbouring layer, δ ω on the embedding and readout (γ's H¹ term,
        not diagonal, left out)."""
        from pontryx.solver.adjoint.riesz import l2_weights

        reg, dt, b = self.rf.regulariser, self.net.dt, self.blocks
        w = l2_weights(self.net, self.globals)
        n = np.arange(b.lo, b.hi)
        neighbours = ((n > 0).astype(float) + (n < self.net.layers - 1)) if reg.beta else 0 * n
        out = {}
        for k, shape in self.theta_spec:
            if k in self.layer_names:
                c = reg.alpha * dt + reg.beta / dt * neighbours
                c = c.reshape(-1, *[1] * (len(shape) - 1))
                out[k] = np.broadcast_to(reg.weights[k], shape) * c
            else:
                out[k] = np.broadcast_to(reg.delta * w[k], shape)
        return self.pack_theta(out)

    def dot(self, a, b) -> float:
        """The Euclidean inner product of two local vectors (or θ parts) over all ranks."""
        return self.world.allreduce(float(np.vdot(a, b)), op=MPI.SUM)

    def block_norms(self, flat) -> tuple[float, float, float]:
        """(‖·_θ‖, ‖·_U‖, ‖·_Λ‖): for a residual the stationarity, costate and state norms."""
        t = flat[self.theta_slice]
        u = flat[self._offset(0) : self._offset(1)]
        lam = flat[self._offset(1) :]
        sq = np.array([np.vdot(t, t), np.vdot(u, u), np.vdot(lam, lam)])
        self.world.Allreduce(MPI.IN_PLACE, sq, op=MPI.SUM)
        return tuple(float(v) for v in np.sqrt(sq))

    # -- pieces of the model -----------------------------------------------------------------
    def full(self, theta) -> dict:
        """θ blocks with the embedding and readout (from ``controls`` if not trained)."""
        out = dict(theta)
        for k in ("E", "C", "d"):
            if k not in out:
                out[k] = self.controls[k]
        return out

    def _ctx(self, theta, i, linearise: bool):
        """Layer lo + i's kernel context; the linearisation point's contexts live in
        their own slots (kernels that assemble per layer, e.g. local, refill a slot),
        so evaluating trial points does not change the Jacobian."""
        n = self.blocks.lo + i
        slot = ("kkt", n) if linearise else ("kkt-trial", n)
        return self.kernel.layer({k: theta[k][i] for k in self.kernel_names}, slot)

    def _zeros(self, names=None):
        """Zero θ-shaped arrays (local blocks) for accumulating gradients."""
        names = names or [k for k, _ in self.theta_spec]
        shapes = dict(self.theta_spec)
        return {k: np.zeros(shapes[k]) for k in names}

    def layer_zeros(self) -> dict:
        """Zero arrays of one layer's controls (a gradient that is not needed)."""
        shapes = dict(self.theta_spec)
        return {k: np.zeros(shapes[k][1:]) for k in self.layer_names}

    def _layer_grad(self, grad, i):
        return {k: grad[k][i] for k in self.layer_names}

    def _reduce_theta(self, grad) -> np.ndarray:
        """The θ part of a gradient whose sample terms are local: summed over the
        data ranks onto data rank 0 (the regulariser is added there by the caller)."""
        buf = self.pack_theta(grad)
        if self.data.size > 1:
            self.data.Reduce(MPI.IN_PLACE if self.owns_theta else buf, buf, op=MPI.SUM, root=0)
        return buf if self.owns_theta else buf[:0]

    def regulariser(self, theta, grad=None) -> float:
        """This rank's part of R (layers lo … hi − 1; the β differences (n, n+1)
        with n in the block; δ's terms of the embedding and readout it holds) and its
        gradient added to ``grad`` (R is quadratic, so at a direction dθ this adds
        the Hessian action R''dθ)."""
        reg = self.rf.regulariser
        alpha, beta, gamma, dt, L = reg.alpha, reg.beta, reg.gamma, self.net.dt, self.net.layers
        b = self.blocks
        local = reg.outer({k: theta[k] for k in self.globals}, grad)
        if alpha == 0 and beta == 0 and gamma == 0:
            return local
        nxt = prv = None
        if beta and b.comm.size > 1:  # θ^{hi} from the next rank, θ^{lo−1} from the previous
            nxt = [b.shift((theta[k][0],), forward=False) for k in self.layer_names]
            prv = [b.shift((theta[k][-1],), forward=True) for k in self.layer_names]
        for j, k in enumerate(self.layer_names):
            w, th = reg.weights[k], theta[k]
            for i in range(b.count) if alpha or gamma else ():  # α, γ: collective in width
                local += reg.own(k, th[i], None if grad is None else grad[k][i])
            if not beta:
                continue
            before = prv[j] if prv is not None and prv[j] is not None else ()
            after = nxt[j] if nxt is not None and nxt[j] is not None else ()
            ext = np.stack([*before, *th, *after])
            off = len(before)  # index of layer lo in ext
            diff = w * (ext[1:] - ext[:-1])  # ω (θ^{j+1} − θ^j) for consecutive pairs in ext
            first = off  # pairs (n, n+1) with n in [lo, hi), n + 1 < L: counted here
            last = min(b.hi, L - 1) - b.lo + off
            steps = (ext[1:] - ext[:-1])[first:last]
            local += 0.5 * beta / dt * float(np.vdot(diff[first:last], steps))
            if grad is not None:
                g = np.zeros_like(th)
                for i in range(b.count):
                    e = i + off  # θ^{lo+i} in ext
                    if e >= 1:
                        g[i] += diff[e - 1]
                    if e + 1 < len(ext):
                        g[i] -= diff[e]
                grad[k] += beta / dt * g
        return local

    # -- the residual -----------------------------------------------------------------------
    def evaluate(self, flat, gradient: bool = True, linearise: bool = False):
        """(L, ‖F_Λ‖², F) at the local vector ``flat``: the Lagrangian (all ranks),
        the squared norm of the state rows and, with ``gradient``, the residual
        F = ∇L as a new local vector (else None). ``linearise`` keeps the point for
        :meth:`apply` and the sweeps of :mod:`.lnks`. Collective."""
        net, scheme, b, m = self.net, self.scheme, self.blocks, self.m
        weak = np.isfinite(self.R_f)
        th = self.theta(flat)
        full = self.full(th)
        U, Lam = self.fields(flat, 0), self.fields(flat, 1)
        received = b.shift(U[-1], forward=True)
        U_lo = received if not b.first else scheme.initial_state(net.embed(full, self.X))
        states = [U_lo, *U]
        grad = self._zeros() if gradient else None
        value = c2 = 0.0
        FL, adj, ctxs, records = [], [], [], []
        for i in range(b.count):
            ctx = self._ctx(th, i, linearise)
            g, rec = scheme.step(ctx, th["b"][i], states[i], n=b.lo + i)
            Fl = tuple(a - u for a, u in zip(g, states[i + 1]))
            if weak:
                c = self.S / self.R_f
                Fl = tuple(f - (c / m) * lam for f, lam in zip(Fl, Lam[i]))
                value += 0.5 * c * _dot(Lam[i], tuple(lam / m for lam in Lam[i]))
            value += _dot(Lam[i], Fl)
            c2 += _dot(Fl, Fl)
            FL.append(Fl)
            if gradient:
                adj.append(scheme.adjoint(ctx, rec, Lam[i], self._layer_grad(grad, i), n=b.lo + i))
            if linearise:
                ctxs.append(ctx)
                records.append(rec)
        Yhat = Gl = None
        if b.last:
            Yhat = net.readout(full, states[-1][0])
            misfit, Gl, _ = self.rf.misfit(Yhat)
            if self.width.rank == 0:
                value += misfit
            if gradient:
                dphi = self.terminal(full, states[-1], Gl, grad)
        if self.owns_theta:  # the same on every rank of the depth communicator
            value += self.regulariser(th, grad)
        sums = np.array([value, c2])
        self.world.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        if linearise:
            self.point = Point(th, full, states, Lam, ctxs, records, Yhat, Gl)
        if not gradient:
            return float(sums[0]), float(sums[1]), None
        nxt = b.shift(adj[0], forward=False)
        if b.first and "E" in grad:
            grad["E"] += adj[0][0] @ self.X.T
        FU = [tuple(a - lam for a, lam in zip(adj[i + 1], Lam[i])) for i in range(b.count - 1)]
        top = nxt if not b.last else dphi
        FU.append(tuple(a - lam for a, lam in zip(top, Lam[-1])))
        F = np.empty(self.size)
        gth = self._reduce_theta(grad)
        return float(sums[0]), float(sums[1]), self.pack(gth, FU, FL, F)

    def linearise(self, flat):
        """:meth:`evaluate` with the gradient, keeping the point for :meth:`apply`."""
        return self.evaluate(flat, gradient=True, linearise=True)

    def terminal(self, full, U_L, G, grad) -> tuple:
        """At the terminal layer (last depth rank), for the sample columns of the state
        tuple ``U_L`` = U^{N_t} and G = ∂Φ/∂Ŷ on them: the costate Λ^{N_t} = ∇_U Φ =
        (M_L C G, 0, …) as a state tuple; adds ∂Φ/∂C = M_L U^{N_t} Gᵀ and ∂Φ/∂d = G 1
        to ``grad`` if the readout is trained."""
        m = self.m
        if "C" in grad:
            grad["C"] += (m * U_L[0]) @ G.T
            grad["d"] += G.sum(axis=1)
        return (m * (full["C"] @ G), *(np.zeros_like(s) for s in U_L[1:]))

    # -- the Jacobian ------------------------------------------------------------------------
    def terminal_tangent(self, dU_L, dth, cols=slice(None), gauss_newton: bool = False):
        """At the terminal layer (last depth rank), for the sample columns ``cols``:
        (d(∇_U Φ) as a state tuple, the readout part of dF_θ as a dict) along dU^{N_t}
        and the readout direction in ``dth`` (C, d). With dŶ = Cᵀ M_L dU^{N_t} + dCᵀ M_L
        U^{N_t} + dd and dG = (∂²Φ/∂Ŷ²) dŶ; ``gauss_newton``: only these terms, those
        with G = ∂Φ/∂Ŷ dropped (the Gauss–Newton part)."""
        P, m, sp = self.point, self.m, self.space
        C, U_L = P.full["C"], P.states[-1][0][:, cols]
        Yhat, G = P.Yhat[:, cols], P.G[:, cols]
        dY = sp.sum(C.T @ (m * dU_L[0]))
        if "C" in dth:
            dY += sp.sum(dth["C"].T @ (m * U_L)) + dth["d"][:, None]
        dG = self.rf._loss.hvp(Yhat, dY, self.S)
        top = m * (C @ dG)
        if "C" in dth and not gauss_newton:
            top += m * (dth["C"] @ G)
        out = {}
        if "C" in self.globals:
            out["C"] = (m * U_L) @ dG.T
            if not gauss_newton:
                out["C"] += (m * dU_L[0]) @ G.T
            out["d"] = dG.sum(axis=1)
        return (top, *(np.zeros_like(s) for s in dU_L[1:])), out

    def apply(self, dflat, out=None) -> np.ndarray:
        """J · dx: the Hessian of L at the linearisation point along the local vector
        ``dflat`` (a new local vector or ``out``). Layers independent; collective."""
        P, b, scheme, kernel, m = self.point, self.blocks, self.scheme, self.kernel, self.m
        dth = self.theta(dflat)
        dU, dLam = self.fields(dflat, 0), self.fields(dflat, 1)
        received = b.shift(dU[-1], forward=True)
        if b.first:
            dU0 = dth["E"] @ self.X if "E" in dth else np.zeros_like(P.states[0][0])
            received = scheme.initial_tangent(dU0)
        dstates = [received, *dU]
        dgrad = self._zeros()
        dFL, dadj = [], []
        for i in range(b.count):
            ctx, rec = P.ctxs[i], P.records[i]
            dthi = {k: dth[k][i] for k in self.kernel_names}
            dctx = kernel.tangent(ctx, dthi)
            dg, trec = scheme.tangent(ctx, dctx, dth["b"][i], rec, dstates[i], n=b.lo + i)
            dFl = tuple(a - u for a, u in zip(dg, dU[i]))
            if np.isfinite(self.R_f):
                c = self.S / self.R_f
                dFl = tuple(f - (c / m) * lam for f, lam in zip(dFl, dLam[i]))
            dFL.append(dFl)
            _, da = scheme.adjoint2(
                ctx, dctx, dthi, rec, trec, P.Lam[i], dLam[i], self.layer_zeros(),
                self._layer_grad(dgrad, i), n=b.lo + i,
            )  # fmt: skip
            dadj.append(da)
        if b.last:
            dphi, readout = self.terminal_tangent(dU[-1], dth)
            for k, v in readout.items():
                dgrad[k] += v
        if b.first and "E" in dgrad:
            dgrad["E"] += dadj[0][0] @ self.X.T
        nxt = b.shift(dadj[0], forward=False)
        dFU = [tuple(a - lam for a, lam in zip(dadj[i + 1], dLam[i])) for i in range(b.count - 1)]
        top = nxt if not b.last else dphi
        dFU.append(tuple(a - lam for a, lam in zip(top, dLam[-1])))
        if self.owns_theta:  # the same on every rank of the depth communicator
            self.regulariser(dth, dgrad)
        return self.pack(self._reduce_theta(dgrad), dFU, dFL, out)
