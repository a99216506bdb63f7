"""Pontryagin-based training: MSA / E-MSA sweeps (Li, Chen, Tai & E 2018).

Sign conventions (the block gradient at θ_old is ∂J/∂θⁿ), Taylor tests of every
E-MSA block objective (exact for IMEX Euler, central differences otherwise),
descent, bit-for-bit resume and rank independence (width and data splits). The
one-shot Euler–Lagrange solve is tested in tests/test_oneshot.py."""

import itertools

from mpi4py import MPI

import numpy as np
import pytest
from tiny import ellipses_problem

from pontryx.solver import Layout
from pontryx.solver.adjoint.taylor import taylor_test
from pontryx.solver.training.msa import EMSA, MSA


def _problem(comm=MPI.COMM_WORLD, **kw):
    """(rf, controls) for a tiny network on ellipses samples (:mod:`tiny`)."""
    return ellipses_problem(comm, **kw)


def _all(comm, flag):
    return comm.allreduce(bool(flag), op=MPI.LAND)


def _random_like(x, seed):
    """A random direction, replicated entries (d) equal on all width ranks."""
    rng = np.random.default_rng([seed, x.comm.rank])
    d = x.zeros_like()
    for k in d:
        d[k][...] = rng.standard_normal(d[k].shape)
        if k == "d":
            d[k][...] = x.comm.bcast(d[k], root=0)
    return d


# -- the sweep and the block objectives -------------------------------------------------
def test_trajectory_gradient_equals_reduced_gradient():
    rf, th = _problem(beta=1e-2, train_embedding=True)
    J, g = rf.value_and_gradient(th)
    traj = rf.trajectory(th)
    J2, g2, _, _ = rf.reduce(th, traj.gradient, traj.misfit, traj.stat)
    assert J2 == J
    assert (g - g2).norm() == 0.0


@pytest.mark.parametrize("curvature", ["none", "gauss_newton"])
@pytest.mark.parametrize("scheme", ["imex_euler", "midpoint", "verlet", "rk4"])
def test_block_gradient_at_old_controls_is_dJ(scheme, curvature):
    """At θ_old the ρ terms (and the state curvature) are stationary, so every
    block's gradient is the corresponding part of ∂J/∂θ: ∇_θ(−Hⁿ) = ∂J/∂θⁿ (with
    Λ = ∂J/∂U, H = ⟨−Λ, g⟩ − R)."""
    rf, th = _problem(beta=1e-2, delta=1e-2, scheme=scheme, train_embedding=True, layers=3)
    _, g = rf.value_and_gradient(th)
    trainer = EMSA(rf, th.copy(), rho=5.0, curvature=curvature, order="jacobi")
    traj = rf.trajectory(th, sensitivities=True)
    for key, problem in trainer.blocks(traj, rf.X, rf._misfit, rf.S):
        _, gb = problem.value_and_gradient(trainer._block_controls(key, th).copy())
        ref = trainer._block_controls(key, g)
        err = (gb - ref).norm() / ref.norm()
        assert err < 1e-10, (key, err)


@pytest.mark.parametrize("scheme", ["imex_euler", "midpoint", "verlet", "rk4"])
def test_layer_block_without_rho_is_minus_the_hamiltonian(scheme):
    """E-MSA's layer objective without its ρ terms is −Hⁿ(Uⁿ, Pⁿ⁺¹, θ) of
    :mod:`pontryx.solver.adjoint.hamiltonian` (the batched Hamiltonian that
    tests/test_forms.py holds equal to the UFL forms), with the α, β and γ terms
    of the regulariser, at controls away from the sweep's."""
    from pontryx.solver.adjoint.hamiltonian import hamiltonian

    rf, th = _problem(beta=1e-2, scheme=scheme, layers=3, n=8)
    rf.gamma = 1e-2
    trainer = EMSA(rf, th.copy(), rho=5.0, order="jacobi")
    traj = rf.trajectory(th)
    for key, problem in trainer.blocks(traj, rf.X, rf._misfit, rf.S):
        if not isinstance(key, int):
            continue
        x0 = trainer._block_controls(key, th).copy()
        theta = x0.copy().axpy(0.3, _random_like(x0, 30 + key))
        H = hamiltonian(
            rf.net,
            key,
            {k: theta[k] for k in theta},
            traj.states[key],
            traj.costates[key + 1],
            regulariser=rf.regulariser,
            frozen={k: th[k] for k in rf.net.layer_names},
        )
        assert abs(problem.without_rho(theta) + H) <= 1e-12 * max(1.0, abs(H)), (key, H)


@pytest.mark.parametrize("curvature", ["none", "gauss_newton"])
@pytest.mark.parametrize(
    "scheme, kernel", [("imex_euler", "dense"), ("imex_euler", "lowrank"), ("verlet", "dense")]
)
def test_emsa_block_objectives_taylor(scheme, kernel, curvature):
    """Taylor rate 2 for every E-MSA block objective (layers with all three terms
    or with the Gauss–Newton state curvature, readout with the costate term
    through the loss Hessian, embedding; the last two with δ's term) at a point
    away from θ_old, where the ρ terms do not vanish."""
    options = {"kernel_options": {"rank": 2}} if kernel == "lowrank" else {}
    rf, th = _problem(
        scheme=scheme, kernel=kernel, train_embedding=True, layers=3, n=8, delta=0.1, **options
    )
    trainer = EMSA(rf, th.copy(), rho=3.0, curvature=curvature)
    traj = rf.trajectory(th, sensitivities=True)
    for i, (key, problem) in enumerate(trainer.blocks(traj, rf.X, rf._misfit, rf.S)):
        x0 = trainer._block_controls(key, th).copy()
        x1 = x0.copy().axpy(0.1, _random_like(x0, 10 + i))
        res = taylor_test(problem, x1, _random_like(x0, 20 + i), h0=1e-2, steps=4)
        assert res.min_rate > 1.95, (key, res.table())


def test_costate_term_finite_difference_matches_exact():
    """The O(h²) central difference used for the non-IMEX schemes agrees with
    the exact IMEX Euler formula."""
    rf, th = _problem(layers=3, n=8)
    trainer = EMSA(rf, th.copy(), rho=3.0, curvature="none", order="jacobi")
    traj = rf.trajectory(th)
    _, layer = next(iter(trainer.blocks(traj, rf.X, rf._misfit, rf.S)))
    x0 = trainer._block_controls(0, th).copy()
    x = x0.copy().axpy(0.1, _random_like(x0, 1))
    _, exact = layer.value_and_gradient(x)
    layer.exact = False
    _, fd = layer.value_and_gradient(x)
    assert (exact - fd).norm() / exact.norm() < 1e-7


# -- MSA and E-MSA ---------------------------------------------------------------------------
def test_emsa_monotone_and_msa_not_a_descent_method():
    rf, th = _problem(alpha=1e-2)
    J0 = rf(th)
    published = {"curvature": "none", "order": "jacobi"}
    emsa = [
        r.loss for r in EMSA(rf, th.copy(), rho=10.0, step_control=False, **published).iterate(5)
    ]
    assert all(b < a for a, b in itertools.pairwise([J0, *emsa])), emsa
    msa = [r.loss for r in MSA(rf, th.copy(), step_control=False).iterate(5)]
    assert max(msa) > J0  # plain MSA overshoots on this problem; E-MSA's ρ terms prevent it


@pytest.mark.parametrize("method", [MSA, EMSA])
def test_step_control_makes_a_descent_method(method):
    """With the default step control both published sweeps are monotone from ρ₀ = 1
    (E-MSA: ρ adapted, rejected sweeps re-solved with 4ρ) and λ = 1 (MSA:
    backtracking along the sweep), on a problem where plain MSA overshoots."""
    rf, th = _problem(alpha=1e-4)
    J0 = rf(th)
    kw = dict(rho=1.0, curvature="none", order="jacobi") if method is EMSA else {}
    recs = list(method(rf, th.copy(), **kw).iterate(6))
    losses = [J0] + [r.loss for r in recs]
    assert all(b <= a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < 0.9 * J0
    assert sum(r.extra["rejected"] for r in recs) > 0  # the control was needed
    if method is MSA:
        assert all(0 < r.extra["step"] <= 1 for r in recs)
    else:
        assert all(r.extra["rho"] > 0 for r in recs)


def test_l2_metric_inner_solver():
    """The inner L-BFGS in the L² metric (default) and in nodal coordinates both
    decrease every block objective; the L² iteration is the Euclidean one on √ω θ."""
    rf, th = _problem(layers=3, n=8, alpha=1e-3)
    results = {}
    for metric in ("l2", "euclidean"):
        t = EMSA(rf, th.copy(), rho=3.0, metric=metric, step_control=False)
        (rec,) = list(t.iterate(1))
        assert rec.extra["decrease"] > 0 and rec.loss < rf(th)
        results[metric] = t.controls
    assert (results["l2"] - results["euclidean"]).norm() > 0


def test_msa_decreases_the_loss():
    rf, th = _problem(alpha=1.0, T=0.5)
    J0 = rf(th)
    recs = list(MSA(rf, th.copy(), inner_iterations=5).iterate(2))
    assert recs[0].loss < 0.75 * J0
    assert recs[1].loss < recs[0].loss
    r = recs[-1]
    assert r.iteration == 2 and r.extra["rho"] == 0.0 and r.extra["decrease"] > 0
    assert np.isfinite(r.grad_norm) and np.isfinite(r.stationarity) and r.stationarity > 0


def test_emsa_record_is_the_full_gradient_after_the_update():
    rf, th = _problem()
    t = EMSA(rf, th.copy(), rho=10.0)
    (rec,) = list(t.iterate(1))
    J, g = rf.value_and_gradient(t.controls)
    assert rec.loss == pytest.approx(J, rel=1e-14)
    assert rec.grad_norm == pytest.approx(t.gradient_norm(g), rel=1e-12)  # L² (metric l2)
    assert rec.stationarity == pytest.approx(rf.stationarity(g), rel=1e-12)
    assert rec.extra["rho"] == 10.0


def test_emsa_minibatch_resume_is_bit_identical(comm):
    rf, th = _problem()
    opts = {"rho": 10.0, "batch_size": 6, "seed": 3}
    a = EMSA(rf, th.copy(), **opts)
    ra = [r.loss for r in a.iterate(4)]
    b = EMSA(rf, th.copy(), **opts)
    rb = [r.loss for r in b.iterate(2)]
    state = b.state()
    c = EMSA(rf, rf.net.init_controls(seed=5), **opts)
    c.restore(state)
    rb += [r.loss for r in c.iterate(2)]
    assert ra == rb
    assert _all(comm, all(np.array_equal(a.controls[k], c.controls[k]) for k in a.controls))
    assert c.iteration == 4


@pytest.mark.parametrize("method", [MSA, EMSA])
def test_sweeps_rank_independent(comm, method):
    """Width split vs data split vs one rank: the same losses up to round-off."""
    kw = {"rho": 10.0} if method is EMSA else {}
    losses = []
    for layout in (None, Layout.create(comm, data=comm.size)):
        rf, th = _problem(comm=comm, layout=layout)
        losses.append([r.loss for r in method(rf, th.copy(), **kw).iterate(2)])
    rf, th = _problem(comm=MPI.COMM_SELF)
    losses.append([r.loss for r in method(rf, th.copy(), **kw).iterate(2)])
    for ls in losses[1:]:
        np.testing.assert_allclose(ls, losses[0], rtol=1e-10)


def test_option_errors():
    rf, th = _problem(layers=2, n=4)
    with pytest.raises(ValueError, match=r"^rho: "):
        EMSA(rf, th, rho=0.0)
    with pytest.raises(ValueError, match=r"^inner_iterations: "):
        EMSA(rf, th, inner_iterations=0)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match=r"^batch_size: "):
            MSA(rf, th, batch_size=bad)
    assert MSA(rf, th, batch_size=100).batch_size is None  # ≥ the samples: full, as sgd/adam
    with pytest.raises(ValueError, match=r"^rho: not an option"):
        MSA(rf, th, rho=1.0)
    with pytest.raises(ValueError, match=r"^metric: expected one of"):
        EMSA(rf, th, metric="h1")
    with pytest.raises(ValueError, match=r"^step_control: "):
        MSA(rf, th, step_control="yes")
    rf, th = _problem(layers=2, n=4, train_embedding=True)
    with pytest.raises(ValueError, match=r"^method: method .msa. cannot train the embedding"):
        MSA(rf, th)


def test_registry_and_train_driver():
    from pontryx.solver.training import METHODS, method_class, minimize

    assert method_class("msa") is MSA and method_class("emsa") is EMSA
    assert {"msa", "emsa"} <= set(METHODS)
    rf, th = _problem(n=8, layers=2)
    res = minimize(rf, th, "emsa", {"rho": 10.0, "inner_iterations": 3}, max_iterations=3)
    assert len(res.history) == 3 and res.history[-1].loss < res.history[0].loss


# -- E-MSA with the Gauss–Newton state curvature -------------------------------------------
@pytest.mark.parametrize("scheme", ["imex_euler", "verlet"])
def test_sensitivities_are_output_derivatives(scheme, comm):
    """Λ_kⁿ = ∂Ŷ_k/∂Uⁿ per sample: Σ_i Λ_kⁿ[i, s] V[i, s] equals the central
    difference of Ŷ_k,s along a perturbation V of the state entering layer n."""
    from pontryx.solver.adjoint.sweep import Sweep

    rf, th = _problem(comm, scheme=scheme, layers=3, n=6)
    traj = rf.trajectory(th, sensitivities=True)
    assert len(traj.sensitivities) == 2 and len(traj.sensitivities[0]) == 4
    sweep = Sweep(rf.net, th)
    n = 1
    V = np.random.default_rng([3, comm.rank]).standard_normal(traj.states[n][0].shape)

    def out(h):
        state = tuple(u.copy() for u in traj.states[n])
        state = (state[0] + h * V, *state[1:])
        for layer in range(n, rf.net.layers):
            state, _ = sweep.step(layer, state)
        return rf.net.readout(th, state[0])

    h = 1e-6
    fd = (out(h) - out(-h)) / (2 * h)
    for k, path in enumerate(traj.sensitivities):
        pred = rf.net.space.sum(np.sum(path[n][0] * V, axis=0))
        np.testing.assert_allclose(pred, fd[k], rtol=1e-6, atol=1e-9)


def test_gauss_newton_emsa_ahead_of_lmvm_per_iteration():
    """The default E-MSA (Gauss–Newton state curvature, Gauss–Seidel sweep) lowers
    J further per iteration than TAO's lmvm (measured here: 5 and 10 iterations)."""
    from pontryx.solver.training import minimize

    rf, th = _problem(n=32, alpha=1e-4, layers=4)
    emsa = [r.loss for r in EMSA(rf, th.copy()).iterate(10)]
    rf2, th2 = _problem(n=32, alpha=1e-4, layers=4)
    lmvm = [r.loss for r in minimize(rf2, th2, "lmvm", max_iterations=10).history]
    assert emsa[4] < lmvm[4] and emsa[9] < lmvm[9], (emsa, lmvm)
    assert all(b <= a for a, b in itertools.pairwise(emsa))


@pytest.mark.parametrize("order", ["gauss_seidel", "jacobi"])
def test_orders_descend_and_report_the_hamiltonian(order):
    """Both sweeps are descent methods; every record carries the layers'
    stationarity ‖∂_θ Hⁿ‖ and the maximum-principle gap lower bounds (≥ 0)."""
    rf, th = _problem(alpha=1e-3, layers=3)
    J0 = rf(th)
    recs = list(EMSA(rf, th.copy(), order=order).iterate(4))
    losses = [J0] + [r.loss for r in recs]
    assert all(b <= a for a, b in itertools.pairwise(losses)) and losses[-1] < 0.9 * J0
    for r in recs:
        assert len(r.layers["stationarity"]) == 3 and len(r.layers["gap"]) == 3
        assert min(r.layers["gap"]) >= 0 and r.extra["gap"] == max(r.layers["gap"])
        assert r.stationarity == max(r.layers["stationarity"])


@pytest.mark.parallel
def test_jacobi_sweep_over_a_depth_axis_equals_one_rank(comm):
    """order: jacobi with the layers' block solves split over a depth axis (every
    rank holds the whole mesh): the same iterates as one rank, bit for bit."""
    layout = Layout.create(comm, width=1, data=1, depth=comm.size)
    rf, th = _problem(layout=layout, layers=4)
    split = EMSA(rf, th.copy(), order="jacobi")
    losses = [r.loss for r in split.iterate(3)]
    rf1, th1 = _problem(comm=MPI.COMM_SELF, layers=4)
    one = EMSA(rf1, th1.copy(), order="jacobi")
    assert losses == [r.loss for r in one.iterate(3)]
    assert all(np.array_equal(split.controls[k], one.controls[k]) for k in one.controls)
    assert split.gaps == one.gaps
    with pytest.raises(ValueError, match=r"^order: the Gauss–Seidel sweep is sequential"):
        EMSA(rf, th.copy())
