"""The one sweep through depth (solver/adjoint/sweep.py): storage strategies,
the tangent-linear sweep (Taylor rate 2) and the second-order adjoint (Hessian
action: Taylor rate 3, symmetry, storage-independent), for every kernel, depth
scheme and ε, on 1 and 2 ranks."""

from mpi4py import MPI

import numpy as np
import pytest
from test_adjoint import KERNELS, _problem

from pontryx.solver import Sweep
from pontryx.solver.adjoint import Every, Full, Reverse, storage, taylor_test, taylor_test_map
from pontryx.solver.model.random import canonical_normal
from pontryx.solver.outputs.canonical import random_direction, to_canonical

SCHEMES = [("imex_euler", 0.0), ("imex_euler", 0.1), ("midpoint", 0.0), ("midpoint", 0.1)]
SCHEMES += [("verlet", 0.0), ("rk4", 0.0)]
CASES = [(k, o, s, e) for k, o in KERNELS for s, e in SCHEMES]
ALL = ("W", "A", "G", "kappa", "r", "a", "b", "E", "C", "d")


def _names(theta):
    return [k for k in ALL if k in theta]


def _setup(comm=MPI.COMM_WORLD, **kw):
    """The test_adjoint problem with b redrawn in canonical order (rank independent)."""
    net, theta, rf = _problem(comm, **kw)
    theta["b"][...] = 0.2 * canonical_normal(np.random.default_rng(1), net, theta.subset("b"))["b"]
    return net, theta, rf


def _direction(net, theta, seed=5):
    """A canonical direction over every control, scaled by each control's RMS size."""
    return random_direction(net, theta, _names(theta), seed=seed)


def test_storage_strategies():
    assert isinstance(storage(None), Full) and isinstance(storage("reverse"), Reverse)
    assert storage("sqrt").segment(16) == 4 and storage(3).segment(16) == 3
    strategy = Every(2)
    assert storage(strategy) is strategy
    for bad in (0, -1, 2.5, True, "all"):
        with pytest.raises(ValueError, match=r"^checkpointing: "):
            storage(bad)


@pytest.mark.parametrize("kernel,options,scheme,epsilon", CASES)
def test_tangent_linear_sweep_taylor(kernel, options, scheme, epsilon):
    """‖Ŷ(θ + hδ) − Ŷ(θ) − h dŶ‖ = O(h²) along a direction over every control."""
    net, theta, rf = _setup(kernel=kernel, options=options, scheme=scheme, epsilon=epsilon)
    delta = _direction(net, theta)
    _, dY, _ = Sweep(net, theta).tangent(rf.X, delta)
    rates = taylor_test_map(lambda th: net.forward(th, rf.X), theta, delta, dY, h0=1e-2)
    assert min(rates) > 1.95, rates


@pytest.mark.parametrize("kernel,options,scheme,epsilon", CASES)
def test_hessian_action_taylor(kernel, options, scheme, epsilon):
    """J(θ + hδ) − J − h⟨∇J, δ⟩ − ½h²⟨δ, ∇²J δ⟩ = O(h³) (regulariser included):
    the rates approach 3 from below as h → 0 (the last one > 2.9, all > 2.5)."""
    net, theta, rf = _setup(kernel=kernel, options=options, scheme=scheme, epsilon=epsilon)
    delta = _direction(net, theta, seed=11)
    res = taylor_test(rf, theta, delta, h0=1e-2, steps=4, hessian=True)
    assert min(res.rates) > 1.95, res.rates
    assert min(res.rates2) > 2.5 and res.rates2[-1] > 2.9, res.rates2


@pytest.mark.parametrize("task", ["classification", "regression"])
@pytest.mark.parametrize("scheme,epsilon", [("midpoint", 0.1), ("verlet", 0.0)])
def test_hessian_is_symmetric_and_storage_independent(task, scheme, epsilon):
    """⟨u, ∇²J v⟩ = ⟨v, ∇²J u⟩ (an exact Hessian is symmetric), and √N_t or
    reverse storage (which falls back to √N_t here) gives the same action."""
    net, theta, rf = _setup(scheme=scheme, epsilon=epsilon, task=task, layers=5)
    u, v = _direction(net, theta, 7), _direction(net, theta, 8)
    Hv, Hu = rf.hessian_action(theta, v), rf.hessian_action(theta, u)
    a, b = u.dot(Hv), v.dot(Hu)
    assert abs(a - b) <= 1e-10 * max(abs(a), abs(b))
    checkpoint = "reverse" if scheme == "verlet" else "sqrt"
    _, _, rf_chk = _setup(scheme=scheme, epsilon=epsilon, task=task, layers=5,
                            checkpoint=checkpoint)  # fmt: skip
    H2 = rf_chk.hessian_action(theta, v)
    assert (H2 - Hv).norm() <= 1e-12 * Hv.norm()


def test_hessian_action_on_a_subset_of_controls():
    """A direction over some controls only: the others do not move (zero)."""
    net, theta, rf = _setup(kernel="lowrank", options={"rank": 3})
    full = _direction(net, theta)
    part = full.subset(("A", "b"))
    padded = full.zeros_like()
    for k in part:
        padded[k][...] = part[k]
    H1, H2 = rf.hessian_action(theta, part), rf.hessian_action(theta, padded)
    assert (H1 - H2).norm() <= 1e-14 * H2.norm()


def test_trajectory_keeps_every_state_and_costate():
    net, theta, rf = _setup(scheme="verlet", layers=4)
    res = rf.trajectory(theta)
    assert len(res.states) == len(res.costates) == net.layers + 1
    assert all(len(s) == 2 for s in res.states)  # (U, V) for Verlet
    _, g = rf.value_and_gradient(theta)
    traj_grad = rf.reduce(theta, res.gradient, res.misfit, res.stat)[1]
    assert (g - traj_grad).norm() == 0.0  # the same sweep, bit for bit


@pytest.mark.parametrize("kernel,options", KERNELS)
def test_hessian_same_on_any_number_of_ranks(kernel, options):
    """The Hessian action along a canonical direction is rank-count independent."""

    def run(comm):
        net, theta, rf = _setup(comm, kernel=kernel, options=options, epsilon=0.1)
        d = canonical_normal(np.random.default_rng(3), net, theta.subset(_names(theta)))
        H = rf.hessian_action(theta, d)
        return to_canonical(net, H)

    H1, H2 = run(MPI.COMM_SELF), run(MPI.COMM_WORLD)
    for k in H1:
        assert np.max(np.abs(H1[k] - H2[k])) <= 1e-11 * max(np.max(np.abs(H1[k])), 1e-300), k
