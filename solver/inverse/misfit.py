"""The PDE-constrained misfit as a function of the log-coefficient m, with its adjoint gradient.

    j(m) = Φ(u(m)) + R(m),    R(m) = (γ/2) ∫ |∇m|² dx + (δ/2) ∫ (m − m₀)² dx,

u(m) the solution of the state equation (:class:`~.pde.EllipticPDE`), Φ the data
misfit (:class:`~.observations.Observations`). One evaluation is a state solve;
the gradient adds one adjoint solve: dj/dm = ∂F/∂m(u, m; p) + R'(m) with
(∂F/∂u)* p = −∂Φ/∂u (all forms from UFL, :mod:`pontryx.forms.elliptic`). The
gradient is the vector of partial derivatives with respect to the nodal values
of m (the owned dofs), the cotangent that the network's adjoint takes
(:mod:`.functional`) and that the classical nodal reconstruction
(:mod:`.nodal`) optimises directly.
"""

from __future__ import annotations

from mpi4py import MPI

import dolfinx.fem
import dolfinx.fem.petsc
import numpy as np
import ufl
from petsc4py import PETSc

from pontryx.forms.elliptic import coefficient, tikhonov
from pontryx.meshes.errors import InputError, show

__all__ = ["LOG_KAPPA_MAX", "ReducedMisfit", "relative_error"]

#: the largest |log κ| at which the state equation is solved (κ within e^{±100})
LOG_KAPPA_MAX = 100.0


class ReducedMisfit:
    """m ↦ j(m) for an :class:`~.pde.EllipticPDE` ``pde`` and :class:`~.observations.
    Observations` ``observations``; ``gamma``, ``delta`` ≥ 0 and ``m0`` (a number)
    of the H¹ regulariser R (0: none). ``last`` holds the misfit Φ, the statistic
    Σ r_i² and R of the last evaluation."""

    def __init__(self, pde, observations, gamma: float = 0.0, delta: float = 0.0, m0=0.0):
        for key, value in (("gamma", gamma), ("delta", delta)):
            if not (np.isfinite(value) and value >= 0):
                raise InputError(f"expected a number ≥ 0, got {show(value)}", key)
        self.pde, self.obs = pde, observations
        self.gamma, self.delta, self.m0 = float(gamma), float(delta), float(m0)
        self.count = observations.count
        self.last: dict | None = None
        self._R = self._dR = None
        if self.gamma or self.delta:
            V, m = pde.V, pde.m
            c = dolfinx.fem.Constant
            R = tikhonov(m, c(pde.mesh, self.m0), c(pde.mesh, self.gamma), c(pde.mesh, self.delta))
            self._R = dolfinx.fem.form(R)
            self._dR = dolfinx.fem.form(ufl.derivative(R, m, ufl.TestFunction(V)))

    def regulariser(self, gradient: bool = False):
        """(R(m), R'(m) on the owned dofs or None) at the current m of the PDE."""
        if self._R is None:
            return 0.0, None
        comm = self.pde.comm
        value = comm.allreduce(dolfinx.fem.assemble_scalar(self._R), op=MPI.SUM)
        if not gradient:
            return value, None
        b = self.pde.b
        with b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(b, self._dR)
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        return value, b.array_r[: self.pde.n].copy()

    def __call__(self, m_owned: np.ndarray) -> float:
        """j(m) (one state solve)."""
        return self.value_and_gradient(m_owned, gradient=False)[0]

    def value_and_gradient(self, m_owned: np.ndarray, gradient: bool = True):
        """(j(m), dj/dm on the owned dofs — None without ``gradient``). Where
        κ = exp(m) would overflow or vanish (|m| > :data:`LOG_KAPPA_MAX`, e.g. at a
        line search's trial point far out) j = +∞ with a zero gradient: a domain
        violation that the line searches step back from."""
        pde = self.pde
        peak = float(np.max(np.abs(m_owned), initial=0.0))
        if not pde.comm.allreduce(bool(np.isfinite(peak) and peak <= LOG_KAPPA_MAX), op=MPI.LAND):
            self.last = {"misfit": np.inf, "stat": np.inf, "regulariser": np.inf}
            return np.inf, (np.zeros_like(m_owned) if gradient else None)
        pde.set_parameter(m_owned)
        u = pde.solve_state()
        Phi, total, dPhi = self.obs.misfit(u, gradient)
        R, dR = self.regulariser(gradient)
        self.last = {"misfit": Phi, "stat": total, "regulariser": R}
        if not gradient:
            return Phi + R, None
        pde.solve_adjoint(dPhi)
        g = pde.parameter_gradient()
        if dR is not None:
            g += dR
        return Phi + R, g

    def discrepancy(self, stat: float | None = None) -> float:
        """RMS of the normalised residual (1 at the noise level)."""
        return self.obs.discrepancy(self.last["stat"] if stat is None else stat)


def relative_error(pde, truth, degree_gap: int = 2):
    """A callable m_owned ↦ ‖exp(m) − κ†‖_{L²} / ‖κ†‖_{L²} on the physical mesh, with
    κ† (an :class:`~.expressions.Expression`) interpolated in P_{k+``degree_gap``}."""
    from pontryx.forms.operators import function_space

    mesh = pde.mesh
    W = function_space(mesh, min(pde.degree + degree_gap, 3))
    gdim = mesh.geometry.dim
    k_true = dolfinx.fem.Function(W)
    k_true.interpolate(lambda x: truth(x[:gdim]))
    diff = dolfinx.fem.form((coefficient(pde.m) - k_true) ** 2 * ufl.dx)
    norm = mesh.comm.allreduce(
        dolfinx.fem.assemble_scalar(dolfinx.fem.form(k_true**2 * ufl.dx)), op=MPI.SUM
    )

    def error(m_owned: np.ndarray) -> float:
        pde.set_parameter(m_owned)
        return float(np.sqrt(mesh.comm.allreduce(dolfinx.fem.assemble_scalar(diff)) / norm))

    return error
