"""The classical Runge–Kutta network (order 4, ε = 0): the explicit RK of DESIGN.md §2
for u' = σ(𝒦u + b), a layer's controls θⁿ held over [t_n, t_{n+1}] (Kutta 1901's
tableau; residual networks read as ODE discretisations: Haber & Ruthotto 2017,
Lu et al., ICML 2018):

    Y₁ = Uⁿ,  Yᵢ = Uⁿ + cᵢ Δt σ(Z_{i−1}) (c = 0, ½, ½, 1),  Zᵢ = K Yᵢ + b,
    U^{n+1} = Uⁿ + Δt Σᵢ βᵢ σ(Zᵢ),   β = (1, 2, 2, 1)/6.

Adjoint (L = Λ^{n+1}), stages in reverse, with Gᵢ the cotangent of σ(Zᵢ):
G₄ = Δt β₄ L, Gᵢ = Δt βᵢ L + c_{i+1} Δt L_{i+1} (i < 4); Dᵢ = σ'(Zᵢ)∘Gᵢ,
Lᵢ = Kᵀ Dᵢ; Λⁿ = L + Σᵢ Lᵢ; ∂J/∂b = Σᵢ Dᵢ 1 and ∂J/∂θ_K = Σᵢ ∂_θ⟨Dᵢ, K(θ) Yᵢ⟩.
The tangent and second-order steps differentiate these lines (product rule,
σ'' for the derivative of σ'), as :mod:`.midpoint` does for two stages.

An explicit scheme in the width diffusion would be bound by Δt ≲ h²/ε, so this
scheme takes ε = 0 (``needs_zero_epsilon``; IMEX Euler and midpoint treat εΔ
implicitly). Order 4 holds for controls constant in depth; layer controls sampled
from smooth fields θ(t) are themselves a midpoint-rule approximation, so the
outputs then converge at order 2 (both measured in tests/test_forward.py). With
noise in depth (:mod:`..noise`) the increment g ΔWⁿ is added to U^{n+1}
(Euler–Maruyama for the noise, which is additive: strong and weak order 1).
"""

from __future__ import annotations

from pontryx.solver.model.schemes.base import Scheme, vjp2
from pontryx.solver.model.workspace import HEAP

__all__ = ["RK4"]

#: Butcher tableau of the classical RK4: stage i starts from Uⁿ + cᵢΔt σ(Z_{i−1})
C = (0.0, 0.5, 0.5, 1.0)
BETA = (1.0 / 6.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 6.0)


class RK4(Scheme):
    name = "rk4"
    order = 4
    needs_zero_epsilon = True
    stage_fractions = C
    implicit_fractions = ()
    records = 8

    def step(self, ctx, b, state, n=None, ws=HEAP, noise=None, record="all"):
        (U,) = state
        dt, f, K = self.dt, self.sigma.f, self.kernel
        Ys, Zs = [], []
        Un = U.copy()
        s = None
        for c, beta in zip(C, BETA):
            Y = U if s is None else U + (c * dt) * s
            Z = K.apply(ctx, Y, ws)
            Z += b[:, None]
            s = f(Z)
            Un += (beta * dt) * s
            Ys.append(Y)
            Zs.append(Z)
        if noise is not None:
            Un += noise
        if record is None:
            ws.give(*Zs)
            return (Un,), None
        return (Un,), (*Ys, *Zs)

    def adjoint(self, ctx, record, lam, grad, n=None, ws=HEAP):
        Ys, Zs = record[:4], record[4:]
        (L,) = lam
        dt, df, K = self.dt, self.sigma.df, self.kernel
        Ln = L.copy()
        Li = None  # L_{i+1} = Kᵀ D_{i+1}
        for i in reversed(range(4)):
            G = (dt * BETA[i]) * L
            if Li is not None:
                G += (C[i + 1] * dt) * Li
                ws.give(Li)
            D = df(Zs[i]) * G
            if grad is not None:
                grad["b"] += D.sum(axis=1)
            Li = K.backward(ctx, Ys[i], D, grad, ws)
            Ln += Li
        ws.give(Li)
        return (Ln,)

    def tangent(self, ctx, dctx, db, record, dstate, n=None):
        Ys, Zs = record[:4], record[4:]
        (dU,) = dstate
        dt, df, K = self.dt, self.sigma.df, self.kernel
        dYs, dZs = [], []
        dUn = dU.copy()
        ds = None
        for i, (c, beta) in enumerate(zip(C, BETA)):
            dY = dU if ds is None else dU + (c * dt) * ds
            dZ = K.apply(ctx, dY) + K.apply(dctx, Ys[i]) + db[:, None]
            ds = df(Zs[i]) * dZ
            dUn += (beta * dt) * ds
            dYs.append(dY)
            dZs.append(dZ)
        return (dUn,), (*dYs, *dZs)

    def adjoint2(self, ctx, dctx, dtheta, record, trecord, lam, dlam, grad, dgrad, n=None):
        Ys, Zs = record[:4], record[4:]
        dYs, dZs = trecord[:4], trecord[4:]
        (L,), (dL,) = lam, dlam
        dt, K = self.dt, self.kernel
        Ln, dLn = L.copy(), dL.copy()
        Li = dLi = None
        for i in reversed(range(4)):
            G, dG = (dt * BETA[i]) * L, (dt * BETA[i]) * dL
            if Li is not None:
                G += (C[i + 1] * dt) * Li
                dG += (C[i + 1] * dt) * dLi
            s1, s2 = self.sigma.df(Zs[i]), self.sigma.d2f(Zs[i])
            D = s1 * G
            dD = s2 * dZs[i] * G + s1 * dG
            vjp2(K, ctx, dtheta, Ys[i], dYs[i], D, dD, grad, dgrad)
            grad["b"] += D.sum(axis=1)
            dgrad["b"] += dD.sum(axis=1)
            Li = K.apply_T(ctx, D)
            dLi = K.apply_T(ctx, dD) + K.apply_T(dctx, D)
            Ln += Li
            dLn += dLi
        return (Ln,), (dLn,)
