"""The one-shot Euler–Lagrange (KKT) solve: the exact KKT operator, the LNKS
preconditioner, the Newton–Krylov trainer and the depth axis.

* the residual at the states and costates of θ is (∇J, 0, 0) and L = J;
* every block of the Jacobian (direction block × residual block) Taylor rate 2,
  and the Jacobian symmetric (it is the Hessian of L);
* the preconditioner's sweeps solve their blocks exactly; P₄ with the exact
  reduced Hessian is K⁻¹; the reduced Hessian at consistent states is ∇²J;
* Newton reaches the TAO LMVM minimiser with KKT residual ≤ tol and converges
  quadratically at the end; honest status (converged only at the tolerance);
* bit-for-bit resume; iterates equal to round-off on every width × data × depth
  layout and any number of sample chunks.
"""

import itertools
import math

from mpi4py import MPI

import numpy as np
import pytest
from petsc4py import PETSc
from tiny import INTERVAL, ellipses_problem

from pontryx.meshes.errors import InputError
from pontryx.solver import Layout, ReducedFunctional
from pontryx.solver.training.kkt import KKT, DepthBlocks
from pontryx.solver.training.lnks import default_chunks
from pontryx.solver.training.oneshot import OneShot

CASES = [
    ("imex_euler", "dense", {}),
    ("midpoint", "lowrank", {"epsilon": 0.1, "kernel_options": {"rank": 2}}),
    ("verlet", "dense", {}),
    ("imex_euler", "local", {"epsilon": 0.05}),
    ("rk4", "lowrank", {"kernel_options": {"rank": 2}}),
]


def _problem(comm=MPI.COMM_WORLD, *, n=8, alpha=1e-1, beta=1e-2, **kw):
    """(rf, controls) for a tiny network on ``n`` ellipses samples (:mod:`tiny`)."""
    return ellipses_problem(comm, n=n, alpha=alpha, beta=beta, **kw)


def _consistent(kkt, rf, th):
    """The local KKT vector of θ with its forward states and adjoint costates."""
    traj, b = rf.trajectory(th), kkt.blocks
    U, Lam = traj.states[b.lo + 1 : b.hi + 1], traj.costates[b.lo + 1 : b.hi + 1]
    return kkt.pack(kkt.theta_of_controls(th), U, Lam)


def _rates(r):
    return [float(np.log2(a / b)) for a, b in itertools.pairwise(r)]


# -- the KKT operator ------------------------------------------------------------------------
@pytest.mark.parametrize("scheme, kernel, options", CASES)
def test_residual_at_the_states_and_costates_of_theta(scheme, kernel, options):
    """… with every regulariser term (α, β, γ, δ)."""
    rf, th = _problem(
        scheme=scheme, kernel=kernel, train_embedding=True, gamma=1e-3, delta=1e-2, **options
    )
    kkt = KKT(rf, th)
    J, g = rf.value_and_gradient(th)
    L, c2, F = kkt.evaluate(_consistent(kkt, rf, th))
    stationarity, costate, state = kkt.block_norms(F)
    assert abs(L - J) < 1e-14 * abs(J) and c2 == 0.0
    assert costate < 1e-15 and state == 0.0
    assert stationarity == pytest.approx(g.subset(rf.net.trainable).norm(), rel=1e-13)


@pytest.mark.parametrize("scheme, kernel, options", CASES)
def test_jacobian_blocks_taylor_and_symmetry(scheme, kernel, options):
    """For a direction in each block (θ, U, Λ) the remainder of each residual
    block (stationarity, costate, state) falls like h² (or vanishes: the state rows
    are linear in Λ, the Λ rows of the costate residual too); every regulariser term."""
    rf, th = _problem(
        scheme=scheme, kernel=kernel, train_embedding=True, gamma=1e-3, delta=1e-2, **options
    )
    kkt = KKT(rf, th)
    rng = np.random.default_rng([1, MPI.COMM_WORLD.rank])
    x = _consistent(kkt, rf, th) + 0.05 * rng.standard_normal(kkt.size)
    _, _, F = kkt.linearise(x)
    parts = {
        "theta": kkt.theta_slice,
        "U": slice(kkt._offset(0), kkt._offset(1)),
        "Lam": slice(kkt._offset(1), None),
    }
    for name, part in parts.items():
        d = np.zeros(kkt.size)
        d[part] = rng.standard_normal(d[part].size)
        Jd = kkt.apply(d)
        rem = {row: [] for row in parts}
        for i in range(4):
            h = 1e-3 / 2**i
            R = kkt.evaluate(x + h * d)[2] - F - h * Jd
            for row, rpart in parts.items():
                rem[row].append(np.sqrt(kkt.dot(R[rpart], R[rpart])))
        for row, r in rem.items():
            if max(r) < 1e-13:  # linear in this block
                continue
            assert min(_rates(r)) > 1.95, (name, row, r)
    a, b = rng.standard_normal(kkt.size), rng.standard_normal(kkt.size)
    assert abs(kkt.dot(a, kkt.apply(b)) - kkt.dot(b, kkt.apply(a))) < 1e-12 * kkt.dot(
        a, a
    )  # fmt: skip


def test_weak_constraint_residual_and_jacobian():
    """Finite R_f: F_Λ = g − U − (S/R_f) M_L⁻¹ Λ, with its Jacobian (rate 2)."""
    rf, th = _problem()
    kkt = KKT(rf, th, R_f=50.0)
    x = _consistent(kkt, rf, th)
    _, _, F = kkt.linearise(x)
    lam = kkt.fields(x, 1)
    expected = [-(rf.S / 50.0) * l[0] / rf.net.space.m[:, None] for l in lam]
    got = [f[0] for f in kkt.fields(F, 1)]
    assert all(np.allclose(a, b, rtol=1e-13, atol=1e-16) for a, b in zip(got, expected))
    d = np.random.default_rng([2, MPI.COMM_WORLD.rank]).standard_normal(kkt.size)
    Jd = kkt.apply(d)
    r = [np.linalg.norm(kkt.evaluate(x + h * d)[2] - F - h * Jd) for h in (1e-3, 5e-4, 2.5e-4)]
    r = [np.sqrt(kkt.world.allreduce(v * v)) for v in r]
    assert min(_rates(r)) > 1.95


# -- the preconditioner ----------------------------------------------------------------------
def _trainer(rf, th, **options):
    t = OneShot(rf, th, warm_start=0, **options)
    t.F_ref = 1.0
    t._start_newton()
    return t


@pytest.mark.serial
def test_p4_with_the_exact_reduced_hessian_is_the_inverse():
    """K P₄⁻¹ = I when B_z = W_z (readout frozen: the softmax shift invariance of
    the readout would make W_z singular), away from the consistent point."""
    rf, th = _problem(layers=3, n=6, train_embedding=True, train_readout=False)
    t = _trainer(rf, th, preconditioner="p4")
    k, P = t.kkt, t.lnks
    rng = np.random.default_rng(0)
    t.x = t.x + 0.01 * rng.standard_normal(k.size)
    t._linearise()
    W = np.column_stack([P.reduced_hessian(e) for e in np.eye(k.n_theta)])
    assert np.abs(W - W.T).max() < 1e-12 * np.abs(W).max()
    P.solve_reduced = lambda g: np.linalg.solve(W, g)
    r = rng.standard_normal(k.size)
    assert np.abs(k.apply(P.apply(r)) - r).max() < 1e-10 * np.abs(r).max()
    t.destroy()


@pytest.mark.parametrize("kernel", ["dense", "local"])
def test_sweeps_solve_their_blocks_and_reduced_hessian_is_the_hessian_of_J(kernel):
    """A q = r_Λ − C dθ (forward), W_UU q + W_Uθ dθ + Aᵀ s = r_U (backward) and the
    θ rows, in 3 sample chunks; at the states and costates of θ, W_z = ∇²J (the
    second-order adjoint)."""
    rf, th = _problem(train_embedding=True, kernel=kernel)
    t = _trainer(rf, th, chunks=3)
    k, P = t.kkt, t.lnks
    rng = np.random.default_rng([3, MPI.COMM_WORLD.rank])
    v = rng.standard_normal(k.n_theta)[k.theta_slice]
    direction = th.subset(rf.net.trainable).zeros_like()
    k.controls_of_theta(v, direction)
    H = k.theta_of_controls(rf.hessian_action(th, direction))[k.theta_slice]
    W = P.reduced_hessian(v)
    assert np.sqrt(k.dot(W - H, W - H)) < 1e-12 * np.sqrt(k.dot(H, H))
    r = rng.standard_normal(k.size)
    rU, rL = k.fields(r, 0), k.fields(r, 1)
    dth = k.theta(v)
    q, trecs = P.forward(dth, rL)
    s, z = P.backward(dth, rU, q, trecs)
    Kv = k.apply(k.pack(v, q, s))
    for got, want in ((k.fields(Kv, 1), rL), (k.fields(Kv, 0), rU)):
        err = max(np.abs(a - b).max() for x, y in zip(got, want) for a, b in zip(x, y))
        assert k.world.allreduce(err, op=MPI.MAX) < 1e-12
    reg = k._zeros()
    k.regulariser(dth, reg)
    theta_rows = Kv[k.theta_slice] - z - k.pack_theta(reg)[k.theta_slice]
    assert np.sqrt(k.dot(theta_rows, theta_rows)) < 1e-12 * np.sqrt(k.dot(z, z))
    t.destroy()


@pytest.mark.parametrize("scheme, kernel, options", CASES)
def test_pipelined_states_and_costates_are_the_reduced_sweep(comm, scheme, kernel, options):
    """The trust region's trial sweeps (:meth:`LNKS.states`, :meth:`LNKS.costates`) on
    the depth layout over all ranks, in 3 sample chunks: J, the states, the
    costates and ∇J of the reduced functional's sweep (α, β, γ, δ)."""
    layout = Layout.create(comm, depth=comm.size)
    kw = {"beta": 0.01, "gamma": 1e-3, "delta": 1e-2, "layers": 4, "train_embedding": True}
    rf, th = _problem(comm, layout=layout, scheme=scheme, kernel=kernel, **options, **kw)
    t = _trainer(rf, th.copy(), chunks=3)
    k, P, b = t.kkt, t.lnks, t.kkt.blocks
    th.axpy(0.1, th)  # not the linearisation point
    J, grad = rf.value_and_gradient(th)
    traj = rf.trajectory(th)
    trial = P.states(k.theta(k.theta_of_controls(th)[k.theta_slice]))
    assert abs(trial.J - J) < 1e-13 * abs(J)
    assert abs(trial.misfit - rf.last["misfit"]) < 1e-13 * abs(J)
    Lam, g = P.costates(trial)
    for got, want in ((trial.states, traj.states[b.lo :]), (Lam, traj.costates[b.lo + 1 :])):
        err = max(np.abs(a - c).max() for x, y in zip(got, want) for a, c in zip(x, y))
        assert k.world.allreduce(err, op=MPI.MAX) < 1e-12
    ref = k.theta_of_controls(grad)[k.theta_slice]
    assert np.sqrt(k.dot(g - ref, g - ref)) < 1e-12 * np.sqrt(k.dot(ref, ref))
    t.destroy()
    layout.destroy()


def _zero_residual_problem(comm):
    """A regression network whose targets are its own outputs at θ: G = ∂Φ/∂Ŷ = 0 and
    Λ = 0 at the states and costates of θ, so ∇²J = Gauss–Newton + R''."""
    rf, th = _problem(comm, train_embedding=True)
    kkt = KKT(rf, th)
    kkt.linearise(_consistent(kkt, rf, th))
    Y = kkt.point.Yhat  # one depth rank: every rank has it
    net = rf.net
    rf2 = ReducedFunctional(net, rf.X.T, Y.T, "regression", alpha=0.1, beta=0.01, layout=rf.layout)
    return rf2, th


def test_gauss_newton_reduced_hessian(comm):
    """W_GN is symmetric positive semidefinite (assembled, on a non-consistent point)
    and equals the exact reduced Hessian ∇²J at a zero-residual point."""
    rf, th = _zero_residual_problem(comm)
    t = _trainer(rf, th, control="gauss_newton")
    k, P = t.kkt, t.lnks
    rng = np.random.default_rng([5, comm.rank])
    v = rng.standard_normal(k.n_theta)[k.theta_slice]
    W, G = P.reduced_hessian(v), P.reduced_hessian(v, gauss_newton=True)
    assert np.sqrt(k.dot(W - G, W - G)) < 1e-12 * np.sqrt(k.dot(W, W))
    assert np.sqrt(k.dot(W, W)) > 0
    t.x = t.x + 0.05 * rng.standard_normal(k.size)  # G ≠ 0, Λ ≠ 0: W_GN ≠ W_z
    t._linearise()
    W, G = P.reduced_hessian(v), P.reduced_hessian(v, gauss_newton=True)
    assert np.sqrt(k.dot(W - G, W - G)) > 1e-6 * np.sqrt(k.dot(W, W))
    if comm.size == 1:
        E = np.eye(k.n_theta)
        A = np.column_stack([P.reduced_hessian(e, gauss_newton=True) for e in E])
        assert np.abs(A - A.T).max() < 1e-13 * np.abs(A).max()
        assert np.linalg.eigvalsh(0.5 * (A + A.T)).min() > -1e-13 * np.abs(A).max()
    t.destroy()


def test_truncated_cg():
    """Exact on an SPD system within its dimension; stops at negative curvature with
    a descent direction of the quadratic model (M⁻¹ g when met at once)."""
    from pontryx.solver.training.steihaug import truncated_cg

    rng = np.random.default_rng(0)
    Q = np.linalg.qr(rng.standard_normal((12, 12)))[0]
    g = rng.standard_normal(12)
    A = Q @ np.diag(np.linspace(1.0, 50.0, 12)) @ Q.T
    M = np.diag(1.0 / np.diag(A))
    x, its, why = truncated_cg(A.dot, M.dot, g, np.vdot, 1e-10, 50)
    assert why == "rtol" and its <= 12 and np.allclose(A @ x, g, atol=1e-8)
    x, its, why = truncated_cg(A.dot, M.dot, g, np.vdot, 0.5, 50)
    assert why == "rtol" and its < 6 and np.linalg.norm(A @ x - g) < np.linalg.norm(g)
    B = Q @ np.diag(np.r_[-1.0, np.linspace(1.0, 50.0, 11)]) @ Q.T
    x, its, why = truncated_cg(B.dot, M.dot, g, np.vdot, 1e-10, 50)
    assert why == "negative_curvature" and np.vdot(g, x) > 0
    x, its, why = truncated_cg(lambda v: -v, M.dot, g, np.vdot, 1e-10, 50)
    assert (why, its) == ("negative_curvature", 0) and np.allclose(x, M @ g)
    x, its, why = truncated_cg(A.dot, M.dot, g, np.vdot, 1e-10, 2)
    assert (why, its) == ("max_it", 2)


def test_steihaug_toint_path():
    """Against assembled matrices: the interior Newton step, the M-norm recurrences
    (boundary points have ‖p‖_M = Δ with M the inverse of the preconditioner), the
    model decrease m(p) = gᵀp + ½pᵀWp, negative curvature followed to the boundary
    with m < 0, and the path cut at a smaller radius equals a new solve there."""
    from pontryx.solver.training.steihaug import TrustRegionPath

    rng = np.random.default_rng(1)
    Q = np.linalg.qr(rng.standard_normal((12, 12)))[0]
    g = rng.standard_normal(12)
    A = Q @ np.diag(np.linspace(1.0, 50.0, 12)) @ Q.T
    B = Q @ np.diag(np.r_[-2.0, -0.5, np.linspace(1.0, 50.0, 10)]) @ Q.T
    R = rng.standard_normal((12, 12))
    Minv = R @ R.T / 12 + np.eye(12)
    M = np.linalg.inv(Minv)

    def model(W, p):
        return g @ p + 0.5 * p @ W @ p

    path = TrustRegionPath(A.dot, Minv.dot, g, np.vdot, 1e6, 1e-12, 50)
    p, m, norm, edge = path.point()
    assert path.reason == "rtol" and not edge and np.allclose(A @ p, -g, atol=1e-9)
    assert m == pytest.approx(model(A, p), rel=1e-10)
    assert norm == pytest.approx(np.sqrt(p @ M @ p), rel=1e-8)
    for W in (A, B):
        for radius in (0.05 * norm, 0.3 * norm, 0.9 * norm):
            path = TrustRegionPath(W.dot, Minv.dot, g, np.vdot, radius, 1e-12, 50)
            p, m, norm, edge = path.point()
            assert edge and path.reason in ("boundary", "negative_curvature")
            assert np.sqrt(p @ M @ p) == pytest.approx(radius, rel=1e-8) and norm == radius
            assert m == pytest.approx(model(W, p), rel=1e-9, abs=1e-12) and m < 0
            for smaller in (0.5 * radius, 0.1 * radius):
                q, mq, _, _ = path.point(smaller)
                fresh = TrustRegionPath(W.dot, Minv.dot, g, np.vdot, smaller, 1e-12, 50)
                np.testing.assert_allclose(q, fresh.point()[0], rtol=1e-9, atol=1e-12)
                assert mq == pytest.approx(model(W, q), rel=1e-9, abs=1e-12)
    path = TrustRegionPath(B.dot, Minv.dot, g, np.vdot, 1e3, 1e-12, 50)
    assert path.reason == "negative_curvature" and path.point()[1] < model(B, -Minv @ g)


# -- the trainer ---------------------------------------------------------------------------------
def _lmvm_reference(rf, controls, gatol=1e-12):
    names = rf.net.trainable
    ref = controls.copy()
    sub = ref.subset(names)
    x = PETSc.Vec().createMPI((sub.local_size(), PETSc.DETERMINE), comm=ref.comm)
    sub.to_flat(x.array)

    def fg(tao, xv, gv):
        sub.set_flat(xv.array_r)
        J, g = rf.value_and_gradient(ref)
        g.subset(names).to_flat(gv.array)
        return J

    tao = PETSc.TAO().create(comm=ref.comm)
    tao.setType("lmvm")
    tao.setObjectiveGradient(fg)
    tao.setTolerances(gatol=gatol, grtol=0.0, gttol=0.0)
    tao.setMaximumIterations(5000)
    tao.setSolution(x)
    tao.solve()
    sub.set_flat(x.array_r)
    tao.destroy()
    x.destroy()
    return ref


def _convex_problem(comm=MPI.COMM_WORLD, layout=None):
    # strongly regularised (α = 1 with the lumped L² weights of W, b) and the readout
    # fixed: J has a unique, well-conditioned minimiser
    return _problem(comm, layout=layout, n=8, layers=3, alpha=1.0, beta=0.0, train_readout=False)


@pytest.mark.parametrize(
    "preconditioner, control",
    [("p4", "lbfgs"), ("p2", "lbfgs"), ("p4", "gauss_newton"), ("p2", "exact")],
)
def test_newton_reaches_the_lmvm_minimiser(preconditioner, control):
    rf, th = _convex_problem()
    ref = _lmvm_reference(rf, th)
    opts = {"preconditioner": preconditioner, "control": control, "globalisation": "line_search"}
    t = OneShot(rf, th.copy(), warm_start=2, rtol=1e-10, **opts)
    recs = list(t.iterate(30))
    assert t.converged == "CONVERGED_FNORM_RELATIVE" and t.failed is None
    assert [r.extra["phase"] for r in recs[:2]] == ["lbfgs", "lbfgs"]
    newton = [r for r in recs if r.extra["phase"] == "newton"]
    assert 1 <= len(newton) <= 8
    F = [r.extra["kkt_residual"] for r in newton]
    assert F[-1] <= 1e-10 * t.F_ref and recs[-1].extra["kkt_reduction"] <= 1e-10
    # quadratic at the end (superlinear with the inexact inner control-block solve)
    assert F[-2] < (1e-3 if control == "lbfgs" else 1e-2) * F[-3]
    assert all(r.extra["direction"] == "newton" and r.extra["step"] == 1.0 for r in newton[-3:])
    assert all(r.extra["ksp_its"] >= 1 for r in newton)
    names = rf.net.trainable
    diff = (t.controls.subset(names) - ref.subset(names)).norm()
    assert diff < 1e-6 * ref.subset(names).norm()
    assert list(t.iterate(1)) == []  # converged: no further iteration
    t.destroy()


def test_trust_region_reaches_the_lmvm_minimiser():
    """globalisation: trust_region (reduced-space Newton trust region, exact reduced
    Hessian): the LMVM minimiser to the KKT tolerance, superlinear at the end, every
    iterate consistent (state and costate rows zero: F = (∇J, 0, 0))."""
    rf, th = _convex_problem()
    ref = _lmvm_reference(rf, th)
    t = OneShot(rf, th.copy(), warm_start=2, rtol=1e-10, globalisation="trust_region")
    recs = list(t.iterate(30))
    assert t.converged == "CONVERGED_FNORM_RELATIVE" and t.failed is None
    newton = [r for r in recs if r.extra["phase"] == "newton"]
    assert 1 <= len(newton) <= 10
    F = [r.extra["kkt_residual"] for r in newton]
    assert F[-1] <= 1e-10 * t.F_ref and F[-2] < 1e-2 * F[-3]
    assert all(r.extra["kkt_state"] < 1e-12 and r.extra["kkt_costate"] < 1e-12 for r in newton)
    assert all(r.extra["radius"] > 0 and r.extra["step"] == 1.0 for r in newton)
    names = rf.net.trainable
    diff = (t.controls.subset(names) - ref.subset(names)).norm()
    assert diff < 1e-6 * ref.subset(names).norm()
    t.destroy()


def test_trust_region_model_taylor():
    """The trust-region model of a step, m(p) = gᵀp + ½pᵀW_z p on the Steihaug–Toint
    path with the exact reduced Hessian, matches J(θ + p) − J(θ) to third order in
    the radius (Taylor rate ≥ 2.9), at a non-convex point."""
    from pontryx.solver.training.steihaug import TrustRegionPath

    rf, th = _problem(alpha=1e-2)
    t = OneShot(rf, th.copy(), warm_start=2)
    list(t.iterate(2))
    t._start_newton()
    k, H = t.kkt, t.lbfgs
    g, theta = t.F[k.theta_slice].copy(), t.x[k.theta_slice].copy()
    path = TrustRegionPath(t.lnks.reduced_hessian, H.apply, g, k.dot, 1.0, 1e-8, 10)
    trial, errors = t.controls.copy(), []
    for radius in 1e-2 * 0.5 ** np.arange(4):
        p, m, norm, edge = path.point(radius)
        assert edge and norm == radius
        k.controls_of_theta(theta + p, trial)
        errors.append(abs(rf(trial) - t.L - m))
    assert min(_rates(errors)[-2:]) >= 2.9
    t.destroy()


def test_trust_region_on_a_non_convex_problem():
    """Far from a minimiser (α = 10⁻², two warm-start steps) the trust-region steps
    follow negative curvature to the boundary, J falls monotonically, the radius
    adapts, and the iterates stay consistent (state rows zero)."""
    rf, th = _problem(alpha=1e-2)
    t = OneShot(rf, th.copy(), warm_start=2, globalisation="trust_region")
    recs = list(t.iterate(20))
    newton = [r for r in recs if r.extra["phase"] == "newton"]
    reasons = {r.extra["direction"] for r in newton}
    assert {f"trust_region:exact:{why}" for why in ("negative_curvature", "rtol")} <= reasons
    J = [r.loss for r in recs]
    assert all(b <= a for a, b in itertools.pairwise(J)) and J[-1] < 0.1 * J[0]
    assert len({r.extra["radius"] for r in newton}) > 2 and t.failed is None
    assert all(r.extra["kkt_state"] < 1e-12 for r in newton)
    t.destroy()


@pytest.mark.parametrize("globalisation", ["trust_region", "line_search"])
def test_record_fields_and_honest_status(globalisation):
    rf, th = _problem(alpha=1e-2)
    t = OneShot(rf, th.copy(), warm_start=1, max_it=2, rtol=1e-14, globalisation=globalisation)
    recs = list(t.iterate(10))
    assert len(recs) == 3 and t.converged is None and t.failed == "DIVERGED_MAX_IT"
    keys = {"phase", "R_f", "kkt_residual", "kkt_reduction", "kkt_state", "kkt_costate"}
    keys |= {"kkt_stationarity", "merit", "step", "ksp_its", "direction", "rho", "eta"}
    for r in recs:
        assert keys <= set(r.extra) and np.isfinite(r.loss) and 0 <= r.train_metric <= 1
        J, g = rf.value_and_gradient(t.controls) if r is recs[-1] else (None, None)
        if J is not None:
            assert r.loss == pytest.approx(J, rel=1e-13)
            assert r.grad_norm == pytest.approx(t.gradient_norm(g), rel=1e-12)
    assert recs[0].extra["phase"] == "lbfgs" and recs[0].extra["kkt_state"] == 0.0
    directions = {r.extra["direction"].split("+")[0].split(":")[0] for r in recs[1:]}
    assert directions <= (
        {"trust_region"} if globalisation == "trust_region" else {"newton", "quasi_newton"}
    )
    t.destroy()


def test_globalisation_on_a_non_convex_problem():
    """Far from a minimiser (α = 10⁻², two warm-start steps) the iteration meets
    negative curvature (quasi-Newton steps), restores rejected trial points and
    shortens steps, and J falls."""
    rf, th = _problem(alpha=1e-2)
    t = OneShot(rf, th.copy(), warm_start=2, globalisation="line_search")
    recs = list(t.iterate(20))
    directions = {r.extra["direction"] for r in recs}
    assert {"newton", "quasi_newton", "newton+restoration"} <= directions
    assert any(0 < r.extra["step"] < 1 for r in recs)
    assert recs[-1].loss < 0.3 * recs[0].loss and t.failed is None
    t.destroy()


def test_precision_annealing_stages():
    rf, th = _convex_problem()
    opts = {"stages": 2, "R0": 1e2, "a": 10.0, "globalisation": "line_search"}
    t = OneShot(rf, th.copy(), warm_start=0, rtol=1e-9, **opts)
    recs = list(t.iterate(40))
    assert t.converged
    R_f = [r.extra["R_f"] for r in recs]
    assert R_f[0] == 100.0 and 1000.0 in R_f and R_f[-1] == float("inf")
    assert R_f == sorted(R_f)
    t.destroy()


def test_resume_is_bit_identical(comm):
    rf, th = _problem(alpha=1e-2)
    opts = {"warm_start": 2, "max_it": 50}
    a = OneShot(rf, th.copy(), **opts)
    ra = [r.loss for r in a.iterate(6)]
    b = OneShot(rf, th.copy(), **opts)
    rb = [r.loss for r in b.iterate(4)]
    c = OneShot(rf, rf.net.init_controls(seed=3), **opts)
    c.restore(b.state())
    rb += [r.loss for r in c.iterate(2)]
    assert ra == rb
    same = all(np.array_equal(a.controls[k], c.controls[k]) for k in a.controls)
    assert comm.allreduce(same, op=MPI.LAND)
    # without the layout-bound entries (another layout): the Newton phase restarts
    # from the restored θ with its states and costates
    kinds = b.state_kinds()
    assert kinds["oneshot/x"] == ("local",) and "oneshot/scalars" not in kinds  # replicated
    portable = {k: v for k, v in b.state().items() if kinds.get(k, ("replicated",))[0] != "local"}
    d = OneShot(rf, rf.net.init_controls(seed=3), **opts)
    d.restore(portable)
    assert d.x is None and d.phase == "newton" and not d.lbfgs.pairs
    rd = [r.loss for r in d.iterate(2)]
    assert len(rd) == 2 and all(np.isfinite(rd))
    d.probe()
    for t in (a, b, c, d):
        t.destroy()


def _losses(layout, comm, chunks=1, **options):
    rf, th = _problem(comm, layout=layout, n=12, layers=5, train_embedding=True)
    t = OneShot(rf, th, warm_start=2, chunks=chunks, max_it=50, **options)
    out = [(r.loss, r.extra["kkt_residual"]) for r in t.iterate(6)]
    t.destroy()
    return np.array(out)


@pytest.mark.parametrize(
    "opts",
    [
        {"globalisation": "line_search"},
        {"globalisation": "trust_region"},
        {"continuation": {"alpha0": 1.0, "factor": 10.0, "stage_rtol": 0.5}},
    ],
    ids=["line_search", "trust_region", "continuation"],
)
def test_iterates_agree_on_every_layout(comm, opts):
    """One rank vs width × data × depth splits of the ranks (and sample chunks of the
    pipelined sweeps): the same iterates up to round-off — for the trust region too,
    whose CG decisions, ratios and radii come from global inner products, and its
    continuation in α."""
    ref = _losses(None, MPI.COMM_SELF, **opts)
    np.testing.assert_allclose(_losses(None, MPI.COMM_SELF, chunks=3, **opts), ref, rtol=1e-9)
    for sizes in ({"depth": comm.size}, {"data": comm.size}, {"width": comm.size}):
        layout = Layout.create(comm, **sizes)
        np.testing.assert_allclose(_losses(layout, comm, chunks=2, **opts), ref, rtol=1e-9)
        layout.destroy()


@pytest.mark.parametrize("control", ["gauss_newton", "exact"])
def test_inner_control_block_agrees_on_every_layout(comm, control):
    """The inner CG of the control block (collective: its stopping decisions from
    global inner products) gives the same iterates on one rank and on the depth
    and data splits."""
    opts = {"control": control, "preconditioner": "p4", "inner_max_it": 4}
    opts["globalisation"] = "line_search"
    ref = _losses(None, MPI.COMM_SELF, **opts)
    for sizes in ({"depth": comm.size}, {"data": comm.size}):
        layout = Layout.create(comm, **sizes)
        np.testing.assert_allclose(_losses(layout, comm, chunks=2, **opts), ref, rtol=1e-9)
        layout.destroy()


def test_depth_blocks_and_layout():
    b = DepthBlocks(MPI.COMM_SELF, 5)
    assert (b.lo, b.hi, b.count, b.first, b.last) == (0, 5, 5, True, True)
    with pytest.raises(InputError, match=r"^depth: expected a divisor"):
        Layout.create(MPI.COMM_WORLD, depth=MPI.COMM_WORLD.size + 1)
    layout = Layout.create(MPI.COMM_WORLD, depth=1)
    assert layout.n_depth == 1 and layout.writes == (layout.data.rank == 0)
    assert "depth" not in layout.describe()
    layout.destroy()


def test_memory_estimate_and_option_errors():
    rf, th = _problem(n=8)
    small = OneShot(rf, th).memory_bytes()
    rf2, th2 = _problem(n=16)
    big = OneShot(rf2, th2).memory_bytes()
    assert isinstance(small, int) and 8 * OneShot(rf, th).kkt.size < small < big < 2.2 * small
    assert OneShot.copies({}) == OneShot.memory_copies
    for key, value in (
        ("warm_start", -1), ("memory", 0), ("preconditioner", "p3"), ("rtol", 0.0),
        ("initial_hessian", "identity"),
        ("atol", -1.0), ("max_it", 0), ("krylov_max_it", 0), ("forcing", 1.5),
        ("stages", -1), ("R0", -1.0), ("a", 0.5), ("chunks", 0), ("rho", 0.0),
        ("restoration", "yes"), ("petsc_options", 3), ("control", "newton"),
        ("inner_rtol", 1.0), ("inner_max_it", 0), ("globalisation", "filter"), ("radius", 0.0),
    ):  # fmt: skip
        with pytest.raises(InputError, match=rf"^{key}: expected"):
            OneShot(rf, th, **{key: value})
    with pytest.raises(InputError, match=r"^stages: expected 0 with globalisation: trust_region"):
        OneShot(rf, th, stages=1, globalisation="trust_region")
    with pytest.raises(InputError, match=r"^max_unknowns: not an option"):
        OneShot(rf, th, max_unknowns=10)


def test_default_chunks(comm):
    """``chunks: auto``: one chunk on one depth rank; otherwise about one per 128
    local samples within 2P … 4P, never more chunks than samples; the solver uses it."""
    assert default_chunks(1, 1000) == 1
    assert [default_chunks(2, S) for S in (300, 500, 1000, 5000)] == [4, 4, 8, 8]
    assert default_chunks(64, 1000) == 128 and default_chunks(8, 10) == 10
    layout = Layout.create(comm, depth=comm.size)
    rf, th = _problem(comm, layout=layout, n=12, layers=5)
    t = OneShot(rf, th)
    assert len(t.lnks.chunks) == default_chunks(comm.size, t.kkt.S_local)
    t.destroy()
    layout.destroy()


def test_registry_and_train_driver():
    from pontryx.solver.training import METHODS, method_class, minimize

    assert method_class("oneshot") is OneShot and "oneshot" in METHODS
    assert OneShot.depth_parallel and not method_class("lmvm").depth_parallel
    rf, th = _convex_problem()
    res = minimize(rf, th, "oneshot", {"warm_start": 1, "rtol": 1e-9}, max_iterations=30)
    assert res.converged and res.reason == "converged: CONVERGED_FNORM_RELATIVE"
    rf, th = _problem(alpha=1e-2)
    res = minimize(rf, th, "oneshot", {"warm_start": 0, "max_it": 1}, max_iterations=30)
    assert res.reason == "stopped: DIVERGED_MAX_IT" and not res.converged


# -- configuration and the application layer -------------------------------------------------
def test_parallel_depth_in_the_schema():
    from pontryx.solver.config import validate_config

    base = {"data": {"name": "ellipses"}, "training": {"method": "oneshot"}}
    c = validate_config({**base, "parallel": {"depth": 2}}, ranks=4)
    assert c.parallel.depth == 2 and c.parallel.sizes(4) == (2, 1)
    c = validate_config({**base, "parallel": {"depth": 2, "width": 1}}, ranks=4)
    assert c.parallel.sizes(4) == (1, 2)
    assert validate_config(base, ranks=4).parallel.depth == 1
    with pytest.raises(InputError, match=r"^parallel.depth: 3 does not divide the 4 MPI ranks"):
        validate_config({**base, "parallel": {"depth": 3}}, ranks=4)
    with pytest.raises(InputError, match=r"^parallel.depth: expected an integer ≥ 1"):
        validate_config({**base, "parallel": {"depth": 0}}, ranks=4)
    with pytest.raises(InputError, match=r"^parallel: width × data × depth = 2 × 2 × 2"):
        validate_config({**base, "parallel": {"depth": 2, "width": 2, "data": 2}}, ranks=4)


@pytest.mark.parallel
def test_application_layer_splits_depth_for_oneshot_only(comm):
    from pontryx.solver.app.problem import build_problem, make_method
    from pontryx.solver.config import validate_config

    def problem(method, layers=4):
        config = validate_config(
            {
                "mesh": INTERVAL,
                "model": {"layers": layers},
                "data": {"name": "ellipses", "n_train": 8, "n_test": 4},
                "training": {"method": method},
                "parallel": {"depth": comm.size, "width": 1},
            },
            ranks=comm.size,
        )
        return build_problem(config, comm)

    p = problem("oneshot")
    assert p.layout.n_depth == comm.size and p.layout.n_width == 1
    assert p.layout.writes == (comm.rank == 0)
    t = make_method(p)
    assert t.kkt.blocks.count == 4 // comm.size
    t.destroy()
    p.destroy()
    p = problem("lmvm")
    with pytest.raises(InputError, match=r"^parallel.depth: method 'lmvm' keeps every layer"):
        make_method(p)
    p.destroy()
    # fewer layers than depth ranks: refused by the schema (validate too), keyed parallel.depth
    with pytest.raises(InputError, match=r"^parallel.depth: expected at most 1 depth rank "):
        problem("oneshot", layers=1)


# -- continuation in the regularisation weight ------------------------------------------------
def test_continuation_in_alpha_reaches_the_plain_minimiser():
    """``continuation``: trust-region Newton solves at α = 100, 10, then the target 1, each
    from the last; it ends at the minimiser of the plain solve (and LMVM's) to the KKT
    tolerance of the target problem, with the target α restored in the regulariser."""
    rf, th = _convex_problem()
    ref = _lmvm_reference(rf, th)
    cont = {"alpha0": 100.0, "factor": 10.0, "stage_rtol": 1e-3}
    t = OneShot(rf, th.copy(), warm_start=2, rtol=1e-10, continuation=cont)
    assert t.alphas == [100.0, 10.0, 1.0]
    recs = list(t.iterate(60))
    alphas = [r.extra["alpha"] for r in recs]
    assert t.converged == "CONVERGED_FNORM_RELATIVE" and t.failed is None
    assert alphas[0] == 100.0 and alphas[-1] == 1.0 == rf.regulariser.alpha
    assert sorted(set(alphas), reverse=True) == [100.0, 10.0, 1.0] and alphas == sorted(
        alphas, reverse=True
    )
    final = [r for r, a in zip(recs, alphas) if a == 1.0]
    assert 1 <= len(final) <= 6 and final[-1].extra["kkt_residual"] <= 1e-10 * t.F_ref
    names = rf.net.trainable
    diff = (t.controls.subset(names) - ref.subset(names)).norm()
    assert diff < 1e-6 * ref.subset(names).norm()
    t.destroy()


def test_continuation_resume_and_errors(comm):
    """A continuation run resumed mid-way is bit-identical (the stage's α and the
    pairs restored); bad ``continuation`` options are one-line errors."""
    rf, th = _problem(alpha=1e-2)
    opts = {"warm_start": 2, "max_it": 50,
            "continuation": {"alpha0": 1.0, "factor": 10.0, "stage_rtol": 0.5}}  # fmt: skip
    a = OneShot(rf, th.copy(), **opts)
    ra = [(r.loss, rf.regulariser.alpha) for r in a.iterate(12)]
    assert len({alpha for _, alpha in ra}) >= 2  # stages advanced
    a.destroy()  # gives the regulariser its target α back
    assert rf.regulariser.alpha == 1e-2
    b = OneShot(rf, th.copy(), **opts)
    rb = [(r.loss, rf.regulariser.alpha) for r in b.iterate(6)]
    state = b.state()
    b.destroy()
    c = OneShot(rf, rf.net.init_controls(seed=3), **opts)
    c.restore(state)
    rb += [(r.loss, rf.regulariser.alpha) for r in c.iterate(6)]
    assert ra == rb
    same = all(np.array_equal(a.controls[k], c.controls[k]) for k in a.controls)
    assert comm.allreduce(same, op=MPI.LAND)
    for t in (a, b, c):
        t.destroy()
    for value, want in (
        (3, "null or a mapping"), ({"alpha": 1.0}, "unknown key alpha"),
        ({"alpha0": 1e-3}, "alpha0: a weight above the target"),
        ({"alpha0": 1.0, "factor": 1.0}, "factor"),
        ({"alpha0": 1.0, "stage_rtol": 1.0}, "stage_rtol"),
        ({"alpha0": math.inf}, "alpha0: a weight above"),  # looped forever
        ({"alpha0": 1.0, "factor": math.inf}, "factor"),
    ):  # fmt: skip
        with pytest.raises(InputError, match=rf"^continuation: expected .*{want}"):
            OneShot(rf, th, continuation=value)
    with pytest.raises(InputError, match=r"^continuation: 6.95e\+06 stages .* at most 1000$"):
        OneShot(rf, th, continuation={"alpha0": 1e300, "factor": 1.0001})
    huge = OneShot(rf, th.copy(), continuation={"alpha0": 1e306})  # α₀/α overflowed: "inf stages"
    assert len(huge.alphas) == 309
    huge.destroy()
    # numbers as YAML 1.1 reads them (strings), as every other option takes them
    t = OneShot(
        rf, th.copy(), continuation={"alpha0": "1e0", "factor": "2e0", "stage_rtol": "1e-1"}
    )
    assert t.alphas[:2] == [1.0, 0.5]
    t.destroy()
    with pytest.raises(InputError, match=r"^continuation: expected null with globalisation"):
        OneShot(rf, th, continuation={}, globalisation="line_search")


def test_trust_region_has_no_ksp_for_petsc_options():
    """The trust region solves with its own Steihaug CG: a KSP option of
    ``petsc_options`` was read by a KSP it never used (silently without effect);
    the line search's KSP reads them."""
    from pontryx.solver import minimize

    rf, th = _problem()
    with pytest.raises(InputError, match="trust_region solves with its own Steihaug CG") as e:
        minimize(rf, th.copy(), "oneshot", {"petsc_options": {"ksp_type": "cg"}}, max_iterations=1)
    assert e.value.key == "petsc_options.ksp_type"
    options = {"globalisation": "line_search", "petsc_options": {"ksp_type": "fgmres"}}
    minimize(rf, th.copy(), "oneshot", options, max_iterations=1)
