"""Finite-element forms of the width domain Ω (DESIGN.md §2).

V_h = Lagrange P_k on the mesh. The forms here are pure UFL: assembling them
(and any solver logic) happens in :mod:`pontryx.solver`.

    M_ij = ∫_Ω φ_j φ_i dx           mass
    A_ij = ∫_Ω ∇φ_j · ∇φ_i dx       stiffness (natural Neumann condition ∂_n u = 0)
    m_i  = ∫_Ω φ_i dx = Σ_j M_ij    row sums: the lumped mass M_L = diag(m)
"""

from __future__ import annotations

import ufl

from pontryx.meshes.errors import InputError

__all__ = [
    "DEGREES",
    "function_space",
    "lumped_measure",
    "mass_form",
    "row_sum_form",
    "stiffness_form",
]


#: Lagrange degrees of V_h.
DEGREES = (1, 2, 3)


def function_space(mesh, degree: int = 1):
    """Scalar Lagrange space P_degree on ``mesh`` (degree 1, 2 or 3), a
    ``dolfinx.fem.FunctionSpace``."""
    import basix.ufl
    import dolfinx.fem

    if degree not in DEGREES:
        raise InputError(f"expected 1, 2 or 3, got {degree!r}", "degree")
    element = basix.ufl.element("Lagrange", mesh.basix_cell(), degree)
    return dolfinx.fem.functionspace(mesh, element)


def mass_form(V):
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    return u * v * ufl.dx


def stiffness_form(V):
    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    return ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx


def row_sum_form(V):
    """m_i = ∫ φ_i dx, the row sums of the mass matrix (since Σ_j φ_j = 1)."""
    return ufl.TestFunction(V) * ufl.dx


def lumped_measure(mesh):
    """The vertex quadrature rule dx_L: for P1 it turns ∫ f v dx into the
    row-sum lumped product Σ_i m_i f(x_i) v(x_i), i.e. M_L f."""
    return ufl.Measure(
        "dx", domain=mesh, metadata={"quadrature_rule": "vertex", "quadrature_degree": 1}
    )
