"""A continuum network as the prior of a PDE inverse problem: the chained reduced functional.

The log-coefficient is the output of a continuum network applied to the
coordinates of the physical dofs (Mitusch, Funke & Kuchta, "Hybrid FEM-NN models:
combining artificial neural networks with the finite element method", J. Comput.
Phys. 446 (2021) 110651, did this with dolfin-adjoint and a dense network):

    m_j(θ) = N_θ(x_j)   (x_j the dof coordinates of V_h on Ω_phys; one network output),
    J(θ) = Φ(u(m(θ))) + R(m(θ)) + R_net(θ),

Φ, R and u(m) as in :mod:`.misfit`, R_net the network's own regulariser
(:class:`~pontryx.solver.adjoint.reduced.Regulariser`: α, β and γ of ``training``).
The network's width mesh is its own; its samples are the coordinates x_j.

Gradient, by the chain rule through two adjoints: the PDE adjoint gives the
cotangent g = dj/dm (one state and one adjoint solve), and the network's
discrete adjoint sweep takes g as the cotangent of its outputs Ŷ = m
(:meth:`~pontryx.solver.adjoint.sweep.Sweep.gradient` with the misfit callback
returning g): ∇J(θ) = (∂m/∂θ)ᵀ g + ∇R_net(θ), exact for the discrete J (Taylor
rate 2, tests/test_inverse.py).

Parallel layout: the physical mesh is partitioned over all ranks; the network
runs on the width × data layout of ``parallel``. A data group's samples are the
dofs its width ranks own (gathered within the width communicator, which runs
one sweep over all of them); each rank keeps the outputs of its own dofs, and
the cotangents are gathered the same way. The data groups hold disjoint dofs, so
their parameter gradients are summed over the data communicator. The value and
the gradient do not depend on the number of ranks beyond round-off.
"""

from __future__ import annotations

from mpi4py import MPI

import numpy as np

from pontryx.solver.adjoint.reduced import Regulariser, layer_gradient_norms
from pontryx.solver.adjoint.sweep import Sweep

__all__ = ["InverseFunctional", "KappaError"]


class InverseFunctional:
    """θ ↦ J(θ) above, with the interface the trainers use (``net``, ``last``,
    :meth:`value_and_gradient`, :meth:`metric`, :meth:`layer_stationarity`).

    ``net``: a :class:`~pontryx.solver.model.network.ContinuumNetwork` with
    n_in = gdim inputs and one output; ``misfit``: a :class:`~.misfit.ReducedMisfit`
    on the physical mesh; ``layout``: the network's width × data
    :class:`~pontryx.solver.layout.Layout` (its world is the physical mesh's
    communicator); ``alpha``, ``beta``, ``gamma``: the network regulariser;
    ``checkpoint``: the sweep's storage (``training.checkpointing``).
    """

    task = "regression"

    def __init__(self, net, misfit, layout, *, alpha=0.0, beta=0.0, gamma=0.0, checkpoint=None):
        self.net, self.misfit, self.layout = net, misfit, layout
        self.pde = misfit.pde
        self.data_comm = layout.data
        self.regulariser = Regulariser(net, alpha, beta, gamma)
        self.checkpoint = checkpoint
        Sweep(net, None, checkpoint)  # check the storage strategy now
        width = layout.width
        counts = np.array(width.allgather(self.pde.n), dtype=np.int64)
        self._counts = counts
        self._start = int(counts[: width.rank].sum())
        gdim = self.pde.x.shape[1]
        X = np.empty((int(counts.sum()), gdim))
        width.Allgatherv(np.ascontiguousarray(self.pde.x), [X, counts * gdim])
        #: inputs of this data group's sweep (n_in × S_group): the dof coordinates
        self.X = np.ascontiguousarray(X.T)
        self.S = self.pde.N  # every dof of V_h is one sample
        self.last: dict | None = None
        self._grad = None

    @property
    def alpha(self) -> float:
        return self.regulariser.alpha

    @property
    def beta(self) -> float:
        return self.regulariser.beta

    @property
    def gamma(self) -> float:
        return self.regulariser.gamma

    # -- the network's output: m = log κ ----------------------------------------------------
    def parameter(self, controls) -> np.ndarray:
        """m(θ) on this rank's dofs (one forward sweep)."""
        Yhat = Sweep(self.net, controls, self.checkpoint).forward(self.X)[0]
        return self._own(Yhat)

    def _own(self, Yhat) -> np.ndarray:
        return np.ascontiguousarray(Yhat[0, self._start : self._start + self.pde.n])

    def _gathered(self, g: np.ndarray) -> np.ndarray:
        """The cotangents of all samples of this data group (1 × S_group)."""
        out = np.empty(int(self._counts.sum()))
        self.layout.width.Allgatherv(np.ascontiguousarray(g), [out, self._counts])
        return out[None, :]

    # -- J and ∇J --------------------------------------------------------------------------
    def __call__(self, controls) -> float:
        """J(θ): one forward sweep and one state solve."""
        value, _ = self.misfit.value_and_gradient(self.parameter(controls), gradient=False)
        self.last = self._last()
        return float(value + self.regulariser(controls))

    def _last(self) -> dict:
        """The misfit's record with ``misfit`` = Φ + R (the misfit functional j(m) of
        the network's output, as metrics.csv's ``misfit``), ``phi`` = Φ and
        ``regulariser`` = R."""
        last = dict(self.misfit.last)
        last["phi"] = float(last["misfit"])
        last["misfit"] = float(last["misfit"] + last["regulariser"])
        return last

    def value_and_gradient(self, controls):
        """(J(θ), ∇J(θ)): a forward sweep, a state and an adjoint solve, an adjoint sweep."""

        def pde_misfit(Yhat):
            value, g = self.misfit.value_and_gradient(self._own(Yhat))
            return value, self._gathered(g), self.misfit.last["stat"]

        res = Sweep(self.net, controls, self.checkpoint).gradient(self.X, pde_misfit)
        grad = res.gradient
        self._data_sum(grad)
        J = float(res.misfit + self.regulariser(controls, grad))
        self.last = {**self._last(), "J": J, "gradient": grad}
        self._grad = grad
        return J, grad

    def hessian_action(self, controls, direction):
        raise NotImplementedError(
            "the network-prior inverse problem has no exact Hessian action; use a gradient "
            "method or hessian: fd"
        )

    def _data_sum(self, grad) -> None:
        comm = self.data_comm
        if comm.size == 1:
            return
        for name in grad:
            comm.Allreduce(MPI.IN_PLACE, grad[name], op=MPI.SUM)

    # -- what the trainers report -----------------------------------------------------------
    def metric(self, stat: float | None = None) -> float:
        """The discrepancy √(Σ r_i²/M): the RMS of the noise-normalised residual."""
        return self.misfit.discrepancy(stat)

    def layer_stationarity(self, grad=None) -> np.ndarray:
        """‖∂J/∂θⁿ‖ / Δt per layer (as :meth:`ReducedFunctional.layer_stationarity`)."""
        g = grad if grad is not None else self._grad
        return np.asarray(layer_gradient_norms(self.net, g)) / self.net.dt

    def stationarity(self, grad=None) -> float:
        return float(np.max(self.layer_stationarity(grad)))

    def derivative(self):
        return self._grad


class KappaError:
    """The "test metric" of an inverse run with a known κ†: ``err(θ)`` evaluates
    m(θ) (a forward sweep, no PDE solve) and :meth:`metric` returns the relative
    L² error ‖κ(θ) − κ†‖/‖κ†‖ (:func:`~.misfit.relative_error`)."""

    def __init__(self, functional: InverseFunctional, error):
        self.functional, self.error = functional, error
        self.value = float("nan")

    def __call__(self, controls) -> float:
        self.value = self.error(self.functional.parameter(controls))
        return self.value

    def metric(self) -> float:
        return self.value
