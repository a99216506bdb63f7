"""Depth schemes: one layer U^n → U^{n+1}, its exact discrete adjoint, its
tangent-linear map and its second-order adjoint.

Every scheme steps the semi-discrete model  M_L U' = −ε A U + M_L σ(K U + b 1ᵀ)
with the layer's controls θⁿ held constant over [t_n, t_{n+1}], declares its
``order`` (measured in tests/test_schemes.py) and traits (``reversible``,
``n_states``, ``needs_zero_epsilon``), and provides

* ``step``     — the forward layer gⁿ, returning the record its adjoint needs,
* ``adjoint``  — Λⁿ = (∂U^{n+1}/∂Uⁿ)ᵀ Λ^{n+1}, accumulating (∂_θ gⁿ)ᵀ Λ^{n+1}
  (``grad=None``: the state cotangent only, no parameter products),
* ``reverse``  — (reversible schemes only) Uⁿ recomputed from U^{n+1},
* ``tangent``  — dU^{n+1} = ∂_U gⁿ dUⁿ + ∂_θ gⁿ dθⁿ (forward mode), with its record,
* ``adjoint2`` — the adjoint and its derivative along the tangent direction
  (the second-order adjoint, "forward over reverse"): (Λⁿ, dΛⁿ) and both the
  gradient and its directional derivative (a Hessian–vector product) accumulated.

The state is a tuple of multivectors ((U,) or (U, V) for Verlet); Λ likewise.
Notation: B_c = M_L + c ε A, S_c = B_c⁻¹ M_L (the identity when ε = 0). In the
tangent and second-order steps ``dctx`` is the kernel's K'(θ)[dθ]
(:meth:`Kernel.tangent`), ``dtheta`` the kernel part of dθⁿ and ``db`` its bias part.

The optional keyword ``n`` (layer index) only matters for Verlet's first layer.
The optional ``noise`` of ``step`` (and ``reverse``) is the layer's increment
g ΔWⁿ (n × S) of noise in depth (:mod:`pontryx.solver.model.noise`), added to the
explicit update (Euler–Maruyama); ``None``: the deterministic network.
The optional ``record`` of ``step`` says what the caller does with the record:
``"all"`` (the default) for any of ``adjoint``, ``tangent`` and ``adjoint2``;
``"adjoint"`` for the adjoint step alone (an :class:`AdjointRecord`: a scheme may
keep there what its adjoint needs in place of what that is computed from, in the
same memory — IMEX Euler keeps Δt σ'(Zⁿ) instead of Zⁿ); ``None``: no record
(forward-only sweeps; the step skips what only the adjoint needs). Schemes with
``assigns = True`` accept ``adjoint(…, assign=True)``: the layer's gradient arrays
hold no values yet and the step writes them instead of adding to them (no
zero-filled gradient is made and read back).
The optional workspace ``ws`` (:mod:`pontryx.solver.model.workspace`) supplies the
arrays of the step, its record and the adjoint's temporaries (IMEX Euler and
midpoint): the adjoint sweep gives records and costates back once consumed, so
repeated sweeps reuse the same memory. Values are identical with or without it.
"""

from __future__ import annotations

from typing import ClassVar

from pontryx.meshes.errors import InputError
from pontryx.solver.model.diffusion import DiffusionSolver

__all__ = ["AdjointRecord", "Scheme", "vjp2"]


class AdjointRecord(tuple):
    """A layer's record made by ``step(…, record="adjoint")``, for the adjoint step
    alone (see the module docstring)."""


def vjp2(kernel, ctx, dtheta, U, dU, D, dD, grad, dgrad) -> None:
    """The kernel gradient ∂_θ⟨D, K(θ) U⟩ into ``grad`` and its derivative along
    (dθ, dU, dD) into ``dgrad``: ∂_θ⟨dD, K U⟩ + ∂_θ⟨D, K dU⟩ + ∂_θ⟨D, K'[dθ] U⟩."""
    kernel.vjp(ctx, U, D, grad)
    kernel.vjp(ctx, U, dD, dgrad)
    kernel.vjp(ctx, dU, D, dgrad)
    kernel.second_vjp(ctx, dtheta, U, D, dgrad)


class Scheme:
    name: ClassVar[str] = "scheme"
    order: ClassVar[int] = 1
    n_states: ClassVar[int] = 1
    reversible: ClassVar[bool] = False
    needs_zero_epsilon: ClassVar[bool] = False
    #: fractions of Δt at which the stages of a layer see the (continuous) controls
    stage_fractions: ClassVar[tuple[float, ...]] = (0.0,)
    #: multivectors (n × S) in the record a layer keeps for its adjoint
    records: ClassVar[int] = 2
    #: fractions c of Δt of the implicit diffusion solves B_c = M_L + cΔtεA of a layer
    implicit_fractions: ClassVar[tuple[float, ...]] = (1.0,)
    #: whether ``adjoint(…, assign=True)`` writes the layer's gradient (see above)
    assigns: ClassVar[bool] = False

    def __init__(self, space, kernel, activation, dt: float, epsilon: float):
        if self.needs_zero_epsilon and epsilon != 0.0:
            raise InputError(f"the {self.name} scheme needs epsilon = 0", "epsilon")
        self.space, self.kernel, self.sigma = space, kernel, activation
        self.dt, self.epsilon = float(dt), float(epsilon)
        self.solvers: dict[float, DiffusionSolver] = {}

    def _S(self, fraction, Y):
        """S_c Y = B_c⁻¹ M_L Y with c = fraction · Δt (identity when ε = 0)."""
        if self.epsilon == 0.0:
            return Y
        return self._solver(fraction).apply_inverse_times_mass(Y)

    def _ST(self, fraction, L):
        """S_cᵀ L = M_L B_c⁻¹ L."""
        if self.epsilon == 0.0:
            return L
        return self.space.m[:, None] * self._solver(fraction).solve(L)

    def _solver(self, fraction):
        if fraction not in self.solvers:
            self.solvers[fraction] = DiffusionSolver(self.space, fraction * self.dt * self.epsilon)
        return self.solvers[fraction]

    def setup(self) -> None:
        """Create the diffusion solvers of every stage now (ε > 0), so a bad PETSc
        option shows before the run starts; otherwise they are made on first use."""
        if self.epsilon != 0.0:
            for fraction in self.implicit_fractions:
                self._solver(fraction)

    def initial_state(self, U0):
        return (U0,)

    def initial_tangent(self, dU0):
        return (dU0,)

    def step(self, ctx, b, state, n=None, ws=None, noise=None, record="all"):
        raise NotImplementedError

    def adjoint(self, ctx, record, lam, grad, n=None, ws=None, assign=False):
        raise NotImplementedError

    def tangent(self, ctx, dctx, db, record, dstate, n=None):
        raise NotImplementedError

    def adjoint2(self, ctx, dctx, dtheta, record, trecord, lam, dlam, grad, dgrad, n=None):
        raise NotImplementedError

    def destroy(self):
        for s in self.solvers.values():
            s.destroy()
        self.solvers.clear()
