"""The state equation of the inverse problem and its adjoint, on DOLFINx/PETSc.

    −∇·(exp(m) ∇u) = f in Ω_phys,   u = g_D on Γ_D,   exp(m) ∂_n u = g_N on Γ_N = ∂Ω \\ Γ_D

(:mod:`pontryx.forms.elliptic`: the weak form F(u, m; v) and every derivative of
it by UFL). u and the log-coefficient m live in the same Lagrange space V_h = P_k
on the physical mesh (its own mesh and communicator, separate from any width
mesh). F is affine in u, so one Newton step from the lifting of g_D solves it
exactly: u = u_D + δu with (∂F/∂u) δu = −F(u_D) and δu = 0 on Γ_D. The adjoint
state solves ``ufl.adjoint(∂F/∂u)`` p = −∂Φ/∂u with p = 0 on Γ_D, and the
derivative of a misfit Φ(u(m)) is dΦ/dm = ∂F/∂m(u, m; p) (the Lagrangian
Φ(u) + F(u, m; p) differentiated in m). Both linear systems are solved by PETSc
KSPs with the options prefix ``pontryx_pde_`` (default: MUMPS LU); the matrices
are reassembled into the same PETSc objects for every m.

Boundary parts: ``dirichlet`` is ``"all"`` or a list of sides of the domain's
bounding box — ``left``/``right`` (x = min/max), ``bottom``/``top`` (y),
``front``/``back`` (z); the rest of ∂Ω is Γ_N.
"""

from __future__ import annotations

from mpi4py import MPI

import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.mesh
import numpy as np
import ufl
from petsc4py import PETSc

from pontryx.forms.elliptic import adjoint_operator, parameter_derivative, residual
from pontryx.meshes.errors import InputError, show
from pontryx.solver.inverse.expressions import Expression, expression, require_finite
from pontryx.solver.petsc import Converged, configure, destroy

__all__ = ["PREFIX", "SIDES", "EllipticPDE"]

PREFIX = "pontryx_pde_"
DEFAULTS = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}
#: side name → (coordinate axis, 0: the minimum / 1: the maximum of the bounding box)
SIDES = {
    "left": (0, 0),
    "right": (0, 1),
    "bottom": (1, 0),
    "top": (1, 1),
    "front": (2, 0),
    "back": (2, 1),
}
NEUMANN_TAG = 2


def _interpolated(V, value, key: str, name: str) -> tuple[dolfinx.fem.Function, Expression]:
    gdim = V.mesh.geometry.dim
    expr = expression(value, gdim, key)
    f = dolfinx.fem.Function(V, name=name)
    f.interpolate(lambda x: expr(x[:gdim]))
    return f, expr


def _require_finite(f, expr: Expression, dofs: np.ndarray, x: np.ndarray, key: str) -> None:
    """A coefficient's values finite at the owned ``dofs`` (local indices) of every
    rank; ``x``: the owned dofs' coordinates. Collective."""
    dofs = dofs[dofs < len(x)]
    require_finite(f.x.array[dofs], x[dofs], f.function_space.mesh.comm, expr.text, key)


def bounding_box(mesh) -> tuple[np.ndarray, np.ndarray]:
    gdim = mesh.geometry.dim
    x = mesh.geometry.x[:, :gdim]
    lo = x.min(axis=0, initial=np.inf)
    hi = x.max(axis=0, initial=-np.inf)
    mesh.comm.Allreduce(MPI.IN_PLACE, lo, op=MPI.MIN)
    mesh.comm.Allreduce(MPI.IN_PLACE, hi, op=MPI.MAX)
    return lo, hi


def dirichlet_facets(mesh, dirichlet) -> tuple[np.ndarray, np.ndarray]:
    """(Γ_D, ∂Ω): this rank's boundary facets (local indices); InputError keyed
    ``dirichlet`` for an unknown side or an empty Γ_D."""
    tdim, gdim = mesh.topology.dim, mesh.geometry.dim
    fdim = tdim - 1
    mesh.topology.create_connectivity(fdim, tdim)
    boundary = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    if dirichlet == "all":
        facets = boundary
    else:
        names = [dirichlet] if isinstance(dirichlet, str) else dirichlet
        if not isinstance(names, list | tuple) or not names:
            raise InputError(
                f"expected 'all' or a list of sides ({', '.join(SIDES)}), got {show(dirichlet)}",
                "dirichlet",
            )
        lo, hi = bounding_box(mesh)
        tol = 1e-10 * max(float(np.max(hi - lo)), 1.0)
        chosen = []
        for name in names:
            if name not in SIDES or SIDES[name][0] >= gdim:
                valid = [s for s, (axis, _) in SIDES.items() if axis < gdim]
                raise InputError(
                    f"unknown side {show(name)} of a {gdim}D domain; expected 'all' or sides of "
                    f"{', '.join(valid)}",
                    "dirichlet",
                )
            axis, end = SIDES[name]
            level = (lo, hi)[end][axis]
            chosen.append(
                dolfinx.mesh.locate_entities_boundary(
                    mesh, fdim, lambda x, a=axis, c=level: np.abs(x[a] - c) < tol
                )
            )
        facets = np.unique(np.concatenate(chosen)).astype(np.int32)
    if mesh.comm.allreduce(len(facets), op=MPI.SUM) == 0:
        raise InputError(
            f"Γ_D = {show(dirichlet)} holds no boundary facet of the mesh (a pure Neumann "
            "problem has no unique solution)",
            "dirichlet",
        )
    return facets.astype(np.int32), boundary


class EllipticPDE:
    """−∇·(exp(m)∇u) = f with Dirichlet data g_D on Γ_D and flux g_N on the rest.

    ``V``: V_h = P_k (k = 1, 2) on the physical mesh; ``source``, ``g_D``,
    ``g_N``: numbers or expressions in x (:mod:`.expressions`), interpolated in
    V_h; ``dirichlet``: see the module docstring. Attributes: ``V``, the Functions
    ``m`` (log κ), ``u`` (state), ``p`` (adjoint state); ``n`` owned dofs, ``x``
    their coordinates. Collective on ``mesh.comm``; call :meth:`destroy`."""

    def __init__(self, V, *, source=1.0, dirichlet="all", g_D=0.0, g_N=0.0):
        mesh = self.mesh = V.mesh
        self.comm, self.V = mesh.comm, V
        self.degree = V.ufl_element().embedded_superdegree
        if self.degree not in (1, 2):
            raise InputError(f"expected a P1 or P2 space, got degree {self.degree}", "degree")
        imap = V.dofmap.index_map
        self.n, self.N = imap.size_local, imap.size_global
        self.offset = imap.local_range[0]
        gdim = mesh.geometry.dim
        self.x = V.tabulate_dof_coordinates()[: self.n, :gdim].copy()
        self.f, f_expr = _interpolated(V, source, "source", "f")
        gD, gD_expr = _interpolated(V, g_D, "g_D", "g_D")
        gN, gN_expr = _interpolated(V, g_N, "g_N", "g_N")
        gN_value = gN_expr.constant
        facets, boundary = dirichlet_facets(mesh, dirichlet)
        fdim = mesh.topology.dim - 1
        dofs = dolfinx.fem.locate_dofs_topological(V, fdim, facets)
        neumann = np.setdiff1d(boundary, facets).astype(np.int32)
        # f on Ω_phys, g_D on Γ_D, g_N on Γ_N: finite where they are used
        _require_finite(self.f, f_expr, np.arange(self.n), self.x, "source")
        _require_finite(gD, gD_expr, dofs, self.x, "g_D")
        neumann_dofs = dolfinx.fem.locate_dofs_topological(V, fdim, neumann)
        _require_finite(gN, gN_expr, neumann_dofs, self.x, "g_N")
        self.bc = dolfinx.fem.dirichletbc(gD, dofs)
        self.bc0 = dolfinx.fem.dirichletbc(dolfinx.fem.Function(V), dofs)
        ds_N = None
        if gN_value != 0.0 and self.comm.allreduce(len(neumann), op=MPI.SUM):
            tags = dolfinx.mesh.meshtags(
                mesh, fdim, neumann, np.full(len(neumann), NEUMANN_TAG, dtype=np.int32)
            )
            ds_N = ufl.Measure("ds", domain=mesh, subdomain_data=tags)(NEUMANN_TAG)
        self.m = dolfinx.fem.Function(V, name="log_kappa")
        self.u = dolfinx.fem.Function(V, name="u")
        self.p = dolfinx.fem.Function(V, name="p")
        self._du = dolfinx.fem.Function(V)
        v, du, q = ufl.TestFunction(V), ufl.TrialFunction(V), ufl.TestFunction(V)
        F = residual(self.u, self.m, v, self.f, gN, ds_N)
        self._F = dolfinx.fem.form(F)
        self._J = dolfinx.fem.form(ufl.derivative(F, self.u, du))
        self._Jadj = dolfinx.fem.form(adjoint_operator(F, self.u))
        Fp = residual(self.u, self.m, self.p, self.f, gN, ds_N)  # the test function v → p
        self._dFdm = dolfinx.fem.form(parameter_derivative(Fp, self.m, q))
        self.A = dolfinx.fem.petsc.create_matrix(self._J)
        self.Aadj = dolfinx.fem.petsc.create_matrix(self._Jadj)
        self.b = dolfinx.fem.petsc.create_vector(V)
        self.ksp, self.ksp_adj = self._ksp(self.A), self._ksp(self.Aadj)
        self._converged = Converged(self.ksp, "the inverse problem's state solve")
        self._converged_adj = Converged(self.ksp_adj, "the inverse problem's adjoint solve")
        self.solves = 0  # linear solves so far (forward and adjoint)

    def _ksp(self, A) -> PETSc.KSP:
        ksp = PETSc.KSP().create(self.comm)
        ksp.setOperators(A)
        configure(ksp, PREFIX, DEFAULTS)
        return ksp

    # -- the parameter ----------------------------------------------------------------
    def set_parameter(self, m_owned: np.ndarray) -> None:
        """m = log κ from its owned dof values (ghosts updated)."""
        self.m.x.array[: self.n] = m_owned
        self.m.x.scatter_forward()

    # -- solves ---------------------------------------------------------------------------
    def _assemble(self, A, form) -> None:
        A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(A, form, bcs=[self.bc0])
        A.assemble()

    def solve_state(self) -> dolfinx.fem.Function:
        """u for the current m (one linear solve)."""
        u = self.u
        u.x.array[:] = 0.0
        self.bc.set(u.x.array)  # u_D: the lifting of g_D
        self._assemble(self.A, self._J)
        b = self.b
        with b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(b, self._F)
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        b.scale(-1.0)
        dolfinx.fem.petsc.set_bc(b, [self.bc0])
        self.ksp.solve(b, self._du.x.petsc_vec)
        self._converged.check()
        self._du.x.scatter_forward()
        u.x.array[:] += self._du.x.array
        self.solves += 1
        return u

    def solve_adjoint(self, dPhi_du: dolfinx.fem.Function) -> dolfinx.fem.Function:
        """p with (∂F/∂u)* p = −∂Φ/∂u, p = 0 on Γ_D; ``dPhi_du`` holds ∂Φ/∂u as an
        assembled vector (owned entries complete)."""
        self._assemble(self.Aadj, self._Jadj)
        b = self.b
        b.array[:] = -dPhi_du.x.petsc_vec.array_r
        dolfinx.fem.petsc.set_bc(b, [self.bc0])
        self.ksp_adj.solve(b, self.p.x.petsc_vec)
        self._converged_adj.check()
        self.p.x.scatter_forward()
        self.solves += 1
        return self.p

    def parameter_gradient(self) -> np.ndarray:
        """dΦ/dm = ∂F/∂m(u, m; p) at the current u and p (owned dofs)."""
        b = self.b
        with b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(b, self._dFdm)
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        return b.array_r[: self.n].copy()

    def destroy(self) -> None:
        destroy(self.ksp, self.ksp_adj, self.A, self.Aadj, self.b)
