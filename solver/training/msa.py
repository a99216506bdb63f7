"""Method of successive approximations (MSA) and its extended form (E-MSA).

Li, Chen, Tai & E (2018), "Maximum principle based algorithms for deep
learning", JMLR 18(165), on the discrete model of DESIGN.md §2. Write one layer
as U^{n+1} = gⁿ(Uⁿ, θⁿ) (the depth scheme's step; a tuple of multivectors for
Verlet) and J(θ) = Φ(U^{N_t}) + Σ_n Rⁿ(θⁿ) (misfit through the readout, and the
regulariser).

Signs. Λⁿ = ∂J/∂Uⁿ is the discrete adjoint of :mod:`pontryx.solver.adjoint`:

    Λ^{N_t} = ∇Φ(U^{N_t}) = M_L C ∂ℓ/∂Ŷ,   Λⁿ = (∂_U gⁿ)ᵀ Λ^{n+1},
    ∂J/∂θⁿ = (∂_θ gⁿ)ᵀ Λ^{n+1} + ∇Rⁿ(θⁿ).

Li et al.'s costate is Pⁿ = −Λⁿ (DESIGN's p ≈ −M_L⁻¹Λ, i.e. P = M_L p), with
the layerwise Hamiltonian

    Hⁿ(U, P, θ) = ⟨P, gⁿ(U, θ)⟩ − Rⁿ(θ)   = ⟨P, U⟩ + Δt·H(t_n, u, p, θ) for IMEX Euler, ε = 0,

so ∂_θ Hⁿ = −∂J/∂θⁿ and the discrete maximum principle reads
θⁿ ∈ argmax_θ Hⁿ(Uⁿ, P^{n+1}, θ) = argmin_θ ⟨Λ^{n+1}, gⁿ(Uⁿ, θ)⟩ + Rⁿ(θ).

One MSA sweep (Li et al., Algorithm 1, discrete form): forward sweep storing
U⁰ … U^{N_t}; backward sweep storing Λ⁰ … Λ^{N_t}; then for every layer
independently a few L-BFGS iterations (:func:`minimise_lbfgs`) on

    Eⁿ(θ) = −Hⁿ(Uⁿ, −Λ^{n+1}, θ)
            + (ρ/2S) Σ_s ‖U_s^{n+1} − gⁿ(Uⁿ, θ)_s‖²_{M_L}                     (feasibility)
            + (ρS/2) Σ_s ‖Λ_s^n − ∂_U⟨Λ^{n+1}, gⁿ(U, θ)⟩|_{U=Uⁿ, s}‖²_{M_L⁻¹}   (costate)

from θⁿ_old. E-MSA (Algorithm 2) has ρ > 0; plain MSA is ρ = 0 and may diverge
(large Hamiltonian steps that the states cannot follow) — E-MSA's ρ terms keep
the sweep a descent method for ρ large enough. The norms are Li et al.'s sample
averages with per-sample costates S·p_s, p_s = −M_L⁻¹Λ_s, in the L²(M_L) norm.
All ρ terms vanish at θⁿ_old, so E-MSA is a proximal point step.

Gradients: the first two terms by the scheme's adjoint (vjp) with cotangent
Λ^{n+1} − (ρ/S) M_L (U^{n+1} − gⁿ); the costate term is (ρS/2)‖c(θ) − Λⁿ‖²
with c(θ) = (∂_U gⁿ)ᵀ Λ^{n+1}, whose gradient ∂_θ⟨r, c(θ)⟩ (r = ρS M_L⁻¹(c − Λⁿ)
fixed) is the derivative of ∇_θ⟨Λ^{n+1}, gⁿ(U, θ)⟩ along the U-direction r:
exact for IMEX Euler (with Q = S_Δtᵀ Λ^{n+1}, D = Δt σ'(Z)∘Q, Z = KU + b)

    ∂_θ⟨r, c⟩ = vjp_K(r, D) + vjp_K(U, E) + (E 1 for b),   E = Δt σ''(Z)∘Q∘(K r),

and a central difference of two vjp evaluations (O(h²)) for the other schemes.

The readout C, d (if trainable) is the terminal block: minimise Φ(C, d) (E-MSA:
+ (ρS/2)‖Λ^{N_t} − ∇_U Φ(C, d)‖²_{M_L⁻¹}, exact with the loss's Hessian). The
embedding E (if trainable; E-MSA only) is the initial block:
⟨Λ⁰, E X⟩ + (ρ/2S)‖E X − U⁰‖²_{M_L}. The β (time-smoothness) regulariser
couples neighbouring layers: Rⁿ holds θ^{n±1} at their old values (Jacobi).

All blocks use the states and costates of the same forward–backward sweep, so
the blocks are independent of each other: this is the Jacobi-type variant (Li et
al.'s own sweep updates θⁿ before layer n + 1 sees its state, which makes it
sequential in depth). The blocks run one after another here; each is collective
over the width ranks, the data ranks sum their samples' contributions.
Memory: all N_t + 1 states and costates are stored
(:meth:`ReducedFunctional.trajectory`).
"""

from __future__ import annotations

from typing import ClassVar

from mpi4py import MPI

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.adjoint.riesz import RieszMap, check_metric
from pontryx.solver.data.sampler import Minibatches
from pontryx.solver.errors import NonFiniteError
from pontryx.solver.model.controls import Controls
from pontryx.solver.model.loss import LOSSES
from pontryx.solver.training.base import Trainer
from pontryx.solver.training.common import check_finite

__all__ = [
    "EMSA",
    "MSA",
    "EmbeddingProblem",
    "LayerProblem",
    "ReadoutProblem",
    "minimise_lbfgs",
]


# -- block problems -----------------------------------------------------------------
def _dot(a, b) -> float:
    """Σ over tuple components of the local Euclidean inner products."""
    return sum(float(np.vdot(x, y)) for x, y in zip(a, b))


class _Block:
    """A block objective: sample terms summed over the data and width ranks,
    control terms over the width ranks."""

    def __init__(self, net, data_comm):
        self.net, self.data_comm = net, data_comm

    def _total(self, rows: float, controls: float = 0.0, replicated: float = 0.0) -> float:
        """rows: this rank's partial sum over its dof rows and samples; controls:
        its rows of a control term (the same on every data rank); replicated: a
        sample term already summed over the width ranks (through Ŷ)."""
        a = np.array([rows, replicated])
        if self.data_comm.size > 1:
            self.data_comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)
        return float(self.net.space.sum(a[0] + controls) + a[1])

    def _data_sum(self, grad: Controls) -> Controls:
        if self.data_comm.size > 1:
            for v in grad.values():
                self.data_comm.Allreduce(MPI.IN_PLACE, v, op=MPI.SUM)
        return grad

    def __call__(self, theta: Controls) -> float:
        return self.value_and_gradient(theta)[0]

    def value_and_gradient(self, theta: Controls):
        raise NotImplementedError


class LayerProblem(_Block):
    """Layer n's E-MSA objective Eⁿ(θ) of the module docstring (ρ = 0: MSA).

    ``theta`` holds the layer's controls (kernel names and ``b``, owned rows);
    ``U``, ``U1``, ``Lam``, ``Lam1`` are Uⁿ, U^{n+1}, Λⁿ, Λ^{n+1} (tuples);
    ``reg(theta, grad)`` returns this width rank's part of Rⁿ and adds ∇Rⁿ."""

    def __init__(self, net, n, U, U1, Lam, Lam1, rho, S, reg, data_comm=MPI.COMM_SELF):
        super().__init__(net, data_comm)
        self.n, self.U, self.U1, self.Lam, self.Lam1 = n, U, U1, Lam, Lam1
        self.rho, self.S, self.reg = float(rho), float(S), reg
        self.exact = net.scheme.name == "imex_euler"

    def value_and_gradient(self, theta: Controls):
        net, scheme, kernel = self.net, self.net.scheme, self.net.kernel
        m = net.space.m[:, None]
        rho, S = self.rho, self.S
        grad = theta.zeros_like()
        ctx = kernel.layer({k: theta[k] for k in kernel.shapes()})
        new, record = scheme.step(ctx, theta["b"], self.U, n=self.n)
        local = _dot(self.Lam1, new)
        c = scheme.adjoint(ctx, record, self.Lam1, grad, n=self.n)  # c(θ) = (∂_U g)ᵀ Λ^{n+1}
        if rho:
            dU = tuple(a - b for a, b in zip(self.U1, new))
            local += 0.5 * rho / S * _dot(dU, tuple(m * d for d in dU))
            scheme.adjoint(ctx, record, tuple(-rho / S * m * d for d in dU), grad, n=self.n)
            dL = tuple(a - b for a, b in zip(c, self.Lam))
            r = tuple(rho * S * d / m for d in dL)
            local += 0.5 * _dot(dL, r)
            self._costate_gradient(ctx, theta["b"], record, r, grad)
        kernel.release(ctx)
        self._data_sum(grad)
        value = self._total(local, self.reg(theta, grad))
        return value, grad

    def _costate_gradient(self, ctx, b, record, r, grad):
        """Add ∂_θ⟨r, (∂_U g)ᵀ Λ^{n+1}⟩ (r fixed) to ``grad``."""
        scheme, kernel = self.net.scheme, self.net.kernel
        if self.exact:  # IMEX Euler: exact (module docstring)
            U, Z = record
            Q = scheme._ST(1.0, self.Lam1[0])
            D = scheme.dt * scheme.sigma.df(Z) * Q
            E = scheme.dt * scheme.sigma.d2f(Z) * Q * kernel.apply(ctx, r[0])
            kernel.vjp(ctx, r[0], D, grad)
            kernel.vjp(ctx, U, E, grad)
            grad["b"] += E.sum(axis=1)
            return
        # central difference of ∇_θ⟨Λ^{n+1}, g(U ± h r, θ)⟩, O(h²)
        sp = self.net.space
        nU = np.sqrt(sp.sum(_dot(self.U, self.U)))
        nr = np.sqrt(sp.sum(_dot(r, r)))
        if nr == 0.0:
            return
        h = 1e-5 * (1.0 + nU) / nr
        for sign in (1.0, -1.0):
            state = tuple(u + sign * h * ri for u, ri in zip(self.U, r))
            _, rec = scheme.step(ctx, b, state, n=self.n)
            g = grad.zeros_like()
            scheme.adjoint(ctx, rec, self.Lam1, g, n=self.n)
            grad.axpy(sign / (2.0 * h), g)


class ReadoutProblem(_Block):
    """The terminal block over (C, d): Φ(C, d) = (1/S) Σ ℓ(Cᵀ M_L U^{N_t} + d, y)
    (+ E-MSA: (ρS/2)‖Λ^{N_t} − M_L C ∂Φ/∂Ŷ‖²_{M_L⁻¹}, ρ > 0)."""

    def __init__(self, net, U, Lam, misfit_fn, task, rho, S, data_comm=MPI.COMM_SELF):
        super().__init__(net, data_comm)
        self.U, self.Lam, self.misfit_fn, self.task = U, Lam, misfit_fn, task
        self.rho, self.S = float(rho), float(S)

    def value_and_gradient(self, theta: Controls):
        sp, m = self.net.space, self.net.space.m[:, None]
        MU = m * self.U
        Yhat = sp.sum(theta["C"].T @ MU) + theta["d"][:, None]
        misfit, G, _ = self.misfit_fn(Yhat)
        Gd = G.copy()  # cotangent on Ŷ
        gC = np.zeros_like(theta["C"])
        if self.rho:
            CG = theta["C"] @ G
            dL = m * CG - self.Lam
            Delta = self.rho * self.S * dL
            # ∂_θ⟨Δ, C G(Ŷ)⟩ with Δ fixed: Δ Gᵀ, and through G: Hessian of ℓ along CᵀΔ
            gC += Delta @ G.T
            Gd += LOSSES[self.task].hvp(Yhat, sp.sum(theta["C"].T @ Delta), self.S)
        gC += MU @ Gd.T
        grad = Controls({"C": gC, "d": Gd.sum(axis=1)}, theta.comm)
        self._data_sum(grad)
        rows = 0.5 * _dot((dL,), (Delta / m,)) if self.rho else 0.0
        return self._total(rows, replicated=misfit), grad


class EmbeddingProblem(_Block):
    """The initial block over E (E-MSA): ⟨Λ⁰, E X⟩ + (ρ/2S)‖E X − U⁰‖²_{M_L}."""

    def __init__(self, net, X, U, Lam, rho, S, data_comm=MPI.COMM_SELF):
        super().__init__(net, data_comm)
        self.X, self.U, self.Lam, self.rho, self.S = X, U, Lam, float(rho), float(S)

    def value_and_gradient(self, theta: Controls):
        m = self.net.space.m[:, None]
        U0 = theta["E"] @ self.X
        dU = U0 - self.U
        local = float(np.vdot(self.Lam, U0)) + 0.5 * self.rho / self.S * float(np.vdot(dU, m * dU))
        grad = Controls({"E": (self.Lam + self.rho / self.S * m * dU) @ self.X.T}, theta.comm)
        self._data_sum(grad)
        return self._total(local, 0.0), grad


# -- the inner solver ----------------------------------------------------------------
class _InRiesz:
    """A block problem in the variables x̃ = √ω x of a :class:`RieszMap`:
    F̃(x̃) = F(x̃/√ω), ∇F̃ = ∇F/√ω, so Euclidean L-BFGS on x̃ is L-BFGS in the
    L²(M_L) metric."""

    def __init__(self, problem, riesz: RieszMap):
        self.problem, self.riesz = problem, riesz

    def value_and_gradient(self, xt: Controls):
        f, g = self.problem.value_and_gradient(self.riesz.controls_to_theta(xt))
        return f, self.riesz.controls_gradient(g)


def minimise_lbfgs(problem, x0: Controls, iterations: int, memory: int = 10, riesz=None):
    """At most ``iterations`` L-BFGS iterations on ``problem.value_and_gradient``
    from ``x0``: two-loop recursion with the scaling γ = sᵀy/yᵀy (the first step
    −∇F/‖∇F‖), weak Wolfe line search by bisection/doubling (Lewis & Overton,
    c₁ = 10⁻⁴, c₂ = 0.9), so sᵀy > 0 for every stored pair. All inner products
    are :meth:`Controls.dot` over the width ranks: collective and deterministic
    (PETSc TAO LMVM, measured, is not bit-reproducible from run to run, which
    would break bit-for-bit resume). ``riesz`` (a :class:`RieszMap`): the same
    iteration in its metric (on x̃ = √ω x); ``None``: the Euclidean metric of the
    nodal values. Returns (θ, F(x0), F(θ))."""
    if riesz is not None:
        x, f0, f = minimise_lbfgs(
            _InRiesz(problem, riesz), riesz.controls_to_x(x0), iterations, memory
        )
        return riesz.controls_to_theta(x), f0, f
    x = x0.copy()
    f, g = problem.value_and_gradient(x)
    f0 = f
    pairs = []  # (s, y, 1/sᵀy)
    for _ in range(iterations):
        gg = g.dot(g)
        if not gg > 0.0:
            break
        q, alphas = g.copy(), []
        for s_, y_, r_ in reversed(pairs):
            a = r_ * s_.dot(q)
            q.axpy(-a, y_)
            alphas.append(a)
        if pairs:
            s_, y_, _ = pairs[-1]
            q = q * (s_.dot(y_) / y_.dot(y_))
        else:
            q = q * (1.0 / np.sqrt(gg))
        for (s_, y_, r_), a in zip(pairs, reversed(alphas)):
            q.axpy(a - r_ * y_.dot(q), s_)
        d = q * -1.0
        slope = g.dot(d)
        if not slope < 0.0:  # not a descent direction: restart from −∇F
            pairs.clear()
            d, slope = g * (-1.0 / np.sqrt(gg)), -np.sqrt(gg)
        t, lo, hi, accepted = 1.0, 0.0, np.inf, None
        for _ls in range(30):
            xt = x.copy().axpy(t, d)
            ft, gt = problem.value_and_gradient(xt)
            if not ft <= f + 1e-4 * t * slope:
                hi = t
            elif gt.dot(d) < 0.9 * slope:
                lo, accepted = t, (xt, ft, gt)
            else:
                accepted = (xt, ft, gt)
                break
            t = 0.5 * (lo + hi) if np.isfinite(hi) else 2.0 * t
        if accepted is None:
            break
        xt, ft, gt = accepted
        s_, y_ = xt - x, gt - g
        sy = s_.dot(y_)
        if sy > 0.0:
            pairs.append((s_, y_, 1.0 / sy))
            del pairs[:-memory]
        x, f, g = xt, ft, gt
    return x, f0, f


# -- the trainers -------------------------------------------------------------------
MAX_TRIALS = 30  # step-control trials per sweep before giving up (NO_DESCENT)


class EMSA(Trainer):
    """Extended method of successive approximations (Li, Chen, Tai & E 2018); see
    the module docstring.

    Options: ``rho`` (the initial ρ > 0, default 1), ``step_control`` (default
    true: ρ adapted, see below), ``inner_iterations`` (L-BFGS iterations per
    block and sweep, default 5), ``metric`` (``l2``, default: the inner L-BFGS
    in the L²(M_L) metric of the regulariser, mesh-independent; ``euclidean``:
    in nodal coordinates), ``batch_size`` (samples per sweep; None: the full
    batch), ``seed`` (the minibatch stream of
    :class:`~pontryx.solver.data.sampler.Minibatches`, checkpointed).

    Step control. Li et al.'s error estimate (their Theorem 2) bounds
    J(θ_new) − J(θ_old) by minus the sweep's decrease of the augmented
    Hamiltonian plus terms the ρ penalties dominate once ρ exceeds a constant
    of the problem — which is not known (on ellipses with α = 1e-4 a fixed
    ρ = 1 sends J from 0.70 to 5.9 in three sweeps; ρ ≈ 30–100 is needed at the
    start, far less later). So ρ is adapted like a trust region (Levenberg–
    Marquardt): a sweep is accepted iff J(θ_new) ≤ J(θ_old) (the sweep's
    batch); on rejection ρ ← 4ρ and the blocks are solved again from the same
    states and costates; after an accepted sweep whose decrease of J is at
    least ¾ of the predicted Σ_blocks (Eⁿ(θ_old) − Eⁿ(θ_new)), ρ ← ρ/2. So
    E-MSA is a descent method for every ρ₀. After 30 rejections in a row the
    run stops (``failed = "NO_DESCENT"``). ``step_control: false``: fixed ρ
    (Li et al.'s Algorithm 2 as published).

    Each sweep yields one Record of the full-batch J, ∇J and Pontryagin residual
    *after* the update (one extra forward–adjoint sweep; with the full batch it
    provides the states and costates of the next sweep), extra = {"rho": ρ of
    the accepted sweep, "decrease": Σ_blocks (Eⁿ(θ_old) − Eⁿ(θ_new)),
    "rejected": rejected trials before it, "batch": samples}.
    """

    name = "emsa"
    defaults: ClassVar[dict] = {
        "rho": 1.0,
        "step_control": True,
        "inner_iterations": 5,
        "metric": "l2",
        "batch_size": None,
        "seed": 0,
    }

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        opts = self.options
        self._check(opts)
        self.rho = float(opts.get("rho", 0.0))
        self.inner = int(opts["inner_iterations"])
        self.batch_size = opts["batch_size"]
        self.step_control = bool(opts["step_control"])
        self.metric = check_metric(opts["metric"])  # also the metric of ‖∇J‖ in the records
        self.batches = (
            Minibatches.for_functional(rf, self.batch_size, int(opts["seed"]))
            if self.batch_size is not None
            else None
        )
        self._cache = None

    def _check(self, opts):
        rho = opts["rho"]
        if isinstance(rho, bool) or not (isinstance(rho, int | float) and rho > 0):
            raise InputError(f"expected ρ > 0 for {self.name}, got {show(rho)}", "rho")
        inner, bs = opts["inner_iterations"], opts["batch_size"]
        if isinstance(inner, bool) or not (isinstance(inner, int) and inner >= 1):
            raise InputError(f"expected an integer ≥ 1, got {show(inner)}", "inner_iterations")
        if bs is not None and (
            isinstance(bs, bool) or not (isinstance(bs, int) and 1 <= bs <= self.rf.S)
        ):
            raise InputError(
                f"expected null or 1 … {self.rf.S} (the samples), got {show(bs)}", "batch_size"
            )
        if not isinstance(opts["step_control"], bool):
            raise InputError(
                f"expected true or false, got {show(opts['step_control'])}", "step_control"
            )
        seed = opts["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"expected an integer ≥ 0, got {show(seed)}", "seed")

    # -- sweeps -----------------------------------------------------------------
    def _full(self):
        """(J, ∇J, misfit, stat, trajectory) of the full batch at the current controls."""
        c = self._cache
        same = c is not None and all(np.array_equal(v, c[0][k]) for k, v in self.controls.items())
        if c is None or not self.rf.net.space.comm.allreduce(same, op=MPI.LAND):
            rf = self.rf
            traj = rf.trajectory(self.controls)
            J, grad, misfit, stat = rf.reduce(self.controls, traj.gradient, traj.misfit, traj.stat)
            self._cache = c = (self.controls.copy(), (J, grad, misfit, stat, traj))
        return c[1]

    def _layer_regulariser(self, n, old):
        """Rⁿ of layer n with its neighbours held at ``old`` (Jacobi)."""
        regulariser = self.rf.regulariser

        def reg(theta, grad):
            return regulariser.layer(n, theta, old, grad)

        return reg

    def blocks(self, traj, X, misfit_fn, S, rho=None):
        """(names, problem) of every block of one sweep: the layers, then the
        readout and the embedding when trainable (ρ: default the current one)."""
        net, old = self.rf.net, self.controls
        U, Lam = traj.states, traj.costates
        rho = self.rho if rho is None else rho
        comm = self.rf.data_comm
        for n in range(net.layers):
            reg = self._layer_regulariser(n, old)
            yield n, LayerProblem(net, n, U[n], U[n + 1], Lam[n], Lam[n + 1], rho, S, reg, comm)
        if "C" in net.trainable:
            yield (
                "readout",
                ReadoutProblem(net, U[-1][0], Lam[-1][0], misfit_fn, self.rf.task, rho, S, comm),
            )
        if "E" in net.trainable:
            yield "embedding", EmbeddingProblem(net, X, U[0][0], Lam[0][0], rho, S, comm)

    def _block_controls(self, key, controls):
        net = self.rf.net
        if key == "readout":
            return controls.subset(("C", "d"))
        if key == "embedding":
            return controls.subset(("E",))
        return Controls({k: controls[k][key] for k in net.layer_names}, controls.comm)

    def _block_riesz(self, key, block: Controls):
        """The Riesz map of a block's controls (``metric: l2``), else None."""
        return RieszMap(self.rf.net, block, "l2") if self.metric == "l2" else None

    def _batch(self):
        """(batch functional, its trajectory, its J) at the current controls."""
        if self.batch_size is None:
            J, _, _, _, traj = self._full()
            return self.rf, traj, J
        rfb = self.rf.batch(self.batches.local(self.iteration))
        traj = rfb.trajectory(self.controls)
        return rfb, traj, rfb.reduce(self.controls, traj.gradient, traj.misfit, traj.stat)[0]

    def sweep(self, traj=None, rfb=None, rho=None):
        """One (E-)MSA update from the states and costates ``traj`` of batch
        ``rfb`` (default: this iteration's batch at the current controls) with
        ρ (default: the current one); returns (θ_new, Σ_blocks of the decrease)."""
        if traj is None:
            rfb, traj, _ = self._batch()
        new = self.controls.copy()
        decrease = 0.0
        for key, problem in self.blocks(traj, rfb.X, rfb._misfit, rfb.S, rho):
            x0 = self._block_controls(key, self.controls)
            riesz = self._block_riesz(key, x0)
            theta, f0, f = minimise_lbfgs(problem, x0, self.inner, riesz=riesz)
            target = self._block_controls(key, new)
            for k in theta:
                target[k][...] = theta[k]
            decrease += f0 - f
        return new, decrease

    def _set(self, controls):
        for k in self.controls:
            self.controls[k][...] = controls[k]

    def _trial(self, rfb, candidate) -> float:
        """J of the sweep's batch at ``candidate``; the controls are left there."""
        self._set(candidate)
        return float(self._full()[0] if rfb is self.rf else rfb(self.controls))

    def _step(self):
        """One accepted sweep (the controls updated); its record extras, or None
        if no trial decreased J."""
        rfb, traj, J_old = self._batch()
        old = self.controls.copy()
        for rejected in range(MAX_TRIALS):
            rho = self.rho
            new, decrease = self.sweep(traj, rfb, rho)
            if not self.step_control:
                self._set(new)
                return {"rho": rho, "decrease": decrease, "rejected": 0}
            J_new = self._trial(rfb, new)
            if J_new <= J_old:
                if J_old - J_new >= 0.75 * decrease:
                    self.rho = 0.5 * rho
                return {"rho": rho, "decrease": decrease, "rejected": rejected}
            self._set(old)
            self.rho = 4.0 * rho
        return None

    def _iterate(self, n):
        for _ in range(n):
            if self.failed:
                return
            last = self.controls.copy()
            extra = self._step()
            if extra is None:
                self._set(last)
                self.failed = "NO_DESCENT"
                return
            self.iteration += 1
            J, grad, misfit, stat, _ = self._full()
            self.rf.last = {"misfit": misfit, "stat": stat, "J": J, "gradient": grad}
            batch = self.rf.S if self.batch_size is None else self.batch_size
            rec = self.record(J, grad, **extra, batch=batch)
            try:
                check_finite(self.iteration, rec.loss, rec.grad_norm)
            except NonFiniteError:
                self._set(last)
                self.iteration -= 1
                self._cache = None
                raise
            yield rec

    # -- checkpointing --------------------------------------------------------------
    def state(self):
        out = super().state()
        out["msa/rho"] = np.array(self.rho)
        out["msa/step"] = np.array(getattr(self, "step", 1.0))
        if self.batches is not None:
            out.update({f"msa/{k}": v for k, v in self.batches.state().items()})
        return out

    def restore(self, state, controls_only=False):
        super().restore(state)
        self._cache, self.failed = None, None
        if controls_only:
            return
        if "msa/rho" in state:
            self.rho = float(state["msa/rho"])
            self.step = float(state["msa/step"])
        if self.batches is not None and "msa/perm" in state:
            self.batches.restore({k[4:]: v for k, v in state.items() if k.startswith("msa/")})
        self._cache, self.failed = None, None


class MSA(EMSA):
    """The plain method of successive approximations (ρ = 0): every block
    minimises only its Hamiltonian part (−Hⁿ, the readout misfit) with a few
    L-BFGS iterations. Not a descent method in general: with weak
    regularisation the layerwise maximiser of Hⁿ saturates σ (θ → ∞ in the
    direction of the costate) and J explodes. Options as :class:`EMSA` without
    ``rho``; ``step_control`` (default true) damps the sweep by a backtracking
    line search on J along it, θ_old + λ(θ_MSA − θ_old), λ ← λ/4 until J does
    not increase (each trial one forward–adjoint sweep, no block solves), the
    next sweep starting from min(1, 2λ); extra["step"] = λ. ``step_control:
    false`` is Li et al.'s Algorithm 1 as published. The embedding E cannot be
    trained (its Hamiltonian ⟨Λ⁰, E X⟩ is linear in E)."""

    name = "msa"
    defaults: ClassVar[dict] = {k: v for k, v in EMSA.defaults.items() if k != "rho"}

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        self.rho, self.step = 0.0, 1.0

    def _check(self, opts):
        if "E" in self.rf.net.trainable:
            raise InputError(
                "method 'msa' cannot train the embedding (its Hamiltonian is linear in E); "
                "use 'emsa'",
                "method",
            )
        super()._check({**opts, "rho": 1.0})  # plain MSA has ρ = 0

    def _step(self):
        rfb, traj, J_old = self._batch()
        old = self.controls.copy()
        new, decrease = self.sweep(traj, rfb, 0.0)
        extra = {"rho": 0.0, "decrease": decrease, "rejected": 0, "step": 1.0}
        if not self.step_control:
            self._set(new)
            return extra
        direction = new - old
        lam = self.step
        for rejected in range(MAX_TRIALS):
            if self._trial(rfb, old.copy().axpy(lam, direction)) <= J_old:
                self.step = min(1.0, 2.0 * lam) if rejected == 0 else lam
                return {**extra, "rejected": rejected, "step": lam}
            lam *= 0.25
        return None
