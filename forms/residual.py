"""The per-sample forward residual of one IMEX Euler layer and its adjoint, in UFL.

For one sample, layer n, with zⁿ = (Kⁿ uⁿ + bⁿ) given as a coefficient (the
nonlocal operator 𝒦 is a double integral, which UFL does not express; the
local kernel's zⁿ is itself assembled from :mod:`pontryx.forms.kernels`):

    F(u; v) = ∫ (u − uⁿ − Δt σ(zⁿ)) v dx_L + Δt ε ∫ ∇u · ∇v dx = 0   ⇔
    (M_L + Δt ε A) u^{n+1} = M_L (uⁿ + Δt σ(Zⁿ))                (DESIGN.md §2)

with dx_L the vertex quadrature (row-sum lumping for P1). The adjoint of the
layer — the transpose Jacobian solve for q and the sensitivities of F with
respect to uⁿ and zⁿ — is *derived* from F with ``ufl.derivative`` and
``ufl.adjoint``, never written by hand:

    (∂F/∂u)ᵀ q = Λ^{n+1},   Λⁿ = −(∂F/∂uⁿ)ᵀ q + Kᵀ Dⁿ,   Dⁿ = −(∂F/∂zⁿ)ᵀ q.

The Hamiltonian density of DESIGN.md §1 for one sample is also given in UFL.
"""

from __future__ import annotations

from dataclasses import dataclass

import ufl

from .operators import lumped_measure

__all__ = ["LayerForms", "costate_step_form", "hamiltonian_density", "imex_euler_layer_forms"]


@dataclass
class LayerForms:
    """UFL forms of one layer for one sample (u is the unknown u^{n+1})."""

    residual: ufl.Form  # F(u; v)
    jacobian_adjoint: ufl.Form  # (∂F/∂u)ᵀ, bilinear
    d_previous_adjoint: ufl.Form  # (∂F/∂uⁿ)ᵀ, bilinear
    d_preactivation_adjoint: ufl.Form  # (∂F/∂zⁿ)ᵀ, bilinear


def imex_euler_layer_forms(u, u_n, z, dt, epsilon, activation) -> LayerForms:
    """Forms for the IMEX Euler layer; u, u_n, z are Functions on V_h, dt and
    epsilon Constants (so the forms compile once for every layer and Δt)."""
    V = u.function_space
    v = ufl.TestFunction(V)
    dxL = lumped_measure(V.mesh)
    F = (u - u_n - dt * activation.ufl(z)) * v * dxL + dt * epsilon * ufl.inner(
        ufl.grad(u), ufl.grad(v)
    ) * ufl.dx
    du = ufl.TrialFunction(V)
    return LayerForms(
        residual=F,
        jacobian_adjoint=ufl.adjoint(ufl.derivative(F, u, du)),
        d_previous_adjoint=ufl.adjoint(ufl.derivative(F, u_n, du)),
        d_preactivation_adjoint=ufl.adjoint(ufl.derivative(F, z, du)),
    )


def hamiltonian_density(p, u, z, epsilon, activation):
    """H = ∫ p (εΔu + σ(z)) dx, integrated by parts with ∂_n u = 0:
    ∫ −ε ∇p·∇u + p σ(z) dx (one sample; the regulariser is added outside)."""
    return (-epsilon * ufl.inner(ufl.grad(p), ufl.grad(u)) + p * activation.ufl(z)) * ufl.dx


def costate_step_form(p, p_next, g, dt, epsilon):
    """One backward step of the continuous costate equation (DESIGN.md §1)

        −∂_t p = ε Δp + 𝒦*[σ'(z) p],   ∂_n p = 0,

    implicit in the diffusion and explicit in the nonlocal term g = 𝒦*[σ'(z) p]
    (a coefficient evaluated at t_{n+1}):

        ∫ (pⁿ − p^{n+1} − Δt g) v dx_L + Δt ε ∫ ∇pⁿ·∇v dx = 0.
    """
    V = p.function_space
    v = ufl.TestFunction(V)
    dxL = lumped_measure(V.mesh)
    return (p - p_next - dt * g) * v * dxL + dt * epsilon * ufl.inner(
        ufl.grad(p), ufl.grad(v)
    ) * ufl.dx
