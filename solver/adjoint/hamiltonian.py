"""The layerwise Hamiltonian of the discrete model, evaluated on whole batches.

Signs as in :mod:`pontryx.solver.training.msa` (Li, Chen, Tai & E 2018) and
DESIGN.md §1/§3: Λⁿ = ∂J/∂Uⁿ is the discrete adjoint of the sweep, the costate
is P = −Λ (DESIGN's p ≈ −M_L⁻¹Λ, so P = M_L p), and with gⁿ the depth scheme's
layer and Rⁿ(θ) = (α/2) Δt ‖θ‖²_ω (+ the β terms with the neighbouring layers
held fixed, :meth:`~pontryx.solver.adjoint.reduced.Regulariser.layer`)

    Hⁿ(Uⁿ, P^{n+1}, θ) = ⟨P^{n+1}, gⁿ(Uⁿ, θ)⟩ − Rⁿ(θ)
                       = ⟨P, Uⁿ⟩ + Δt ∫ p σ(𝒦uⁿ + b) dx_L − Rⁿ(θ)   (IMEX Euler, ε = 0),

summed over the samples (Λ carries the 1/S of the misfit), the width ranks and
the data ranks. Then ∂_θ Hⁿ = −∂J/∂θⁿ, and Pontryagin's maximum principle reads
θⁿ ∈ argmax_θ Hⁿ(Uⁿ, P^{n+1}, θ); the gap max_θ Hⁿ − Hⁿ(θⁿ) ≥ 0 measures how far
layer n is from it. :func:`hamiltonian` is one step of the scheme plus an inner
product; :func:`hamiltonian_gradient` one adjoint step. The UFL statement is
:func:`pontryx.forms.residual.layer_hamiltonian` (⟨P, gⁿ⟩ at the solution of
the layer's residuals) with :func:`pontryx.forms.residual.hamiltonian_density`
(Hⁿ = ⟨P, Uⁿ⟩ + Δt h(uⁿ, q, zⁿ) − Rⁿ for IMEX Euler, q = (M_L + ΔtεA)⁻¹P);
tests/test_forms.py holds this module equal to them.
"""

from __future__ import annotations

from mpi4py import MPI

import numpy as np

from pontryx.meshes.errors import InputError

__all__ = ["hamiltonian", "hamiltonian_gradient", "layer_hamiltonians"]


def _regulariser(regulariser, n, theta, frozen):
    """(this width rank's Rⁿ(θ), ∇Rⁿ(θ)), zero without a regulariser."""
    grad = {k: np.zeros_like(v) for k, v in theta.items()}
    if regulariser is None:
        return 0.0, grad
    if regulariser.beta and frozen is None:
        raise InputError("the β term of the regulariser needs the other layers", "frozen")
    return regulariser.layer(n, theta, frozen, grad), grad


def _sum(net, data_comm, local: float) -> float:
    total = net.space.sum(local)
    if data_comm is not None and data_comm.size > 1:
        total = data_comm.allreduce(total, op=MPI.SUM)
    return float(total)


def hamiltonian(
    net, n: int, theta: dict, state, costate, *, regulariser=None, frozen=None, data_comm=None
) -> float:
    """Hⁿ(Uⁿ, P^{n+1}, θ) for layer ``n`` of ``net``: ``theta`` the layer's
    controls (the kernel's and ``b``), ``state`` Uⁿ as the scheme's tuple ((U,),
    or (U, V) for Verlet; this rank's rows and samples), ``costate`` Λ^{n+1} (the
    sweep's adjoint, so P = −Λ), ``regulariser`` a
    :class:`~pontryx.solver.adjoint.reduced.Regulariser` (None: Rⁿ = 0) with
    ``frozen`` the controls of the other layers (its β terms), ``data_comm`` the
    communicator of the data ranks (None: no data split). Collective."""
    K, scheme = net.kernel, net.scheme
    ctx = K.layer({k: theta[k] for k in K.shapes()})
    new, _ = scheme.step(ctx, theta["b"], tuple(state), n=n)
    K.release(ctx)
    inner = sum(float(np.vdot(L, g)) for L, g in zip(costate, new))
    R, _ = _regulariser(regulariser, n, theta, frozen)
    return _sum(net, data_comm, -inner) - net.space.sum(R)


def hamiltonian_gradient(
    net, n: int, theta: dict, state, costate, *, regulariser=None, frozen=None, data_comm=None
) -> dict[str, np.ndarray]:
    """∂_θ Hⁿ(Uⁿ, P^{n+1}, θ) = −(∂_θ gⁿ)ᵀ Λ^{n+1} − ∇Rⁿ(θ) (this rank's rows; summed
    over the data ranks): one step and one adjoint step of the scheme."""
    K, scheme = net.kernel, net.scheme
    ctx = K.layer({k: theta[k] for k in K.shapes()})
    _, record = scheme.step(ctx, theta["b"], tuple(state), n=n)
    grad = {k: np.zeros_like(v) for k, v in theta.items()}
    scheme.adjoint(ctx, record, tuple(costate), grad, n=n)
    K.release(ctx)
    if data_comm is not None and data_comm.size > 1:
        for v in grad.values():
            data_comm.Allreduce(MPI.IN_PLACE, v, op=MPI.SUM)
    _, gR = _regulariser(regulariser, n, theta, frozen)
    return {k: -v - gR[k] for k, v in grad.items()}


def layer_hamiltonians(rf, controls) -> np.ndarray:
    """Hⁿ(Uⁿ, P^{n+1}, θⁿ) for every layer n at ``controls`` (one trajectory sweep of
    the reduced functional ``rf``, its regulariser and data ranks)."""
    net = rf.net
    traj = rf.trajectory(controls)
    frozen = {k: controls[k] for k in net.layer_names}
    out = np.empty(net.layers)
    for n in range(net.layers):
        theta = {k: controls[k][n] for k in net.layer_names}
        out[n] = hamiltonian(
            net,
            n,
            theta,
            traj.states[n],
            traj.costates[n + 1],
            regulariser=rf.regulariser,
            frozen=frozen,
            data_comm=rf.data_comm,
        )
    return out
