"""The ``metric`` option of the TAO and stochastic trainers: validation; ``l2``
is the Euclidean method on the problem rescaled by hand to x = √ω θ (the Riesz
variables of the L²(M_L) inner product); LMVM's iteration count under mesh
refinement (flat in L², growing in nodal coordinates)."""

from mpi4py import MPI

import numpy as np
import pytest

from pontryx.meshes import create_mesh
from pontryx.solver import ContinuumNetwork, ReducedFunctional, WidthSpace
from pontryx.solver.adjoint.riesz import l2_weights
from pontryx.solver.data import load_dataset
from pontryx.solver.training import make_trainer, minimize

METHODS = {
    "lmvm": {},
    "ntr": {"krylov_max_it": 5},
    "sgd": {"learning_rate": 0.3, "momentum": 0.5, "batch_size": 16, "seed": 1},
    "adam": {"learning_rate": 1e-2, "batch_size": 16, "seed": 1},
    "langevin": {"learning_rate": 0.3, "temperature": 1e-3, "batch_size": 16, "seed": 1},
}


def _problem(mesh=None, n=40, alpha=1e-2, layers=3, comm=MPI.COMM_WORLD):
    ds = load_dataset({"name": "ellipses", "n_train": n, "n_test": 4})
    mesh = mesh or {"kind": "unit_square", "n": 3}
    space = WidthSpace(create_mesh(mesh, comm))
    net = ContinuumNetwork(space, 2, 2, kernel="dense", layers=layers)
    rf = ReducedFunctional(net, ds.X_train, ds.y_train, "classification", alpha=alpha)
    return rf, net.init_controls(seed=0)


class _Rescaled:
    """The reduced functional in the variables x = √ω θ, written out by hand:
    J̃(x) = J(x/√ω), ∇J̃ = ∇J/√ω, ∇²J̃ = ω^{-1/2} ∇²J ω^{-1/2} (trainable names;
    the rest passes through)."""

    def __init__(self, rf, root=None):
        self.rf = rf
        self.root = root or {k: np.sqrt(w) for k, w in l2_weights(rf.net, rf.net.trainable).items()}

    def __getattr__(self, name):
        return getattr(self.rf, name)

    def theta(self, x):
        out = x.copy()
        for k, r in self.root.items():
            out[k] = x[k] / r
        return out

    def x(self, theta):
        out = theta.copy()
        for k, r in self.root.items():
            out[k] = theta[k] * r
        return out

    def value_and_gradient(self, x):
        J, g = self.rf.value_and_gradient(self.theta(x))
        for k, r in self.root.items():
            g[k] = g[k] / r
        return J, g

    def hessian_action(self, x, v):
        """H̃ v = ω^{-1/2} ∇²J ω^{-1/2} v."""
        H = self.rf.hessian_action(self.theta(x), self.theta(v))
        for k, r in self.root.items():
            H[k] = H[k] / r
        return H

    def __call__(self, x):
        return self.rf(self.theta(x))

    def batch(self, index):
        return _Rescaled(self.rf.batch(index), self.root)


def _max_diff(a, b, comm):
    local = max(float(np.max(np.abs(a[k] - b[k]))) for k in a)
    return comm.allreduce(local, op=MPI.MAX)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_metric_is_validated(method):
    rf, theta = _problem()
    with pytest.raises(ValueError, match=r"^metric: expected one of l2, euclidean"):
        make_trainer(method, rf, theta, {**METHODS[method], "metric": "h1"})


@pytest.mark.parametrize("method", sorted(METHODS))
def test_l2_is_euclidean_on_the_rescaled_problem(method, comm):
    """metric: l2 from θ₀ = Euclidean method on J̃ from x₀ = √ω θ₀, mapped back
    (equal to round-off), and it differs from the Euclidean method on J."""
    opts = METHODS[method]
    rf, theta = _problem()
    minimize(rf, theta, method, {**opts, "metric": "l2"}, max_iterations=5)

    rf, theta0 = _problem()
    scaled = _Rescaled(rf)
    x = scaled.x(theta0)
    minimize(scaled, x, method, {**opts, "metric": "euclidean"}, max_iterations=5)
    by_hand = scaled.theta(x)
    scale = comm.allreduce(max(float(np.max(np.abs(v))) for v in theta.values()), op=MPI.MAX)
    assert _max_diff(theta, by_hand, comm) <= 1e-9 * scale

    rf, nodal = _problem()
    minimize(rf, nodal, method, {**opts, "metric": "euclidean"}, max_iterations=5)
    assert _max_diff(theta, nodal, comm) > 1e-3 * scale


def test_l2_gradient_step_is_the_l2_gradient(comm):
    """Full-batch SGD with metric l2: θ₁ = θ₀ − η ω⁻¹ ∇_θ J(θ₀)."""
    rf, theta = _problem()
    theta0 = theta.copy()
    _, g = rf.value_and_gradient(theta0)
    minimize(rf, theta, "sgd", {"learning_rate": 0.1}, max_iterations=1)
    w = l2_weights(rf.net, rf.net.trainable)
    expected = {k: theta0[k] - 0.1 * g[k] / w[k] for k in w}
    scale = comm.allreduce(max(float(np.max(np.abs(v))) for v in theta.values()), op=MPI.MAX)
    assert _max_diff({k: theta[k] for k in w}, expected, comm) <= 1e-12 * scale


def _lmvm_iterations(n, metric, target=0.2, most=150):
    """LMVM iterations until J ≤ target on unit_interval with n cells (100 samples);
    ``most`` + 1 if it takes more than ``most``."""
    rf, theta = _problem({"kind": "unit_interval", "n": n}, n=100, alpha=1e-3, layers=4)
    losses = []
    minimize(rf, theta, "lmvm", {"metric": metric}, max_iterations=most,
          on_record=lambda r: losses.append(r.loss))  # fmt: skip
    return next((i + 1 for i, J in enumerate(losses) if J <= target), most + 1)


def test_l2_metric_makes_lmvm_mesh_independent():
    """Refining 8 → 128 cells: LMVM needs about as many iterations in L²
    (measured 27 → 26) but far more in nodal coordinates (33 → 104)."""
    l2 = [_lmvm_iterations(n, "l2") for n in (8, 128)]
    nodal = [_lmvm_iterations(n, "euclidean") for n in (8, 128)]
    assert l2[1] <= 1.3 * l2[0]
    assert nodal[1] >= 2.0 * nodal[0]
    assert l2[1] < nodal[1]
