"""IMEX Euler (order 1), DESIGN.md §2: explicit in σ, implicit in the diffusion.

    Zⁿ = Kⁿ Uⁿ + bⁿ,  U^{n+1} = S_Δt (Uⁿ + Δt σ(Zⁿ))
    adjoint:   Qⁿ = S_Δtᵀ Λ^{n+1},  Dⁿ = Δt σ'(Zⁿ)∘Qⁿ,  Λⁿ = Qⁿ + KⁿᵀDⁿ,
               ∂J/∂bⁿ = Dⁿ 1,  ∂J/∂θ_K = ∂⟨Dⁿ, K(θ) Uⁿ⟩/∂θ
    tangent:   dZ = K dU + K'[dθ] U + db,  dU^{n+1} = S_Δt (dU + Δt σ'(Z)∘dZ)
    2nd order: dQ = S_Δtᵀ dΛ^{n+1},  dD = Δt (σ''(Z)∘dZ∘Q + σ'(Z)∘dQ),
               dΛ = dQ + Kᵀ dD + K'[dθ]ᵀ D,
               d(∂J/∂θ) = ∂_θ⟨dD, K U⟩ + ∂_θ⟨D, K dU⟩ + ∂_θ⟨D, K'[dθ] U⟩,  d(∂J/∂b) = dD 1.

With ε = 0 this is the ResNet u^{n+1} = uⁿ + Δt σ(Wⁿ M_L uⁿ + bⁿ). With noise in
depth (:mod:`..noise`) the step is Euler–Maruyama, U^{n+1} = S_Δt (Uⁿ + Δt σ(Zⁿ) + g ΔWⁿ);
the other lines do not change (the increment depends on neither U nor θ).

For the gradient sweep (``record="adjoint"``) the step stores Δt σ'(Zⁿ) in Zⁿ's
place, computed from σ(Zⁿ) while it is at hand (tanh: 1 − σ²), so the adjoint's
Dⁿ is one product with Qⁿ: σ is evaluated once per layer; and in Uⁿ's place the
kernel's form of Uⁿ for its backward (dense and low rank: M_L Uⁿ, made by the
forward product anyway). The record takes no more memory than (Uⁿ, Zⁿ).
"""

from __future__ import annotations

import numpy as np

from pontryx.solver.model.schemes.base import AdjointRecord, Scheme, vjp2
from pontryx.solver.model.threads import rows
from pontryx.solver.model.workspace import HEAP

__all__ = ["IMEXEuler"]


class IMEXEuler(Scheme):
    name = "imex_euler"
    order = 1
    assigns = True

    def step(self, ctx, b, state, n=None, ws=HEAP, noise=None, record="all"):
        (U,) = state
        derivative = record == "adjoint"
        if derivative:  # V: U as the kernel's backward takes it (M_L U)
            Z, V = self.kernel.apply_and_record(ctx, U, ws)
        else:
            Z, V = self.kernel.apply(ctx, U, ws), U
        Y = ws.take(Z.shape)
        sigma, dt = self.sigma, self.dt

        def block(r):  # Z += b; Y = U + Δt σ(Z), in place (same rounding)
            z = Z[r]
            z += b[r, None]
            y = sigma.f(z, out=Y[r])
            if derivative:  # Δt σ'(Z) in Z's place, from σ(Z) where the activation can
                sigma.derivative(z, y, out=z)
                z *= dt
            y *= dt
            y += U[r]
            if noise is not None:  # Euler–Maruyama: + g ΔWⁿ
                y += noise[r]

        rows(block, *Z.shape)
        new = (ws.replaced(Y, self._S(1.0, Y)),)
        if record is None:
            ws.give(Z)
            return new, None
        return new, (AdjointRecord((V, Z)) if derivative else (U, Z))

    def adjoint(self, ctx, record, lam, grad, n=None, ws=HEAP, assign=False):
        U, Z = record
        Q = self._ST(1.0, lam[0])
        D = ws.take(Z.shape)
        df, dt = self.sigma.df, self.dt
        stored = isinstance(record, AdjointRecord)  # (V, Δt σ'(Z)), V from apply_and_record
        gb = None if grad is None else grad["b"]

        def block(r):  # D = Δt σ'(Z) ∘ Q, in place (same rounding); ∂J/∂b += D 1
            if stored:
                d = np.multiply(Z[r], Q[r], out=D[r])
            else:
                d = df(Z[r], out=D[r])
                d *= dt
                d *= Q[r]
            if gb is None:
                return
            if assign:
                np.sum(d, axis=1, out=gb[r])
            else:
                gb[r] += d.sum(axis=1)

        rows(block, *Z.shape)
        L = self.kernel.backward(ctx, U, D, grad, ws, assign=assign, recorded=stored, add=Q)
        ws.give(D)
        return (L,)

    def tangent(self, ctx, dctx, db, record, dstate, n=None):
        U, Z = record
        (dU,) = dstate
        K = self.kernel
        dZ = K.apply(ctx, dU) + K.apply(dctx, U) + db[:, None]
        dY = dU + self.dt * self.sigma.df(Z) * dZ
        return (self._S(1.0, dY),), (dU, dZ)

    def adjoint2(self, ctx, dctx, dtheta, record, trecord, lam, dlam, grad, dgrad, n=None):
        U, Z = record
        dU, dZ = trecord
        K, dt = self.kernel, self.dt
        Q, dQ = self._ST(1.0, lam[0]), self._ST(1.0, dlam[0])
        s1, s2 = self.sigma.df(Z), self.sigma.d2f(Z)
        D = dt * s1 * Q
        dD = dt * (s2 * dZ * Q + s1 * dQ)
        grad["b"] += D.sum(axis=1)
        dgrad["b"] += dD.sum(axis=1)
        vjp2(K, ctx, dtheta, U, dU, D, dD, grad, dgrad)
        L = Q + K.apply_T(ctx, D)
        dL = dQ + K.apply_T(ctx, dD) + K.apply_T(dctx, D)
        return (L,), (dL,)
