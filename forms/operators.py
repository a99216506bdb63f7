"""Finite-element forms of the width domain Ω (DESIGN.md §2).

V_h = Lagrange P_k on the mesh. The forms here are pure UFL: assembling them
(and any solver logic) happens in :mod:`pontryx.solver`.

    M_ij = ∫_Ω φ_j φ_i dx           mass
    A_ij = ∫_Ω ∇φ_j · ∇φ_i dx       stiffness (natural Neumann condition ∂_n u = 0)
    m_i  = ∫_Ω φ_i dx = Σ_j M_ij    row sums: the lumped mass M_L = diag(m)
"""

from __future__ import annotations

import ufl

from pontryx.meshes.errors import InputError, show

__all__ = [
    "DEGREES",
    "function_space",
    "lumped_measure",
    "lumped_weights",
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
        raise InputError(f"expected 1, 2 or 3, got {show(degree)}", "degree")
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


def lumped_weights(element, lumping: str = "rowsum"):
    """Reference-cell weights of the lumped mass of a Lagrange ``element`` (a basix
    element): ``rowsum`` w_i = ∫ φ_i, ``hrz`` w_i = M_ii |K̂| / Σ_k M_kk (Hinton,
    Rock & Zienkiewicz 1976), both on the reference cell K̂."""
    import basix

    points, weights = basix.make_quadrature(element.cell_type, 2 * element.degree + 2)
    phi = element.tabulate(0, points)[0, :, :, 0]  # (points, dofs)
    if lumping == "rowsum":
        return weights @ phi
    if lumping == "hrz":
        diag = weights @ phi**2
        return diag * weights.sum() / diag.sum()
    raise InputError(f"expected rowsum or hrz, got {show(lumping)}", "lumping")


def lumped_measure(V, lumping: str = "rowsum"):
    """The nodal quadrature dx_L of V_h: points at the reference dof points,
    weights the reference lumped masses (:func:`lumped_weights`), so that on affine
    cells ∫ f v dx_L = Σ_i m_i f(x_i) v(x_i), i.e. M_L f with the lumped mass of
    :class:`pontryx.solver.model.width.WidthSpace` (P1: the vertex rule)."""
    element = V.ufl_element().basix_element
    return ufl.Measure(
        "dx",
        domain=V.mesh,
        metadata={
            "quadrature_rule": "custom",
            "quadrature_points": element.points,
            "quadrature_weights": lumped_weights(element, lumping),
        },
    )
