"""Depth schemes: one layer U^n → U^{n+1} and its exact discrete adjoint.

Every scheme steps the semi-discrete model  M_L U' = −ε A U + M_L σ(K U + b 1ᵀ)
with the layer's controls θⁿ held constant over [t_n, t_{n+1}], declares its
order, and provides

* ``step``    — the forward layer, returning the record its adjoint needs,
* ``adjoint`` — Λⁿ = (∂U^{n+1}/∂Uⁿ)ᵀ Λ^{n+1}, accumulating ∂J/∂θⁿ,
* ``reverse`` — (reversible schemes only) Uⁿ recomputed from U^{n+1}.

The state is a tuple of multivectors ((U,) or (U, V) for Verlet); Λ likewise.
Notation: B_c = M_L + c ε A, S_c = B_c⁻¹ M_L (the identity when ε = 0).

IMEX Euler (order 1), DESIGN.md §2:
    Zⁿ = Kⁿ Uⁿ + bⁿ,  U^{n+1} = S_Δt (Uⁿ + Δt σ(Zⁿ))
    adjoint:  Qⁿ = M_L B⁻¹ Λ^{n+1},  Dⁿ = Δt σ'(Zⁿ)∘Qⁿ,  Λⁿ = Qⁿ + KⁿᵀDⁿ,
              ∂J/∂bⁿ = Dⁿ 1,  ∂J/∂θ_K = ∂⟨Dⁿ, K(θ) Uⁿ⟩/∂θ.
IMEX midpoint (order 2; ARS(1,2,2): Crank–Nicolson in the diffusion, explicit
midpoint in σ; with ε = 0 the explicit midpoint ResNet):
    Z₁ = K Uⁿ + b,  U* = S_{Δt/2}(Uⁿ + ½Δt σ(Z₁)),  Z₂ = K U* + b,
    U^{n+1} = 2U* − Uⁿ − Δt σ(Z₁) + Δt σ(Z₂)   (= Uⁿ + Δt σ(Z₂) when ε = 0).
Hamiltonian / Verlet network (order 2, ε = 0; Haber–Ruthotto 2017, Chang et al.
2018), with K* = M_L⁻¹ Kᵀ M_L the discrete 𝒦*:
    V^{n+1} = Vⁿ − cₙ Δt σ(K* Uⁿ + b),  U^{n+1} = Uⁿ + Δt σ(K V^{n+1} + b);
    V is staggered (V^{n+1} ≈ v(t_{n+½})), so the first layer takes the half
    step c₀ = ½ from V⁰ = v(0) = 0 (Störmer–Verlet start) and cₙ = 1 after it;
    with c₀ = 1 the scheme would be first order (measured: 1.03). Order 2 holds
    for controls constant in depth; both half-updates share θⁿ, so depth-varying
    controls (which the staggered grid would need at t_n and t_{n+½}) give order 1.
    Reversible, so its adjoint may recompute states backwards.

The optional keyword ``n`` (layer index) only matters for Verlet's first layer.
The optional workspace ``ws`` (:mod:`pontryx.solver.workspace`) supplies the
arrays of the step, its record and the adjoint's temporaries (IMEX Euler and
midpoint): the adjoint sweep gives records and costates back once consumed, so
repeated sweeps reuse the same memory. Values are identical with or without it.
"""

from __future__ import annotations

from pontryx.solver.diffusion import DiffusionSolver
from pontryx.solver.workspace import HEAP

__all__ = ["SCHEMES", "IMEXEuler", "IMEXMidpoint", "Scheme", "Verlet", "make_scheme"]


class Scheme:
    name = "scheme"
    order = 1
    n_states = 1
    reversible = False
    #: fractions of Δt at which the stages of a layer see the (continuous) controls
    stage_fractions = (0.0,)

    def __init__(self, space, kernel, activation, dt: float, epsilon: float):
        self.space, self.kernel, self.sigma = space, kernel, activation
        self.dt, self.epsilon = float(dt), float(epsilon)
        self.solvers: dict[float, DiffusionSolver] = {}

    def _S(self, fraction, Y):
        """S_c Y = B_c⁻¹ M_L Y with c = fraction · Δt (identity when ε = 0)."""
        if self.epsilon == 0.0:
            return Y
        return self._solver(fraction).apply_inverse_times_mass(Y)

    def _ST(self, fraction, L):
        """S_cᵀ L = M_L B_c⁻¹ L."""
        if self.epsilon == 0.0:
            return L
        return self.space.m[:, None] * self._solver(fraction).solve(L)

    def _solver(self, fraction):
        if fraction not in self.solvers:
            self.solvers[fraction] = DiffusionSolver(self.space, fraction * self.dt * self.epsilon)
        return self.solvers[fraction]

    def initial_state(self, U0):
        return (U0,)

    def destroy(self):
        for s in self.solvers.values():
            s.destroy()
        self.solvers.clear()


class IMEXEuler(Scheme):
    name = "imex_euler"
    order = 1

    def step(self, ctx, b, state, n=None, ws=HEAP):
        (U,) = state
        Z = self.kernel.apply(ctx, U, ws)
        Z += b[:, None]
        Y = self.sigma.f(Z, out=ws.take(Z.shape))  # U + Δt σ(Z), in place (same rounding)
        Y *= self.dt
        Y += U
        return (ws.replaced(Y, self._S(1.0, Y)),), (U, Z)

    def adjoint(self, ctx, record, lam, grad, n=None, ws=HEAP):
        U, Z = record
        Q = self._ST(1.0, lam[0])
        D = self.sigma.df(Z, out=ws.take(Z.shape))  # Δt σ'(Z) ∘ Q, in place (same rounding)
        D *= self.dt
        D *= Q
        grad["b"] += D.sum(axis=1)
        self.kernel.vjp(ctx, U, D, grad, ws)
        L = self.kernel.apply_T(ctx, D, ws)
        L += Q
        ws.give(D)
        return (L,)


class IMEXMidpoint(Scheme):
    name = "midpoint"
    order = 2
    stage_fractions = (0.0, 0.5)

    def step(self, ctx, b, state, n=None, ws=HEAP):
        (U,) = state
        dt, f, K = self.dt, self.sigma.f, self.kernel
        Z1 = K.apply(ctx, U, ws)
        Z1 += b[:, None]
        s1 = f(Z1)
        Us = self._S(0.5, U + 0.5 * dt * s1)
        Z2 = K.apply(ctx, Us, ws)
        Z2 += b[:, None]
        if self.epsilon == 0.0:
            Un = U + dt * f(Z2)
        else:
            Un = 2.0 * Us - U + dt * (f(Z2) - s1)
        return (Un,), (U, Z1, Us, Z2)

    def adjoint(self, ctx, record, lam, grad, n=None, ws=HEAP):
        U, Z1, Us, Z2 = record
        (L,) = lam
        dt, df, K = self.dt, self.sigma.df, self.kernel
        D2 = dt * df(Z2) * L
        K.vjp(ctx, Us, D2, grad, ws)
        Ls = K.apply_T(ctx, D2, ws)
        if self.epsilon == 0.0:
            LY = Ls
            D1 = 0.5 * dt * df(Z1) * LY
            Ln = L + LY
        else:
            LY = self._ST(0.5, Ls + 2.0 * L)
            D1 = df(Z1) * (0.5 * dt * LY - dt * L)
            Ln = LY - L
        ws.give(Ls)
        K.vjp(ctx, U, D1, grad, ws)
        grad["b"] += D1.sum(axis=1) + D2.sum(axis=1)
        KD1 = K.apply_T(ctx, D1, ws)
        Ln += KD1
        ws.give(KD1)
        return (Ln,)


class Verlet(Scheme):
    name = "verlet"
    order = 2
    n_states = 2
    reversible = True

    def __init__(self, space, kernel, activation, dt, epsilon):
        if epsilon != 0.0:
            raise ValueError("model.epsilon: the verlet scheme needs epsilon = 0")
        super().__init__(space, kernel, activation, dt, epsilon)

    def initial_state(self, U0):
        return (U0, 0.0 * U0)

    @staticmethod
    def _c(n):
        return 0.5 if n == 0 else 1.0

    def step(self, ctx, b, state, n=None, ws=HEAP):
        U, V = state
        dt, f, K = self.dt, self.sigma.f, self.kernel
        Y1 = K.apply_adjoint(ctx, U)
        Y1 += b[:, None]
        Vn = V - self._c(n) * dt * f(Y1)
        Y2 = K.apply(ctx, Vn)
        Y2 += b[:, None]
        return (U + dt * f(Y2), Vn), (U, Vn, Y1, Y2)

    def reverse(self, ctx, b, state, n=None, ws=HEAP):
        """(Uⁿ, Vⁿ) and the layer's record, recomputed from (U^{n+1}, V^{n+1})."""
        Un1, Vn1 = state
        dt, f, K = self.dt, self.sigma.f, self.kernel
        Y2 = K.apply(ctx, Vn1)
        Y2 += b[:, None]
        U = Un1 - dt * f(Y2)
        Y1 = K.apply_adjoint(ctx, U)
        Y1 += b[:, None]
        return (U, Vn1 + self._c(n) * dt * f(Y1)), (U, Vn1, Y1, Y2)

    def adjoint(self, ctx, record, lam, grad, n=None, ws=HEAP):
        U, Vn, Y1, Y2 = record
        LU, LV = lam
        dt, df, K = self.dt, self.sigma.df, self.kernel
        m = self.space.m[:, None]
        D2 = dt * df(Y2) * LU
        K.vjp(ctx, Vn, D2, grad)
        LV = LV + K.apply_T(ctx, D2)
        D1 = -self._c(n) * dt * df(Y1) * LV
        # ⟨D1, K* U⟩ = ⟨M_L U, K (M_L⁻¹ D1)⟩
        K.vjp(ctx, D1 / m, m * U, grad)
        grad["b"] += D1.sum(axis=1) + D2.sum(axis=1)
        return (LU + m * K.apply(ctx, D1 / m), LV)


SCHEMES = {s.name: s for s in (IMEXEuler, IMEXMidpoint, Verlet)}


def make_scheme(name, space, kernel, activation, dt, epsilon) -> Scheme:
    try:
        cls = SCHEMES[name]
    except KeyError:
        raise ValueError(
            f"model.scheme: unknown depth scheme {name!r}; expected one of {sorted(SCHEMES)}"
        ) from None
    return cls(space, kernel, activation, dt, epsilon)
