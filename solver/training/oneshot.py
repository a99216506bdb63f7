"""One-shot solve of the discrete Euler–Lagrange system ("deepest learning").

Abarbanel, Rozdeba & Shirman (2018), "Machine learning: deepest learning as
statistical data assimilation", Neural Computation 30(8): the states of every
layer are unknowns next to the controls, the layer equations become a penalty
of precision R_f, and R_f is annealed upwards. On the discrete model of
DESIGN.md §2, with layers U^{n+1} = gⁿ(Uⁿ, θⁿ) (the depth scheme's step; U⁰ =
E X fixed by the data) and S the number of samples:

Weak-constraint action (unknowns θ and U¹ … U^{N_t}, all layers at once)

    A(U, θ) = Φ(U^{N_t}; C, d) + R(θ) + (R_f/2S) Σ_n Σ_s ‖U_s^{n+1} − gⁿ(Uⁿ, θⁿ)_s‖²_{M_L},

the misfit Φ = (1/S) Σ ℓ of the readout of U^{N_t}, the regulariser R of J and
the per-sample L²(M_L) norm (so R_f weighs the model error like the misfit).
With Λ^{n+1} := (R_f/S) M_L (gⁿ(Uⁿ, θⁿ) − U^{n+1}) its gradient is, layer by
layer (one step and one adjoint — a vjp — of the scheme per layer, layers
independent):

    ∂A/∂Uⁿ   = (∂_U gⁿ)ᵀ Λ^{n+1} − Λⁿ,         n = 1 … N_t − 1,
    ∂A/∂U^{N_t} = ∇Φ(U^{N_t}) − Λ^{N_t},
    ∂A/∂θⁿ   = (∂_θ gⁿ)ᵀ Λ^{n+1} + ∂R/∂θⁿ,     ∂A/∂(C, d) = ∂Φ/∂(C, d),
    ∂A/∂E    = ((∂_U g⁰)ᵀ Λ¹) Xᵀ               (if E is trainable).

Precision annealing: R_f = R_0 a^β for β = 0, 1, …, stages − 1; every stage
solves ∇A = 0 by Newton's method (PETSc SNES) warm-started from the previous
stage, the first from θ₀ and the forward sweep U(θ₀).

Strong constraint (the final stage): the KKT system of
L(U, Λ, θ) = J + Σ_n ⟨Λ^{n+1}, gⁿ(Uⁿ, θⁿ) − U^{n+1}⟩ with unknowns U, Λ, θ,

    ∂L/∂Λ^{n+1} = gⁿ(Uⁿ, θⁿ) − U^{n+1} = 0         (state equations)
    ∂L/∂Uⁿ       = the expressions above = 0          (adjoint equations, Λ^{N_t} = ∇Φ)
    ∂L/∂θ        = ∂J/∂θ = 0                         (stationarity; Pontryagin),

which is the weak-constraint system with the state equation relaxed to
U^{n+1} − gⁿ = −(S/R_f) M_L⁻¹ Λ^{n+1}: as R_f → ∞ the annealing path ends at a
KKT point. It is solved by SNES from the last annealed θ and Λ; the KKT
residual ‖∇L‖ (Euclidean over all unknowns) is reported at every stage (for
the weak stages with the multipliers Λ above, where it is the state-equation
violation). With Λ = ∂J/∂U this Λ is the discrete adjoint of
:mod:`pontryx.solver.adjoint` (DESIGN's p ≈ −M_L⁻¹Λ).

Continuation: stage β + 1 starts from θ of stage β and the predictor
U^{n+1} = gⁿ(Uⁿ, θⁿ) − (S/R_f) M_L⁻¹ Λ^{n+1} with stage β's multipliers Λ held
fixed (the KKT stage: R_f = ∞, Λ as initial multipliers). Without it, raising
R_f tenfold sends Newton through 14–17 damped steps per stage; with it, 3–4
full steps (measured on the test problem).

Newton's Jacobian (option ``jacobian``): ``"fd"`` assembles it densely by
central differences of the residual (column j = (F(x + h e_j) − F(x − h e_j))/2h,
h = ``fd_step`` · max(|x_j|, 1): 2 residuals per unknown, O(h²) accurate) and
solves with LU (redundantly on every rank in parallel): robust, for small
problems. ``"mf"``: Jacobian-free Newton–Krylov (PETSc ``-snes_mf``: MFFD
products of the residual, GMRES without preconditioner), for larger ones; it
degrades as R_f grows. ``"auto"`` (default) takes ``fd`` up to 1000 unknowns.
Newton finds stationary points, not minimisers: it is reliable when the
regulariser keeps the annealing path regular (the tests use α = 1); with weak
regularisation a stage may stop on a line-search failure (``snes_reason`` < 0
in the record) and the KKT stage may land on another stationary point than a
descent method. ``objective`` = true gives SNES the action A as merit function
(for ``snes_type newtontr``; off by default, as Newton directions need not be
descent directions of a non-convex A). The SNES has the options prefix
``pontryx_snes_``; ``petsc_options`` adds options without it, and the command
line wins.

Parallel: the unknowns form one PETSc Vec on the world communicator: states
distributed by dof rows (width) and samples (data), the controls by rows on
the first data group only (they are broadcast over the data ranks in every
residual and their gradients summed). With a data split the Vec lives on the
world communicator of the functional's layout.

Size. The unknowns are θ and N_t·N·S state values (×2 for the KKT stage); the
Jacobian-free Newton–Krylov solve has no preconditioner, so its GMRES
iterations grow with the size and with R_f. Beyond ``max_unknowns`` (default
10⁵; e.g. 8 layers × 81 dofs × 1000 samples = 648 000 state values) the trainer
refuses to start with a one-line error instead of running for hours; ``null``
lifts the guard.
"""

from __future__ import annotations

from typing import ClassVar

from mpi4py import MPI

import numpy as np
from petsc4py import PETSc

from pontryx.meshes.errors import InputError, show
from pontryx.solver.errors import NonFiniteError
from pontryx.solver.model.controls import Controls
from pontryx.solver.petsc import configure, destroy
from pontryx.solver.training.base import Trainer
from pontryx.solver.training.common import check_finite

__all__ = ["OneShot"]

PREFIX = "pontryx_snes_"
_REASONS = {
    getattr(PETSc.SNES.ConvergedReason, k): k
    for k in dir(PETSc.SNES.ConvergedReason)
    if k.isupper() and k != "ITERATING"
}


def _dot(a, b) -> float:
    return sum(float(np.vdot(x, y)) for x, y in zip(a, b))


class _Unknowns:
    """The packing of (θ, U¹…U^{N_t}[, Λ¹…Λ^{N_t}]) into one local flat array."""

    def __init__(self, theta: Controls, shapes, layers, data_comm, kkt):
        self.theta, self.shapes, self.layers = theta, shapes, layers
        self.data_comm, self.kkt = data_comm, kkt
        self.n_theta = theta.local_size()
        self.owns_theta = data_comm.rank == 0
        self.n_layer = sum(int(np.prod(s)) for s in shapes)
        n_fields = 2 if kkt else 1
        self.size = (self.n_theta if self.owns_theta else 0) + n_fields * layers * self.n_layer

    def _fields(self, flat, offset):
        out, i = [], offset
        for _ in range(self.layers):
            comps = []
            for s in self.shapes:
                k = int(np.prod(s))
                comps.append(flat[i : i + k].reshape(s))
                i += k
            out.append(tuple(comps))
        return out, i

    def unpack(self, flat):
        """θ (set in self.theta, broadcast over the data ranks), U list, Λ list (views)."""
        i = self.n_theta if self.owns_theta else 0
        buf = flat[:i].copy() if self.owns_theta else np.empty(self.n_theta)
        if self.data_comm.size > 1:
            self.data_comm.Bcast(buf, root=0)
        self.theta.set_flat(buf)
        U, i = self._fields(flat, i)
        Lam = self._fields(flat, i)[0] if self.kkt else None
        return U, Lam

    def pack(self, theta, U, Lam, out):
        i = 0
        if self.owns_theta:
            out[: self.n_theta] = theta.to_flat()
            i = self.n_theta
        for fields in (U, Lam) if self.kkt else (U,):
            for state in fields:
                for c in state:
                    out[i : i + c.size] = c.ravel()
                    i += c.size
        return out


def _positive(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0


class OneShot(Trainer):
    """Precision-annealed one-shot Euler–Lagrange solve; see the module docstring.

    Options: ``R0`` (R_0 > 0, default 1), ``a`` (growth a > 1, default 10),
    ``stages`` (annealing stages, default 6), ``kkt`` (finish with the strong
    constraint KKT stage, default true), ``jacobian`` (auto | fd | mf),
    ``fd_step`` (1e-5), ``rtol``, ``atol``, ``max_it`` (SNES), ``objective``,
    ``max_unknowns`` (10⁵, null: no limit), ``petsc_options`` (a dict, no
    prefix); see the module docstring.

    ``iterate(k)`` yields one Record per stage: the reduced J(θ), ∇J(θ) and
    stationarity max_n ‖∂_θ Hⁿ‖ at the stage's controls (one extra sweep), with
    extra = {"R_f", "kkt_residual", "snes_its", "snes_reason", "action",
    "constraint" (√((1/S) Σ ‖U^{n+1} − gⁿ‖²_{M_L}))}. After the last stage
    ``iterate`` yields nothing and ``converged`` (``failed``) holds the final
    SNES's reason if it converged (did not).
    """

    name = "oneshot"
    defaults: ClassVar[dict] = {
        "R0": 1.0,
        "a": 10.0,
        "stages": 6,
        "kkt": True,
        "jacobian": "auto",
        "rtol": 1e-10,
        "atol": 1e-13,
        "max_it": 50,
        "fd_step": 1e-5,
        "objective": False,
        "max_unknowns": 100_000,
        "petsc_options": {},
    }

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        opts = self.options
        for key, ok, want in (
            ("R0", _positive(opts["R0"]), "R_0 > 0"),
            ("a", _positive(opts["a"]) and opts["a"] > 1, "a growth factor a > 1"),
        ):
            if not ok:
                raise InputError(f"expected {want}, got {show(opts[key])}", key)
        stages = opts["stages"]
        if isinstance(stages, bool) or not (isinstance(stages, int) and stages >= 1):
            raise InputError(f"expected an integer ≥ 1, got {show(stages)}", "stages")
        if opts["jacobian"] not in ("auto", "fd", "mf"):
            raise InputError(f"expected auto, fd or mf, got {show(opts['jacobian'])}", "jacobian")
        net = rf.net
        self._check_size(rf, controls, opts["max_unknowns"])
        self.net, self.names = net, tuple(net.trainable)
        width, data = net.space.comm, rf.data_comm
        comm = rf.layout.world if rf.layout is not None else width
        self.comm, self.data_comm = comm, data
        self.work = controls.copy()
        self.theta = self.work.subset(self.names)
        self.U = None  # U¹ … U^{N_t} of the last stage (tuples)
        self.Lam = None
        self.reason: str | None = None  # SNES's reason of the last stage
        self.converged: str | None = None  # set after the last stage if its SNES converged
        self.failed: str | None = None  # set after the last stage if its SNES did not

    @staticmethod
    def _check_size(rf, controls, limit):
        """Refuse a one-shot solve with more than ``limit`` unknowns (module docstring)."""
        if limit is None:
            return
        net = rf.net
        n_theta = controls.subset(net.trainable).comm.allreduce(
            controls.subset(net.trainable).local_size()
        )
        states = net.layers * net.space.N * rf.S * net.scheme.n_states
        if n_theta + states > limit:
            raise InputError(
                f"the one-shot solve would have {n_theta + states} "
                f"unknowns ({net.layers} layers × {net.space.N} dofs × {rf.S} samples of "
                f"states + {n_theta} controls) > {limit}; use fewer samples or layers, or "
                "max_unknowns: null to try anyway (Newton–Krylov without a preconditioner)",
                "max_unknowns",
            )

    # -- the Lagrangian and its gradient ------------------------------------------
    def lagrangian(self, U, Lam=None, R_f=None):
        """Value and gradient of A (``Lam`` None, precision ``R_f``) or of L
        (multipliers ``Lam`` = Λ¹ … Λ^{N_t}) at (self.work, U).

        Returns (value, ∂/∂θ, ∂/∂U list, ∂/∂Λ list or None, constraint², stat)."""
        net, rf, th = self.net, self.rf, self.work
        scheme, kernel, m = net.scheme, net.kernel, net.space.m[:, None]
        S, L = float(rf.S), net.layers
        states = [scheme.initial_state(net.embed(th, rf.X)), *U]
        gtheta = self.theta.zeros_like()
        gU = [tuple(np.zeros_like(c) for c in s) for s in U]
        gL = [] if Lam is not None else None
        rows, mismatch = 0.0, 0.0
        for n in range(L):
            ctx = kernel.layer(net.layer_controls(th, n), n)
            g, record = scheme.step(ctx, th["b"][n], states[n], n=n)
            delta = tuple(u - v for u, v in zip(states[n + 1], g))
            mdelta = tuple(m * d for d in delta)
            mismatch += _dot(delta, mdelta) / S
            if Lam is None:
                lam = tuple(-R_f / S * d for d in mdelta)
                rows += 0.5 * R_f / S * _dot(delta, mdelta)
            else:
                lam = Lam[n]
                rows -= _dot(lam, delta)
                gL.append(tuple(-d for d in delta))
            gU[n] = tuple(a - b for a, b in zip(gU[n], lam))
            layer_grad = {k: gtheta[k][n] for k in net.layer_names}
            back = scheme.adjoint(ctx, record, lam, layer_grad, n=n)
            kernel.release(ctx)
            if n >= 1:
                gU[n - 1] = tuple(a + b for a, b in zip(gU[n - 1], back))
            elif "E" in gtheta:
                gtheta["E"] += back[0] @ rf.X.T
        Yhat = net.readout(th, states[L][0])
        misfit, G, stat = rf._misfit(Yhat)
        gU[L - 1] = (gU[L - 1][0] + m * (th["C"] @ G), *gU[L - 1][1:])
        if "C" in gtheta:
            gtheta["C"] += (m * states[L][0]) @ G.T
            gtheta["d"] += G.sum(axis=1)
        sums = np.array([rows, mismatch, misfit, stat])
        if self.data_comm.size > 1:
            for v in gtheta.values():
                self.data_comm.Allreduce(MPI.IN_PLACE, v, op=MPI.SUM)
            self.data_comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        rows, mismatch = net.space.sum(sums[:2])
        value = rows + sums[2] + rf.regulariser(th, gtheta)
        return value, gtheta, gU, gL, mismatch, sums[3]

    def _predict(self, R_f=float("inf")):
        """States for the stage of precision R_f: the forward recurrence
        U^{n+1} = gⁿ(Uⁿ, θⁿ) − (S/R_f) M_L⁻¹ Λ^{n+1} with the last stage's
        multipliers Λ held fixed (the predictor of the continuation in R_f; with
        R_f = ∞ or no Λ yet, the forward sweep of the model)."""
        net, th, Lam = self.net, self.work, self.Lam
        m, S = net.space.m[:, None], float(self.rf.S)
        c = 0.0 if Lam is None or not np.isfinite(R_f) else S / R_f
        states = [net.scheme.initial_state(net.embed(th, self.rf.X))]
        for n in range(net.layers):
            ctx = net.kernel.layer(net.layer_controls(th, n), n)
            g = net.scheme.step(ctx, th["b"][n], states[-1], n=n)[0]
            net.kernel.release(ctx)
            if c:
                g = tuple(a - c * lam / m for a, lam in zip(g, Lam[n]))
            states.append(g)
        return [tuple(np.array(a, copy=True) for a in s) for s in states[1:]]

    # -- SNES -----------------------------------------------------------------------
    def _solve(self, R_f=None):
        """One SNES solve of ∇A = 0 (``R_f``) or of the KKT system (``R_f`` None)."""
        kkt = R_f is None
        shapes = [c.shape for c in self.U[0]]
        layout = _Unknowns(self.theta, shapes, self.net.layers, self.data_comm, kkt)
        x = PETSc.Vec().createMPI((layout.size, PETSc.DETERMINE), comm=self.comm)
        f = x.duplicate()
        layout.pack(self.theta, self.U, self.Lam, x.array)

        def F(flat, out):
            U, Lam = layout.unpack(flat)
            _, gth, gU, gL, _, _ = self.lagrangian(U, Lam, R_f)
            return layout.pack(gth, gU, gL, out)

        def residual(snes, xv, fv):
            F(xv.array_r, fv.array)

        def jacobian(snes, xv, Jm, P):
            self._central_jacobian(F, xv, Jm)

        snes = PETSc.SNES().create(comm=self.comm)
        jac = self.options["jacobian"]
        if jac == "auto":
            jac = "fd" if x.getSize() <= 1000 else "mf"
        defaults = {"snes_type": "newtonls"}
        Jm = None
        if jac == "fd":
            n = (layout.size, x.getSize())
            Jm = PETSc.Mat().createDense((n, n), comm=self.comm)
            Jm.setUp()
            snes.setJacobian(jacobian, Jm)
            defaults.update(ksp_type="preonly")
            defaults["pc_type"] = "lu" if self.comm.size == 1 else "redundant"
        else:
            defaults.update(snes_mf=None, ksp_type="gmres", pc_type="none", ksp_rtol=1e-10)
            defaults.update(ksp_gmres_restart=200, ksp_max_it=2000)
        defaults.update(self.options["petsc_options"])
        try:
            snes.setFunction(residual, f)
            if not kkt and self.options["objective"]:

                def objective(snes, xv):
                    U, Lam = layout.unpack(xv.array_r)
                    return self.lagrangian(U, Lam, R_f)[0]

                snes.setObjective(objective)
            snes.setTolerances(
                rtol=self.options["rtol"],
                atol=self.options["atol"],
                stol=0.0,
                max_it=self.options["max_it"],
            )
            configure(snes, PREFIX, defaults)
            snes.solve(None, x)
            its, reason = snes.getIterationNumber(), snes.getConvergedReason()
            U, Lam = layout.unpack(x.array_r)
            self.U = [tuple(c.copy() for c in s) for s in U]
            self.Lam = None if Lam is None else [tuple(c.copy() for c in s) for s in Lam]
        finally:
            destroy(snes, x, f, Jm)
        return its, reason

    def _central_jacobian(self, F, xv, Jm):
        """Dense Jacobian by central differences, column j = (F(x + h e_j) −
        F(x − h e_j)) / 2h with h = δ max(|x_j|, 1), δ = ``fd_step``: O(h²)."""
        delta = self.options["fd_step"]
        lo, hi = xv.getOwnershipRange()
        x = xv.array_r.copy()
        xs = np.concatenate(self.comm.allgather(x))
        A = Jm.getDenseArray()
        fp, fm = np.empty_like(x), np.empty_like(x)
        for j in range(xs.size):
            h = delta * max(abs(xs[j]), 1.0)
            own = lo <= j < hi
            if own:
                x[j - lo] = xs[j] + h
            F(x, fp)
            if own:
                x[j - lo] = xs[j] - h
            F(x, fm)
            if own:
                x[j - lo] = xs[j]
            A[:, j] = (fp - fm) / (2.0 * h)
        Jm.assemble()

    def _kkt_residual(self, Lam):
        """‖∇L(U, Λ, θ)‖ over all unknowns (θ counted once) and (1/S) Σ ‖U^{n+1} − gⁿ‖²_{M_L}."""
        _, gth, gU, gL, mismatch, _ = self.lagrangian(self.U, Lam)
        fields = [c for s in gU + gL for c in s]
        local = _dot(fields, fields)
        total = self.comm.allreduce(local, op=MPI.SUM)
        return float(np.sqrt(total + gth.dot(gth))), mismatch

    def _multipliers(self, R_f):
        """Λ^{n+1} = (R_f/S) M_L (gⁿ(Uⁿ) − U^{n+1}) of the weak-constraint stage."""
        net, th, m, S = self.net, self.work, self.net.space.m[:, None], float(self.rf.S)
        states = [net.scheme.initial_state(net.embed(th, self.rf.X)), *self.U]
        Lam = []
        for n in range(net.layers):
            ctx = net.kernel.layer(net.layer_controls(th, n), n)
            g = net.scheme.step(ctx, th["b"][n], states[n], n=n)[0]
            net.kernel.release(ctx)
            Lam.append(tuple(R_f / S * m * (a - b) for a, b in zip(g, states[n + 1])))
        return Lam

    # -- the stages -----------------------------------------------------------------------
    @property
    def n_stages(self) -> int:
        return self.options["stages"] + (1 if self.options["kkt"] else 0)

    def _iterate(self, k):
        o = self.options
        for _ in range(k):
            stage = self.iteration
            if stage >= self.n_stages:
                return
            for key in self.controls:
                self.work[key][...] = self.controls[key]
            previous = self.Lam
            if stage < o["stages"]:
                R_f = o["R0"] * o["a"] ** stage
                self.U = self._predict(R_f)
                its, reason = self._solve(R_f)
                self.Lam = self._multipliers(R_f)
                action = self.lagrangian(self.U, None, R_f)[0]
            else:
                R_f = float("inf")
                if self.Lam is None:  # e.g. restored without them: the adjoint of the model
                    self.Lam = self.rf.trajectory(self.work).costates[1:]
                self.U = self._predict()
                its, reason = self._solve(None)
                action = float("nan")
            kkt, mismatch = self._kkt_residual(self.Lam)
            J, grad = self.rf.value_and_gradient(self.work)
            self.iteration += 1
            rec = self.record(
                J,
                grad,
                R_f=R_f,
                kkt_residual=kkt,
                snes_its=its,
                snes_reason=int(reason),
                action=float(action),
                constraint=float(np.sqrt(mismatch)),
            )
            try:
                check_finite(self.iteration, rec.loss, rec.grad_norm)
            except NonFiniteError:
                self.iteration -= 1
                self.Lam = previous
                raise
            for key in self.controls:
                self.controls[key][...] = self.work[key]
            self.reason = _REASONS.get(reason, str(reason))
            if self.iteration == self.n_stages:  # the train() driver stops on these
                self.converged = self.reason if reason > 0 else None
                self.failed = None if reason > 0 else self.reason
            yield rec

    # -- checkpointing ----------------------------------------------------------------------
    def state(self):
        """Controls, stage and the multipliers Λ¹…Λ^{N_t} of the last stage (local
        blocks): the next stage's start is predicted from them."""
        out = super().state()
        for n, s in enumerate(self.Lam or ()):
            for c, a in enumerate(s):
                out[f"oneshot/Lam{n + 1}/{c}"] = a.copy()
        return out

    def state_kinds(self):
        kinds = super().state_kinds()
        kinds.update({k: ("local",) for k in self.state() if k.startswith("oneshot/")})
        return kinds

    def restore(self, state, controls_only=False):
        super().restore(state)
        self.Lam, self.converged, self.failed = None, None, None
        if not controls_only and "oneshot/Lam1/0" in state:
            self.Lam = [
                tuple(state[f"oneshot/Lam{n}/{c}"].copy() for c in range(self.net.scheme.n_states))
                for n in range(1, self.net.layers + 1)
            ]
