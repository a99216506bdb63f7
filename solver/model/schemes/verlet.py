"""The Hamiltonian / Verlet network (order 2, ε = 0; Haber–Ruthotto 2017,
Chang et al. 2018), with K* = M_L⁻¹ Kᵀ M_L the discrete 𝒦*:

    V^{n+1} = Vⁿ − cₙ Δt σ(K* Uⁿ + b),  U^{n+1} = Uⁿ + Δt σ(K V^{n+1} + b).

V is staggered (V^{n+1} ≈ v(t_{n+½})), so the first layer takes the half step
c₀ = ½ from V⁰ = v(0) = 0 (Störmer–Verlet start) and cₙ = 1 after it; with
c₀ = 1 the scheme would be first order (measured: 1.03). Order 2 holds for
controls constant in depth; both half-updates share θⁿ, so depth-varying
controls (which the staggered grid would need at t_n and t_{n+½}) give order 1.
Reversible, so its adjoint may recompute states backwards.

Adjoint: D₂ = Δt σ'(Y₂)∘Λ_U, Λ_V ← Λ_V + KᵀD₂, D₁ = −cₙΔt σ'(Y₁)∘Λ_V,
Λ_U ← Λ_U + M_L K (M_L⁻¹ D₁), with ⟨D₁, K* U⟩ = ⟨M_L U, K (M_L⁻¹ D₁)⟩ for the
kernel gradient. The tangent and second-order steps differentiate these lines.

With noise in depth (:mod:`..noise`) g ΔWⁿ is added to the U update (and
subtracted when a state is recomputed backwards); the noise is additive, so the
adjoint lines do not change.
"""

from __future__ import annotations

from pontryx.solver.model.schemes.base import Scheme, vjp2
from pontryx.solver.model.workspace import HEAP

__all__ = ["Verlet"]


class Verlet(Scheme):
    name = "verlet"
    order = 2
    n_states = 2
    reversible = True
    needs_zero_epsilon = True
    implicit_fractions = ()
    records = 4

    def initial_state(self, U0):
        return (U0, 0.0 * U0)

    def initial_tangent(self, dU0):
        return (dU0, 0.0 * dU0)

    @staticmethod
    def _c(n):
        return 0.5 if n == 0 else 1.0

    def step(self, ctx, b, state, n=None, ws=HEAP, noise=None, record="all"):
        U, V = state
        dt, f, K = self.dt, self.sigma.f, self.kernel
        Y1 = K.apply_adjoint(ctx, U)
        Y1 += b[:, None]
        Vn = V - self._c(n) * dt * f(Y1)
        Y2 = K.apply(ctx, Vn)
        Y2 += b[:, None]
        Un = U + dt * f(Y2)
        if noise is not None:
            Un += noise
        return (Un, Vn), (U, Vn, Y1, Y2)

    def reverse(self, ctx, b, state, n=None, ws=HEAP, noise=None):
        """(Uⁿ, Vⁿ) and the layer's record, recomputed from (U^{n+1}, V^{n+1})."""
        Un1, Vn1 = state
        dt, f, K = self.dt, self.sigma.f, self.kernel
        Y2 = K.apply(ctx, Vn1)
        Y2 += b[:, None]
        U = Un1 - dt * f(Y2)
        if noise is not None:
            U -= noise
        Y1 = K.apply_adjoint(ctx, U)
        Y1 += b[:, None]
        return (U, Vn1 + self._c(n) * dt * f(Y1)), (U, Vn1, Y1, Y2)

    def adjoint(self, ctx, record, lam, grad, n=None, ws=HEAP):
        U, Vn, Y1, Y2 = record
        LU, LV = lam
        dt, df, K = self.dt, self.sigma.df, self.kernel
        m = self.space.m[:, None]
        D2 = dt * df(Y2) * LU
        LV = LV + K.backward(ctx, Vn, D2, grad)
        D1 = -self._c(n) * dt * df(Y1) * LV
        if grad is not None:
            # ⟨D1, K* U⟩ = ⟨M_L U, K (M_L⁻¹ D1)⟩
            K.vjp(ctx, D1 / m, m * U, grad)
            grad["b"] += D1.sum(axis=1) + D2.sum(axis=1)
        return (LU + m * K.apply(ctx, D1 / m), LV)

    def tangent(self, ctx, dctx, db, record, dstate, n=None):
        U, Vn, Y1, Y2 = record
        dU, dV = dstate
        dt, df, K = self.dt, self.sigma.df, self.kernel
        dY1 = K.apply_adjoint(ctx, dU) + K.apply_adjoint(dctx, U) + db[:, None]
        dVn = dV - self._c(n) * dt * df(Y1) * dY1
        dY2 = K.apply(ctx, dVn) + K.apply(dctx, Vn) + db[:, None]
        return (dU + dt * df(Y2) * dY2, dVn), (dU, dVn, dY1, dY2)

    def adjoint2(self, ctx, dctx, dtheta, record, trecord, lam, dlam, grad, dgrad, n=None):
        U, Vn, Y1, Y2 = record
        dU, dVn, dY1, dY2 = trecord
        (LU, LV), (dLU, dLV) = lam, dlam
        dt, K, c = self.dt, self.kernel, self._c(n)
        m = self.space.m[:, None]
        df1, df2 = self.sigma.df(Y1), self.sigma.df(Y2)
        D2 = dt * df2 * LU
        dD2 = dt * (self.sigma.d2f(Y2) * dY2 * LU + df2 * dLU)
        LV = LV + K.apply_T(ctx, D2)
        dLV = dLV + K.apply_T(ctx, dD2) + K.apply_T(dctx, D2)
        D1 = -c * dt * df1 * LV
        dD1 = -c * dt * (self.sigma.d2f(Y1) * dY1 * LV + df1 * dLV)
        vjp2(K, ctx, dtheta, Vn, dVn, D2, dD2, grad, dgrad)
        # ⟨D1, K* U⟩ = ⟨M_L U, K (M_L⁻¹ D1)⟩: the kernel sees (M_L⁻¹ D1, M_L U)
        vjp2(K, ctx, dtheta, D1 / m, dD1 / m, m * U, m * dU, grad, dgrad)
        grad["b"] += D1.sum(axis=1) + D2.sum(axis=1)
        dgrad["b"] += dD1.sum(axis=1) + dD2.sum(axis=1)
        LU_out = LU + m * K.apply(ctx, D1 / m)
        dLU_out = dLU + m * (K.apply(ctx, dD1 / m) + K.apply(dctx, D1 / m))
        return (LU_out, LV), (dLU_out, dLV)
