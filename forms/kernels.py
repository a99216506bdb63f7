"""The local kernel in UFL: the short-range limit of the nonlocal operator 𝒦.

    L(κ, a, r; u, v) = ∫_Ω r u v − κ ∇u·∇v + (a·∇u) v dx

is a reaction–diffusion–advection operator with coefficient fields κ, r ∈ V_h
and a ∈ V_h^d (the learnable controls of a layer); 𝒦 ≈ M_L⁻¹ L.

For gradients, ``sample_sum`` evaluates Σ_c L(u_c, q_c) for a block of samples
held as the components of vector-valued functions, so that ∂/∂θ of the whole
block is one assembled vector (``ufl.derivative``) instead of one per sample.
"""

from __future__ import annotations

import ufl

__all__ = ["local_operator", "sample_sum"]


def local_operator(kappa, r, a, u, v):
    """L(κ, a, r; u, v) as a UFL form (u, v scalar: trial/test or coefficients)."""
    return (
        r * u * v - kappa * ufl.inner(ufl.grad(u), ufl.grad(v)) + ufl.inner(a, ufl.grad(u)) * v
    ) * ufl.dx


def sample_sum(kappa, r, a, U, Q):
    """Σ_c L(κ, a, r; U_c, Q_c) for vector-valued U, Q (one sample per component)."""
    return (
        r * ufl.inner(U, Q)
        - kappa * ufl.inner(ufl.grad(U), ufl.grad(Q))
        + ufl.inner(ufl.dot(ufl.grad(U), a), Q)
    ) * ufl.dx
