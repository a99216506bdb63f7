"""The local kernel in UFL: the short-range limit of the nonlocal operator 𝒦.

    L(κ, a, r; u, v) = ∫_Ω r u v − κ ∇u·∇v + (a·∇u) v dx

is a reaction–diffusion–advection operator with coefficient fields κ, r ∈ V_h
and a ∈ V_h^d (the learnable controls of a layer); 𝒦 ≈ M_L⁻¹ L.

L is linear in (κ, a, r): the solver assembles it once per coefficient
colour class and applies the resulting linear map θ ↦ L(θ) to every layer
(:mod:`pontryx.solver.model.kernels.local`).
"""

from __future__ import annotations

import ufl

__all__ = ["local_operator", "plane_operators"]


def local_operator(kappa, r, a, u, v):
    """L(κ, a, r; u, v) as a UFL form (u, v scalar: trial/test or coefficients)."""
    return (
        r * u * v - kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) + ufl.inner(a, ufl.grad(u)) * v
    ) * ufl.dx


def plane_operators(u, v, order: int = 2):
    """The plane's differential operators of the conv kernel, as UFL forms, up to
    ``order`` (1 or 2): ∂_x, ∂_y and (order 2) ∂_xx, ∂_yy, ∂_xy in weak form,

        ∫ ∂_x u v,  ∫ ∂_y u v,  −∫ ∂_x u ∂_x v,  −∫ ∂_y u ∂_y v,  −½∫ (∂_x u ∂_y v + ∂_y u ∂_x v),

    (natural boundary conditions); the identity (order 0) is the lumped mass."""
    gu, gv = ufl.grad(u), ufl.grad(v)
    first = [gu[0] * v * ufl.dx, gu[1] * v * ufl.dx]
    if order == 1:
        return first
    return [
        *first,
        -gu[0] * gv[0] * ufl.dx,
        -gu[1] * gv[1] * ufl.dx,
        -0.5 * (gu[0] * gv[1] + gu[1] * gv[0]) * ufl.dx,
    ]
