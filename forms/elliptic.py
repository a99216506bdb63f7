"""UFL forms of the elliptic inverse problem on the physical domain Ω_phys.

The state equation −∇·(κ∇u) = f in Ω_phys, u = g_D on Γ_D, κ ∂_n u = g_N on Γ_N,
with κ = exp(m) for the log-coefficient m ∈ Q_h (Lagrange P_k), in weak form

    F(u, m; v) = ∫ exp(m) ∇u·∇v dx − ∫ f v dx − ∫_{Γ_N} g_N v ds = 0   ∀ v ∈ V_h,0.

Everything the solver needs is derived from F by UFL, never written twice:
the Jacobian ∂F/∂u (the stiffness operator of the forward solve), the adjoint
operator ``ufl.adjoint(∂F/∂u)``, and the derivative ∂F/∂m[q] with the adjoint
state p as the test function — the gradient of the reduced misfit,
dΦ/dm = ∂F/∂m(u, m; p) for p solving (∂F/∂u)* p = −∂Φ/∂u. The H¹ (Tikhonov)
regulariser of the classical reconstruction is

    R(m) = (γ/2) ∫ |∇m|² dx + (δ/2) ∫ (m − m₀)² dx.

Pure UFL: assembling and solving happens in :mod:`pontryx.solver.inverse`.
"""

from __future__ import annotations

import ufl

__all__ = ["adjoint_operator", "coefficient", "parameter_derivative", "residual", "tikhonov"]


def coefficient(m):
    """κ = exp(m): the coefficient is positive for every log-coefficient m."""
    return ufl.exp(m)


def residual(u, m, v, f, g_N=None, ds_N=None):
    """F(u, m; v) above (``g_N``/``ds_N``: the Neumann flux and its measure, or None)."""
    F = coefficient(m) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - f * v * ufl.dx
    if g_N is not None and ds_N is not None:
        F -= g_N * v * ds_N
    return F


def adjoint_operator(F, u):
    """(∂F/∂u)*: the adjoint of the linearised state operator, a bilinear form."""
    return ufl.adjoint(ufl.derivative(F, u))


def parameter_derivative(F, m, q):
    """∂F/∂m[q], a linear form in the test function q of the parameter space."""
    return ufl.derivative(F, m, q)


def tikhonov(m, m0, gamma, delta):
    """R(m) = (γ/2)∫|∇m|² + (δ/2)∫(m − m₀)², a functional (γ, δ: UFL constants)."""
    return 0.5 * gamma * ufl.inner(ufl.grad(m), ufl.grad(m)) * ufl.dx + (
        0.5 * delta * (m - m0) ** 2 * ufl.dx
    )
