"""IMEX midpoint (order 2; ARS(1,2,2): Crank–Nicolson in the diffusion, explicit
midpoint in σ; with ε = 0 the explicit midpoint ResNet):

    Z₁ = K Uⁿ + b,  U* = S_{Δt/2}(Uⁿ + ½Δt σ(Z₁)),  Z₂ = K U* + b,
    U^{n+1} = 2U* − Uⁿ − Δt σ(Z₁) + Δt σ(Z₂)   (= Uⁿ + Δt σ(Z₂) when ε = 0).

Adjoint (L = Λ^{n+1}): D₂ = Δt σ'(Z₂)∘L, L* = KᵀD₂; for ε = 0 L_Y = L*,
D₁ = ½Δt σ'(Z₁)∘L_Y, Λⁿ = L + L_Y + KᵀD₁; for ε > 0 L_Y = S_{Δt/2}ᵀ(L* + 2L),
D₁ = σ'(Z₁)∘(½Δt L_Y − Δt L), Λⁿ = L_Y − L + KᵀD₁; ∂J/∂θ from ⟨D₂, K U*⟩ and
⟨D₁, K Uⁿ⟩, ∂J/∂b = (D₁ + D₂) 1. The tangent and second-order steps
differentiate these lines (product rule, σ'' for the derivative of σ').

With noise in depth (:mod:`..noise`) the half step takes ½ g ΔWⁿ,
U* = S_{Δt/2}(Uⁿ + ½Δt σ(Z₁) + ½ g ΔWⁿ), so that U^{n+1} gains S_{Δt/2} g ΔWⁿ
(g ΔWⁿ when ε = 0); additive noise leaves the adjoint, tangent and second-order
lines unchanged. The scheme is then of strong and weak order 1 (not 2).
"""

from __future__ import annotations

from pontryx.solver.model.schemes.base import Scheme, vjp2
from pontryx.solver.model.workspace import HEAP

__all__ = ["IMEXMidpoint"]


class IMEXMidpoint(Scheme):
    name = "midpoint"
    order = 2
    stage_fractions = (0.0, 0.5)
    implicit_fractions = (0.5,)
    records = 4

    def step(self, ctx, b, state, n=None, ws=HEAP, noise=None, record="all"):
        (U,) = state
        dt, f, K = self.dt, self.sigma.f, self.kernel
        Z1 = K.apply(ctx, U, ws)
        Z1 += b[:, None]
        s1 = f(Z1)
        Y = U + 0.5 * dt * s1
        if noise is not None:  # half the increment in the half step
            Y += 0.5 * noise
        Us = self._S(0.5, Y)
        Z2 = K.apply(ctx, Us, ws)
        Z2 += b[:, None]
        if self.epsilon == 0.0:
            Un = U + dt * f(Z2)
            if noise is not None:
                Un += noise
        else:
            Un = 2.0 * Us - U + dt * (f(Z2) - s1)
        return (Un,), (U, Z1, Us, Z2)

    def adjoint(self, ctx, record, lam, grad, n=None, ws=HEAP):
        U, Z1, Us, Z2 = record
        (L,) = lam
        dt, df, K = self.dt, self.sigma.df, self.kernel
        D2 = dt * df(Z2) * L
        Ls = K.backward(ctx, Us, D2, grad, ws)
        if self.epsilon == 0.0:
            LY = Ls
            D1 = 0.5 * dt * df(Z1) * LY
            Ln = L + LY
        else:
            LY = self._ST(0.5, Ls + 2.0 * L)
            D1 = df(Z1) * (0.5 * dt * LY - dt * L)
            Ln = LY - L
        ws.give(Ls)
        if grad is not None:
            grad["b"] += D1.sum(axis=1) + D2.sum(axis=1)
        KD1 = K.backward(ctx, U, D1, grad, ws)
        Ln += KD1
        ws.give(KD1)
        return (Ln,)

    def tangent(self, ctx, dctx, db, record, dstate, n=None):
        U, Z1, Us, Z2 = record
        (dU,) = dstate
        dt, df, K = self.dt, self.sigma.df, self.kernel
        dZ1 = K.apply(ctx, dU) + K.apply(dctx, U) + db[:, None]
        ds1 = df(Z1) * dZ1
        dUs = self._S(0.5, dU + 0.5 * dt * ds1)
        dZ2 = K.apply(ctx, dUs) + K.apply(dctx, Us) + db[:, None]
        ds2 = df(Z2) * dZ2
        if self.epsilon == 0.0:
            dUn = dU + dt * ds2
        else:
            dUn = 2.0 * dUs - dU + dt * (ds2 - ds1)
        return (dUn,), (dU, dZ1, dUs, dZ2)

    def adjoint2(self, ctx, dctx, dtheta, record, trecord, lam, dlam, grad, dgrad, n=None):
        U, Z1, Us, Z2 = record
        dU, dZ1, dUs, dZ2 = trecord
        (L,), (dL,) = lam, dlam
        dt, K = self.dt, self.kernel
        df1, df2 = self.sigma.df(Z1), self.sigma.df(Z2)
        d2f1, d2f2 = self.sigma.d2f(Z1), self.sigma.d2f(Z2)
        D2 = dt * df2 * L
        dD2 = dt * (d2f2 * dZ2 * L + df2 * dL)
        Ls = K.apply_T(ctx, D2)
        dLs = K.apply_T(ctx, dD2) + K.apply_T(dctx, D2)
        if self.epsilon == 0.0:
            LY, dLY = Ls, dLs
            D1 = 0.5 * dt * df1 * LY
            dD1 = 0.5 * dt * (d2f1 * dZ1 * LY + df1 * dLY)
            Ln, dLn = L + LY, dL + dLY
        else:
            LY, dLY = self._ST(0.5, Ls + 2.0 * L), self._ST(0.5, dLs + 2.0 * dL)
            D1 = df1 * (0.5 * dt * LY - dt * L)
            dD1 = d2f1 * dZ1 * (0.5 * dt * LY - dt * L) + df1 * (0.5 * dt * dLY - dt * dL)
            Ln, dLn = LY - L, dLY - dL
        vjp2(K, ctx, dtheta, Us, dUs, D2, dD2, grad, dgrad)
        vjp2(K, ctx, dtheta, U, dU, D1, dD1, grad, dgrad)
        grad["b"] += D1.sum(axis=1) + D2.sum(axis=1)
        dgrad["b"] += dD1.sum(axis=1) + dD2.sum(axis=1)
        Ln = Ln + K.apply_T(ctx, D1)
        dLn = dLn + K.apply_T(ctx, dD1) + K.apply_T(dctx, D1)
        return (Ln,), (dLn,)
