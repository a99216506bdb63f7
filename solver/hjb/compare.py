"""The feedback law of the HJB value function against the open-loop solution pontryx finds.

The reduced problem is a pontryx :class:`~pontryx.solver.model.network.ContinuumNetwork`
on an interval of one P1 cell (two dofs: the state u ∈ R²), ε = 0, IMEX Euler
(u^{n+1} = uⁿ + Δt σ(W M_L uⁿ + bⁿ)), one sample whose embedding is the initial
state (U⁰ = E·1 with E = u₀), the kernel W fixed in every layer, the readout C, d
fixed, and the bias bⁿ ∈ [lo, hi]² as the control. Its discrete cost is pontryx's

    J(b) = ½ (Cᵀ M_L u^{N_t} + d − y)² + (α/2) Δt Σ_n ‖bⁿ‖²_{M_L}

(:class:`FixedKernel`: the reduced functional with W's gradient zeroed and its
regulariser term left out — L-BFGS never moves W). Then

* open loop: pontryx's ``lmvm`` on J (run as TAO's bounded ``blmvm``), or any
  method of :func:`~pontryx.solver.training.loop.minimize` that takes bounds;
* closed loop: bⁿ = θ*(t_n, uⁿ) from the value function (:meth:`.scheme.ValueFunction.
  feedback`) along the same IMEX Euler steps, and J evaluated by the same
  reduced functional — so both costs are of the same discrete problem, and the
  closed-loop cost is never below the open-loop optimum (when the open-loop
  method finds the global minimum); both converge to V(0, u₀) as the grid, Δτ
  and Δt are refined.
"""

from __future__ import annotations

from mpi4py import MPI

import numpy as np

from pontryx.meshes import create_mesh
from pontryx.meshes.errors import InputError
from pontryx.solver.adjoint.reduced import ReducedFunctional
from pontryx.solver.hjb.system import reduced_network
from pontryx.solver.model.bounds import Bounds
from pontryx.solver.model.network import ContinuumNetwork
from pontryx.solver.model.width import WidthSpace
from pontryx.solver.training.loop import minimize

__all__ = ["FixedKernel", "ReducedNetwork", "open_loop_options"]


def open_loop_options(options: dict | None) -> dict:
    """The open-loop method's options: ``options`` over a tight TAO tolerance."""
    return {"gatol": 1e-10, **(options or {})}


class FixedKernel(ReducedFunctional):
    """J over the bias alone: the kernel's gradient is zeroed and only b is regularised."""

    def __init__(self, net, X, y, **kwargs):
        super().__init__(net, X, y, "regression", **kwargs)
        self.regulariser.weights = {"b": net.space.m}
        self.fixed = tuple(k for k in net.kernel.shapes())

    def value_and_gradient(self, controls):
        J, grad = super().value_and_gradient(controls)
        for name in self.fixed:
            grad[name][...] = 0.0
        return J, grad

    def hessian_action(self, controls, direction):
        H = super().hessian_action(controls, direction)
        for name in self.fixed:
            H[name][...] = 0.0
        return H


class ReducedNetwork:
    """The two-state network of the module docstring: ``W`` (2×2, canonical dof
    order), ``C`` (2,), ``d``, target ``y``, regulariser ``alpha``, control box
    ``bound`` (c or [lo, hi]), depth ``T`` with ``layers`` layers, ``activation``;
    ``width_mesh``: the width mesh, an interval of one cell (default {kind: interval, n: 1},
    i.e. [0, 1]: M_L = diag(½, ½)). ``system`` is the same problem as a
    :class:`~.system.SeparableSystem` (the HJB solver's input)."""

    def __init__(
        self,
        W,
        C,
        d,
        y,
        alpha,
        bound,
        T=1.0,
        layers=16,
        activation="tanh",
        comm=None,
        width_mesh=None,
    ):
        comm = MPI.COMM_SELF if comm is None else comm
        desc = {"kind": "interval", "n": 1} if width_mesh is None else dict(width_mesh)
        try:
            mesh = create_mesh(desc, comm)
        except InputError as e:
            raise e.under("width_mesh") from None
        self.space = WidthSpace(mesh)
        if self.space.N != 2:
            self.space.destroy()
            raise InputError(
                f"the reduced network has two states; this mesh has {self.space.N} dofs",
                "width_mesh",
            )
        sp = self.space
        self.net = ContinuumNetwork(
            sp, 1, 1, T=T, layers=layers, activation=activation, train_readout=False
        )
        self.W, self.C = np.asarray(W, dtype=float), np.asarray(C, dtype=float)
        self.d, self.y, self.alpha = float(d), float(y), float(alpha)
        m = sp.to_canonical(sp.m)
        self.system = reduced_network(self.W, m, self.C, self.d, self.y, alpha, bound, activation)
        self.bounds = Bounds(
            {"b": [float(self.system.lo[0]), float(self.system.hi[0])]}, self.net.trainable
        )
        if not np.allclose(self.system.lo, self.system.lo[0]) or not np.allclose(
            self.system.hi, self.system.hi[0]
        ):
            raise ValueError("the open-loop bounds take one interval for both components")

    @property
    def layers(self) -> int:
        return self.net.layers

    def controls(self, u0, b=None):
        """Controls of the network for the initial state ``u0`` and biases ``b``
        (N_t × 2, canonical order; default 0)."""
        net, sp = self.net, self.space
        c = net.init_controls(seed=0)
        W = sp.from_canonical(self.W, axis_full=True)
        c["W"][...] = W[None]
        c["b"][...] = 0.0 if b is None else np.stack([sp.from_canonical(r) for r in b])
        c["C"][:, 0] = sp.from_canonical(self.C)
        c["d"][:] = self.d
        c["E"][:, 0] = sp.from_canonical(np.asarray(u0, dtype=float))
        return c

    def functional(self) -> FixedKernel:
        return FixedKernel(self.net, np.ones((1, 1)), np.array([[self.y]]), alpha=self.alpha)

    def cost(self, controls) -> float:
        """J of the discrete problem at ``controls``."""
        return float(self.functional()(controls))

    def trajectory(self, controls) -> np.ndarray:
        """u⁰ … u^{N_t} (N_t + 1 × 2, canonical order) by pontryx's forward sweep."""
        _, states = self.net.forward(controls, np.ones((1, 1)), keep=range(self.layers + 1))
        return np.array([self.space.to_canonical(U)[:, 0] for U in states])

    def open_loop(self, u0, method="lmvm", options=None, max_iterations=500):
        """(J, controls, TrainResult): pontryx minimises J over b in the box."""
        controls = self.controls(u0)
        rf = self.functional()
        opts = open_loop_options(options)
        result = minimize(
            rf, controls, method, opts, max_iterations=max_iterations, bounds=self.bounds
        )
        return float(rf(controls)), controls, result

    def closed_loop(self, value_function, u0):
        """(J, controls): bⁿ = θ*(t_n, uⁿ) along the network's own steps."""
        net, sys = self.net, self.system
        u, bs = np.asarray(u0, dtype=float), []
        for n in range(net.layers):
            b = value_function.feedback(n * net.dt, u)
            bs.append(b)
            u = u + net.dt * sys.velocity(u[:, None], b[:, None])[:, 0]
        controls = self.controls(u0, np.array(bs))
        return self.cost(controls), controls

    def destroy(self) -> None:
        self.net.destroy()
        self.space.destroy()
