"""The reduced functional J(θ) of a continuum network, in the spirit of pyadjoint.

    J(θ) = (1/S) Σ_s ℓ(ŷ_s(θ), y_s)
           + (α/2) Δt Σ_n ‖θⁿ‖²  +  (β/2) Δt Σ_n ‖(θ^{n+1} − θⁿ)/Δt‖²

(DESIGN.md §1, with the time integrals by the rectangle rule and the lumped L²
norms of :meth:`ContinuumNetwork.regularisation_weights`), over the layer
controls θⁿ = (Kⁿ, bⁿ). ``rf(θ)`` evaluates J; ``rf.derivative()`` returns the
exact gradient of the discrete J at the last θ (one forward and one adjoint
sweep, one Allreduce over the data ranks); ``rf.pontryagin_residual()`` is
max_n ‖∂_θ Hⁿ‖ = max_n ‖∂J/∂θⁿ‖/Δt, which vanishes at a stationary point
(Pontryagin's maximum principle for the discrete problem).
"""

from __future__ import annotations

from mpi4py import MPI

import numpy as np

from pontryx.solver.adjoint import gradient_sweep, layer_gradient_norms
from pontryx.solver.controls import Controls
from pontryx.solver.loss import LOSSES

__all__ = ["ReducedFunctional", "regulariser"]


def regulariser(net, controls, alpha: float, beta: float, grad: Controls | None = None) -> float:
    """R(θ) (summed over the width ranks); adds ∂R/∂θ to ``grad`` if given.

    Evaluated layer by layer in two work arrays of one layer's shape (from the
    network's workspace), so no temporary of the size of all controls is made."""
    if alpha == 0 and beta == 0:
        return 0.0
    dt, local, L, ws = net.dt, 0.0, net.layers, net.workspace
    for name, w in net.regularisation_weights().items():
        th = controls[name]
        g = grad[name] if grad is not None else None
        a, d = ws.take(th.shape[1:]), ws.take(th.shape[1:])
        for n in range(L):
            if alpha:
                np.multiply(w, th[n], out=a)  # ω θⁿ
                local += 0.5 * alpha * dt * float(np.vdot(a, th[n]))
                if g is not None:
                    a *= alpha * dt
                    g[n] += a
            if beta and n + 1 < L:
                np.subtract(th[n + 1], th[n], out=d)  # θⁿ⁺¹ − θⁿ
                np.multiply(w, d, out=a)
                local += 0.5 * beta / dt * float(np.vdot(a, d))
                if g is not None:
                    a *= beta / dt
                    g[n] -= a
                    g[n + 1] += a
        ws.give(a, d)
    return net.space.sum(local)


class ReducedFunctional:
    """θ ↦ J(θ) for a network, a local block of samples and a loss.

    ``X`` (S_local × n_in) and ``y`` hold this data group's samples; ``S`` is
    the global number of samples (default: the sum over the data ranks).
    ``layout`` gives the data communicator (``None``: no data split).
    """

    def __init__(
        self,
        net,
        X,
        y,
        task="classification",
        *,
        alpha=0.0,
        beta=0.0,
        layout=None,
        S=None,
        checkpoint=None,
    ):
        self.net = net
        self.X = np.ascontiguousarray(np.asarray(X, dtype=float).T)
        self.task = task
        if task == "classification":
            self.y = np.asarray(y, dtype=np.int64)
        else:
            self.y = np.asarray(y, dtype=float).reshape(len(y), -1).T.copy()
        self.alpha, self.beta = float(alpha), float(beta)
        self.data_comm = layout.data if layout is not None else MPI.COMM_SELF
        self.S = int(S) if S is not None else self.data_comm.allreduce(self.X.shape[1])
        self.checkpoint = checkpoint
        self._loss = LOSSES[task]
        self.last = None

    @property
    def S_local(self) -> int:
        return self.X.shape[1]

    def _misfit(self, Yhat):
        return self._loss(Yhat, self.y, self.S)

    def __call__(self, controls: Controls) -> float:
        """J(θ) (forward sweep only)."""
        Yhat = self.net.forward(controls, self.X)
        misfit, _, stat = self._misfit(Yhat)
        misfit, stat = self.data_comm.allreduce(np.array([misfit, stat]), op=MPI.SUM)
        self.last = {"misfit": misfit, "stat": stat}
        return misfit + regulariser(self.net, controls, self.alpha, self.beta)

    def value_and_gradient(self, controls: Controls):
        """(J(θ), ∇J(θ)) with one forward and one adjoint sweep."""
        res = gradient_sweep(self.net, controls, self.X, self._misfit, self.checkpoint)
        J, grad, misfit, stat = self.reduce(controls, res.gradient, res.misfit, res.stat)
        self.last = {"misfit": misfit, "stat": stat, "J": J, "gradient": grad}
        self._grad = grad
        return J, grad

    def reduce(self, controls, grad: Controls, misfit: float, stat: float):
        """Sum a local gradient, misfit and statistic over the data ranks (one
        Allreduce) and add the regulariser: returns (J, ∇J, misfit, stat)."""
        if self.data_comm.size > 1:
            names = list(grad)
            buf = np.concatenate([grad[k].ravel() for k in names] + [[misfit, stat]])
            self.data_comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            i = 0
            for k in names:
                grad[k].ravel()[:] = buf[i : i + grad[k].size]
                i += grad[k].size
            misfit, stat = buf[-2:]
        J = misfit + regulariser(self.net, controls, self.alpha, self.beta, grad)
        return float(J), grad, float(misfit), float(stat)

    def derivative(self) -> Controls:
        """∇J at the θ of the last :meth:`value_and_gradient` call."""
        return self._grad

    def pontryagin_residual(self, grad: Controls | None = None) -> float:
        """max_n ‖∂_θ Hⁿ‖ = max_n ‖∂J/∂θⁿ‖ / Δt."""
        g = grad if grad is not None else self._grad
        return float(np.max(layer_gradient_norms(self.net, g))) / self.net.dt

    def metric(self, stat: float | None = None) -> float:
        """Accuracy (classification) or root-mean-square error (regression)."""
        stat = self.last["stat"] if stat is None else stat
        if self.task == "classification":
            return stat / self.S
        return float(np.sqrt(stat / (self.S * self.y.shape[0])))

    def batch(self, index) -> ReducedFunctional:
        """The same functional on a subset of the local samples (a minibatch);
        S becomes the global size of the minibatch."""
        Xb = self.X.T[index]
        yb = self.y[index] if self.task == "classification" else self.y.T[index]
        rf = ReducedFunctional(
            self.net,
            Xb,
            yb,
            self.task,
            alpha=self.alpha,
            beta=self.beta,
            S=self.data_comm.allreduce(len(Xb)),
            checkpoint=self.checkpoint,
        )
        rf.data_comm = self.data_comm
        return rf
