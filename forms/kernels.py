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

__all__ = ["local_operator"]


def local_operator(kappa, r, a, u, v):
    """L(κ, a, r; u, v) as a UFL form (u, v scalar: trial/test or coefficients)."""
    return (
        r * u * v - kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) + ufl.inner(a, ufl.grad(u)) * v
    ) * ufl.dx
