"""The block problems of one (E-)MSA sweep: each layer's augmented Hamiltonian,
the readout and the embedding (Li, Chen, Tai & E 2018; see :mod:`.msa` for the
signs, the terms and their gradients).

Each block is a function of its own controls only, with the states Uⁿ and
costates Λⁿ of one forward–backward sweep held fixed; its value and gradient
are summed over the data ranks (the samples) and the width ranks (the rows).
"""

from __future__ import annotations

from mpi4py import MPI

import numpy as np

from pontryx.solver.model.controls import Controls
from pontryx.solver.model.loss import LOSSES

__all__ = ["Block", "EmbeddingProblem", "LayerProblem", "ReadoutProblem", "Restricted"]


# -- block problems -----------------------------------------------------------------
def _dot(a, b) -> float:
    """Σ over tuple components of the local Euclidean inner products."""
    return sum(float(np.vdot(x, y)) for x, y in zip(a, b))


class Block:
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

    curvature = None

    def without_rho(self, theta: Controls) -> float:
        """The block's objective without E-MSA's ρ terms (and the state curvature):
        −Hⁿ(Uⁿ, Pⁿ⁺¹, θ) for a layer, Φ for the readout, ⟨Λ⁰, E X⟩ for the
        embedding. Collective."""
        saved = self.rho, self.curvature
        self.rho, self.curvature = 0.0, None
        try:
            return self.value_and_gradient(theta)[0]
        finally:
            self.rho, self.curvature = saved

    def value_and_gradient(self, theta: Controls):
        raise NotImplementedError


class StateCurvature:
    """The second-order model of the cost-to-go in a state U (Gauss–Newton):

        ½ Σ_s (Λ_s δU_s)ᵀ ∇²ℓ_s (Λ_s δU_s) + (μ/2) ‖δU‖²_{M_L},   δU = U − U_old,

    with Λ_s = ∂Ŷ_s/∂U (the output sensitivities of the sweep, a K × N map per
    sample: ``sens[k]`` = ∂Ŷ_k/∂U as a state tuple) and ∇²ℓ_s the loss Hessian at
    the sweep's outputs Ŷ (``hvp``, already divided by S); μ ≥ 0 damps the model
    (E-MSA's ρ/S). This is the quadratic term of the expansion of J along the
    state that E-MSA's feasibility penalty (ρ/2S)‖δU‖² approximates by a
    multiple of the mass matrix (Li et al. 2018, their error estimate); with the
    Gauss–Newton term the block problems see how much a change of state costs
    downstream, layer by layer (as the second-order costate of differential
    dynamic programming, Mayne 1966, in its Gauss–Newton form)."""

    def __init__(self, net, U_old, sens, Yhat, hvp, S, mu):
        self.net, self.U_old, self._sens, self._stacked = net, U_old, sens, None
        self.Yhat, self.hvp, self.S, self.mu = Yhat, hvp, float(S), float(mu)

    def __call__(self, U) -> tuple[float, float, tuple]:
        """(the damping's local value over this rank's rows, the Gauss–Newton value
        summed over the width ranks, the cotangent ∂/∂U as a state tuple)."""
        sp, m = self.net.space, self.net.space.m[:, None]
        dU = tuple(a - b for a, b in zip(U, self.U_old, strict=True))
        a = sum(
            np.einsum("iks,is->ks", L, d) for L, d in zip(self.sens, dU, strict=True)
        )  # (K, S_local): Λ δU per sample, this rank's rows
        a = sp.sum(a)
        Ha = self.hvp(self.Yhat, a, self.S)
        gn = 0.5 * float(np.vdot(a, Ha))
        rows = 0.5 * self.mu * _dot(dU, tuple(m * d for d in dU))
        cot = tuple(
            self.mu * m * d + np.einsum("iks,ks->is", L, Ha)
            for L, d in zip(self.sens, dU, strict=True)
        )
        return rows, gn, cot

    @property
    def sens(self) -> tuple:
        """Per state component c: Λ_k[c] of all k as one (rows, K, S) array (one
        contraction over the rows per call instead of K), stacked at first use."""
        if self._stacked is None:
            self._stacked = tuple(
                np.stack([Lk[c] for Lk in self._sens], axis=1) for c in range(len(self.U_old))
            )
        return self._stacked


class LayerProblem(Block):
    """Layer n's E-MSA objective Eⁿ(θ) of the module docstring (ρ = 0: MSA).

    ``theta`` holds the layer's controls (kernel names and ``b``, owned rows);
    ``U``, ``U1``, ``Lam``, ``Lam1`` are Uⁿ, U^{n+1}, Λⁿ, Λ^{n+1} (tuples);
    ``reg(theta, grad)`` returns this width rank's part of Rⁿ and adds ∇Rⁿ.
    With ``curvature`` (a :class:`StateCurvature` in U^{n+1}) the ρ terms give way
    to it: Eⁿ(θ) = −Hⁿ(θ) + ½ δUᵀ(𝓗_GN + (ρ/S) M_L) δU, δU = gⁿ(Uⁿ, θ) − U^{n+1}."""

    def __init__(
        self, net, n, U, U1, Lam, Lam1, rho, S, reg, data_comm=MPI.COMM_SELF, curvature=None
    ):
        super().__init__(net, data_comm)
        self.n, self.U, self.U1, self.Lam, self.Lam1 = n, U, U1, Lam, Lam1
        self.rho, self.S, self.reg = float(rho), float(S), reg
        self.exact = net.scheme.name == "imex_euler"
        self.curvature = curvature

    def value_and_gradient(self, theta: Controls):
        net, scheme, kernel = self.net, self.net.scheme, self.net.kernel
        m = net.space.m[:, None]
        rho, S = self.rho, self.S
        grad = theta.zeros_like()
        ctx = kernel.layer({k: theta[k] for k in kernel.shapes()})
        # the record of the adjoint step alone unless the costate term needs the full one
        kind = "all" if rho and self.curvature is None else "adjoint"
        new, record = scheme.step(ctx, theta["b"], self.U, n=self.n, record=kind)
        local = _dot(self.Lam1, new)
        width_summed = 0.0
        # The θ-gradients of the terms in U^{n+1} = gⁿ(Uⁿ, θ) are (∂_θ g)ᵀ of their
        # U^{n+1}-cotangents: linear in them, so one adjoint step takes their sum.
        if self.curvature is not None:
            rows, width_summed, cot = self.curvature(new)
            local += rows
            total = tuple(a + b for a, b in zip(self.Lam1, cot, strict=True))
            scheme.adjoint(ctx, record, total, grad, n=self.n)
        elif rho:
            c = scheme.adjoint(ctx, record, self.Lam1, None, n=self.n)  # c(θ) = (∂_U g)ᵀ Λ^{n+1}
            dU = tuple(a - b for a, b in zip(self.U1, new))
            local += 0.5 * rho / S * _dot(dU, tuple(m * d for d in dU))
            total = tuple(a - rho / S * m * d for a, d in zip(self.Lam1, dU, strict=True))
            scheme.adjoint(ctx, record, total, grad, n=self.n)
            dL = tuple(a - b for a, b in zip(c, self.Lam))
            r = tuple(rho * S * d / m for d in dL)
            local += 0.5 * _dot(dL, r)
            self._costate_gradient(ctx, theta["b"], record, r, grad)
        else:  # MSA (ρ = 0): −Hⁿ alone
            scheme.adjoint(ctx, record, self.Lam1, grad, n=self.n)
        kernel.release(ctx)
        self._data_sum(grad)
        value = self._total(local, self.reg(theta, grad), width_summed)
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


class ReadoutProblem(Block):
    """The terminal block over (C, d): Φ(C, d) = (1/S) Σ ℓ(Cᵀ M_L U^{N_t} + d, y)
    (+ E-MSA: (ρS/2)‖Λ^{N_t} − M_L C ∂Φ/∂Ŷ‖²_{M_L⁻¹}, ρ > 0) + R(C, d), R = ``reg``
    (:meth:`~pontryx.solver.adjoint.reduced.Regulariser.outer`; None: 0)."""

    def __init__(self, net, U, Lam, misfit_fn, task, rho, S, data_comm=MPI.COMM_SELF, reg=None):
        super().__init__(net, data_comm)
        self.U, self.Lam, self.misfit_fn, self.task = U, Lam, misfit_fn, task
        self.rho, self.S, self.reg = float(rho), float(S), reg

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
        reg = self.reg(theta, grad) if self.reg is not None else 0.0
        return self._total(rows, reg, replicated=misfit), grad


class EmbeddingProblem(Block):
    """The initial block over E (E-MSA): ⟨Λ⁰, E X⟩ + (ρ/2S)‖E X − U⁰‖²_{M_L} + R(E);
    with ``curvature`` (in U⁰) its model ½ δUᵀ(𝓗_GN + (ρ/S) M_L) δU instead of the
    ρ term; R = ``reg`` as for :class:`ReadoutProblem`."""

    def __init__(self, net, X, U, Lam, rho, S, data_comm=MPI.COMM_SELF, curvature=None, reg=None):
        super().__init__(net, data_comm)
        self.X, self.U, self.Lam, self.rho, self.S = X, U, Lam, float(rho), float(S)
        self.curvature, self.reg = curvature, reg

    def value_and_gradient(self, theta: Controls):
        m = self.net.space.m[:, None]
        U0 = theta["E"] @ self.X
        local, width_summed = float(np.vdot(self.Lam, U0)), 0.0
        if self.curvature is not None:
            state = self.net.scheme.initial_state(U0)  # (U⁰, V⁰ = 0 for Verlet)
            rows, width_summed, (cot, *_) = self.curvature(state)
            local += rows
        else:
            dU = U0 - self.U
            local += 0.5 * self.rho / self.S * float(np.vdot(dU, m * dU))
            cot = self.rho / self.S * m * dU
        grad = Controls({"E": (self.Lam + cot) @ self.X.T}, theta.comm)
        self._data_sum(grad)
        reg = self.reg(theta, grad) if self.reg is not None else 0.0
        return self._total(local, reg, width_summed), grad


class Restricted:
    """A block problem as a function of some of its controls, the others held at
    ``fixed`` (the discrete-weight step re-solves a layer's b with its discrete
    kernel fixed: :mod:`.discrete`)."""

    def __init__(self, problem, fixed: dict):
        self.problem, self.fixed = problem, fixed

    def value_and_gradient(self, theta: Controls):
        f, g = self.problem.value_and_gradient(Controls({**self.fixed, **theta}, theta.comm))
        return f, g.subset(tuple(theta))

    def __call__(self, theta: Controls) -> float:
        return self.value_and_gradient(theta)[0]
