"""The classical reconstruction: log κ as a nodal field with H¹ (Tikhonov) regularisation.

    min_m j(m) = Φ(u(m)) + (γ/2) ∫ |∇m|² dx + (δ/2) ∫ (m − m₀)² dx,   m ∈ V_h = P_k,

the anchor against which the network prior of :mod:`.functional` is measured
(the same state equation, observations and adjoint, :mod:`.misfit`; see e.g.
Vogel, "Computational Methods for Inverse Problems", SIAM 2002, ch. 1 and 7).
Minimised by PETSc TAO (default ``lmvm``) with the options prefix
``pontryx_nodal_``, in the L²(M_L) Riesz variables x = √m_L ⊙ m (m_L the lumped
mass), so that the quasi-Newton metric, the line search and ``gatol`` (a bound
on the L² norm of the gradient's Riesz representative) do not change with the
mesh. Like the network runs, the line search is Armijo backtracking unless
``-pontryx_nodal_tao_ls_type`` is given (see
:meth:`~pontryx.solver.app.inverse.InverseProblem.method_options`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from petsc4py import PETSc

from pontryx.solver.petsc import LMVM_PREFIX, configure, destroy

__all__ = ["PREFIX", "NodalResult", "reconstruct"]

PREFIX = "pontryx_nodal_"
_REASONS = {
    getattr(PETSc.TAO.ConvergedReason, k): k
    for k in dir(PETSc.TAO.ConvergedReason)
    if k.isupper() and k not in ("ITERATING", "CONVERGED_ITERATING")
}


@dataclass
class NodalResult:
    m: np.ndarray  # log κ on the owned dofs
    value: float  # j(m)
    misfit: float  # Φ
    discrepancy: float  # √(Σ r²/M)
    iterations: int
    reason: str
    time: float
    history: list = field(default_factory=list)  # per iteration: (j, Φ, discrepancy, ‖g‖)


def reconstruct(
    misfit,
    mass: np.ndarray,
    m_init: np.ndarray,
    *,
    method: str = "lmvm",
    max_iterations: int = 500,
    gatol: float = 1e-8,
    grtol: float = 1e-8,
    options: dict | None = None,
) -> NodalResult:
    """Minimise ``misfit`` (a :class:`~.misfit.ReducedMisfit` with its γ, δ) over the
    nodal values of m from ``m_init`` (owned dofs); ``mass``: the lumped mass of
    the owned dofs. ``options``: further TAO options (names after the prefix)."""
    comm = misfit.pde.comm
    scale = np.sqrt(mass)
    n = len(m_init)
    x = PETSc.Vec().createMPI((n, PETSc.DETERMINE), comm=comm)
    x.array[:] = scale * m_init
    history: list = []

    def objective_gradient(tao, xv, g):
        value, grad = misfit.value_and_gradient(xv.array_r / scale)
        g.array[:] = grad / scale  # ∇_x j = M_L^{-1/2} ∇_m j
        return value

    def monitor(tao):
        _, f, gnorm, *_ = tao.getSolutionStatus()
        last = misfit.last
        history.append((float(f), float(last["misfit"]), misfit.discrepancy(), float(gnorm)))

    tao = PETSc.TAO().create(comm=comm)
    tao.setType(method)
    tao.setTolerances(gatol=gatol, grtol=grtol)
    tao.setMaximumIterations(max_iterations)
    defaults = {"tao_ls_type": "armijo", **(options or {})}
    configure(tao, PREFIX, defaults, {f"{LMVM_PREFIX}mat_type": "lmvmdbfgs"})
    tao.setObjectiveGradient(objective_gradient)
    tao.setMonitor(monitor)
    tao.setSolution(x)
    t0 = time.perf_counter()
    try:
        tao.solve()
        seconds = time.perf_counter() - t0
        reason = tao.getConvergedReason()
        its = tao.getIterationNumber()
        m = x.array_r / scale
    finally:
        destroy(tao, x)
    value, _ = misfit.value_and_gradient(m, gradient=False)
    return NodalResult(
        m=m.copy(),
        value=float(value),
        misfit=float(misfit.last["misfit"]),
        discrepancy=misfit.discrepancy(),
        iterations=int(its),
        reason=_REASONS.get(reason, str(reason)),
        time=seconds,
        history=history,
    )
