"""Gradients: Taylor tests (rate ≥ 1.95) for every kernel, depth scheme, ε and
checkpointing mode and every trainable control; bit-identical checkpointing;
an independent NumPy backpropagation; the continuous adjoint at order 1 in Δt;
equal gradients on any number of ranks (width and data axes)."""

from mpi4py import MPI

import numpy as np
import pytest
from tiny import assert_same_value_and_gradient

from pontryx.meshes import InputError, create_mesh
from pontryx.solver import (
    ContinuumNetwork,
    Controls,
    Layout,
    ReducedFunctional,
    Sweep,
    WidthSpace,
    shard,
    taylor_test,
)
from pontryx.solver.adjoint.continuous import continuous_adjoint_gradient

KERNELS = [("dense", {}), ("lowrank", {"rank": 3}), ("local", {})]
SCHEMES = [
    ("imex_euler", 0.0, [None, "sqrt"]),
    ("imex_euler", 0.1, [None, 2]),
    ("midpoint", 0.0, [None, "sqrt"]),
    ("midpoint", 0.1, [None, 2]),
    ("verlet", 0.0, [None, "sqrt", "reverse"]),
    ("rk4", 0.0, [None, 2]),
]
CASES = [(k, o, s, e, c) for k, o in KERNELS for s, e, cks in SCHEMES for c in cks]


def _problem(
    comm=MPI.COMM_WORLD,
    kernel="dense",
    options=None,
    scheme="imex_euler",
    epsilon=0.0,
    layers=4,
    checkpoint=None,
    S=8,
    task="classification",
):
    sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 3}, comm))
    net = ContinuumNetwork(
        sp,
        2,
        2,
        kernel=kernel,
        kernel_options=dict(options or {}),
        scheme=scheme,
        epsilon=epsilon,
        layers=layers,
        train_embedding=True,
    )
    theta = net.init_controls(seed=0, gain=1.0)
    theta["b"][...] = 0.2 * np.random.default_rng(1).standard_normal(theta["b"].shape)
    rng = np.random.default_rng(2)  # the same samples on every rank
    X = rng.standard_normal((S, 2))
    y = rng.integers(0, 2, S) if task == "classification" else rng.standard_normal((S, 2))
    rf = ReducedFunctional(
        net, X, y, task, alpha=1e-2, beta=1e-2, gamma=1e-3, delta=1e-2, checkpoint=checkpoint
    )
    return net, theta, rf


def _direction(theta, names, seed=5):
    d = theta.subset(names).zeros_like()
    rng = np.random.default_rng(seed)
    for k in d:
        d[k][...] = rng.standard_normal(d[k].shape)
    # replicated "d" must agree on all ranks; the others are per-rank rows
    d["d"][...] = theta.comm.bcast(d["d"] if theta.comm.rank == 0 else None)
    return d


@pytest.mark.parametrize("kernel,options,scheme,epsilon,checkpoint", CASES)
def test_taylor(kernel, options, scheme, epsilon, checkpoint):
    net, theta, rf = _problem(
        kernel=kernel, options=options, scheme=scheme, epsilon=epsilon, checkpoint=checkpoint
    )
    result = taylor_test(rf, theta, _direction(theta, net.trainable), h0=1e-3)
    assert result.min_rate >= 1.95, result.table()


@pytest.mark.parametrize("kernel,options", KERNELS)
def test_width_smoothness_regulariser(kernel, options):
    """γ/2 |θ|²_{H¹}: for w(x, y) = f(x) g(y) the dense kernel's value is
    ½(fᵀAf gᵀM_Lg + fᵀM_Lf gᵀAg); every kernel's R(θ) alone passes the Taylor
    test (rate 2, exact gradient) and is the same on any number of ranks."""
    net, theta, rf = _problem(kernel=kernel, options=options)
    sp, reg = net.space, rf.regulariser
    if kernel == "dense":
        f, g = np.cos(3 * sp.x[:, 0]), np.sin(2 * sp.allgather(sp.x)[:, 1])
        value, _ = reg.smoothness("W", f[:, None] * g[None, :])
        M, A = sp.allgather(sp.m), sp.stiffness_csr
        gl = sp.allgather(f)
        expected = 0.5 * (gl @ (A @ gl) * np.sum(M * g * g) + np.sum(M * gl * gl) * g @ (A @ g))
        assert sp.sum(value) == pytest.approx(expected, rel=1e-12)
    R = type(reg)(net, 0.0, 0.0, 2.0)
    d = _direction(theta, net.trainable).subset(net.layer_names)
    grad = theta.subset(net.layer_names).zeros_like()
    R0 = R(theta, grad)
    errors = [abs(R(theta.copy().axpy(h, d)) - R0 - h * grad.dot(d)) for h in (1e-2, 5e-3)]
    assert np.log2(errors[0] / errors[1]) > 1.95

    theta["b"][...] = 0.0  # _problem draws b per rank; the kernels are canonical
    serial_net, serial_theta, _ = _problem(MPI.COMM_SELF, kernel=kernel, options=options)
    serial_theta["b"][...] = 0.0
    R_serial = type(reg)(serial_net, 0.0, 0.0, 2.0)
    assert R_serial(serial_theta) == pytest.approx(R(theta), rel=1e-11)


def test_embedding_and_readout_regulariser():
    """δ/2 (‖E‖²_{M_L} + ‖C‖²_{M_L} + |d|²): its value by hand, the same on any
    number of ranks, added once when blocks of layers add up R (data ranks), and
    nothing when δ = 0 (DESIGN.md's J)."""
    net, theta, rf = _problem(layers=3)
    sp, reg = net.space, type(rf.regulariser)(net, 0.0, 0.0, 0.0, 0.5)
    m = sp.m[:, None]
    E, C, d = theta["E"], theta["C"], theta["d"]
    expected = 0.25 * (sp.sum(np.sum(m * E * E) + np.sum(m * C * C)) + np.sum(d * d))
    grad = theta.zeros_like()
    assert reg(theta, grad) == pytest.approx(expected, rel=1e-13)
    assert np.array_equal(grad["C"], 0.5 * m * C) and np.array_equal(grad["d"], 0.5 * d)
    assert all(not grad[k].any() for k in net.layer_names)
    blocks = sum(reg(theta, layers=part) for part in (range(0, 1), range(1, 1), range(1, 3)))
    assert blocks == pytest.approx(expected, rel=1e-13)
    assert type(rf.regulariser)(net, 0.0, 0.0, 0.0, 0.0)(theta) == 0.0
    serial_net, serial_theta, _ = _problem(MPI.COMM_SELF, layers=3)
    R_serial = type(reg)(serial_net, 0.0, 0.0, 0.0, 0.5)(serial_theta)
    assert R_serial == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("kernel,options", KERNELS)
def test_depth_regulariser_by_hand(kernel, options):
    """α and β: R = Σₙ (αΔt/2)‖θⁿ‖²_ω + Σₙ (β/2Δt)‖θⁿ⁺¹ − θⁿ‖²_ω and its gradient by
    hand; bit-identical with 1 and 2 threads (row sums, on a mesh big enough for
    several row blocks); blocks of layers add up to R; the same on any number of
    ranks."""
    from threadpoolctl import threadpool_limits

    def problem(comm):
        sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 16}, comm))
        net = ContinuumNetwork(sp, 2, 2, kernel=kernel, kernel_options=dict(options), layers=3)
        return net, net.init_controls(seed=0, gain=1.0)

    net, theta = problem(MPI.COMM_WORLD)
    theta["b"][...] = 0.0  # init draws b per rank; the kernels are canonical
    alpha, beta, dt = 0.3, 0.02, net.dt
    reg = ReducedFunctional(net, np.zeros((1, 2)), [0], alpha=alpha, beta=beta).regulariser
    expected, hand = 0.0, theta.subset(net.layer_names).zeros_like()
    for name, w in net.regularisation_weights().items():
        th = theta[name]
        expected += 0.5 * alpha * dt * np.sum(w * th * th)
        hand[name][...] = alpha * dt * w * th
        diff = th[1:] - th[:-1]
        expected += 0.5 * beta / dt * np.sum(w * diff * diff)
        hand[name][:-1] -= beta / dt * w * diff
        hand[name][1:] += beta / dt * w * diff
    expected = net.space.sum(expected)
    results = []
    for threads in (1, 2):
        grad = theta.subset(net.layer_names).zeros_like()
        with threadpool_limits(threads):
            results.append((reg(theta, grad), grad))
    (R1, g1), (R2, g2) = results
    assert R1 == R2 and all(np.array_equal(g1[k], g2[k]) for k in g1)
    assert R1 == pytest.approx(expected, rel=1e-13)
    for k in hand:
        assert np.allclose(g1[k], hand[k], rtol=1e-13, atol=1e-15 * np.abs(hand[k]).max())
    blocks = sum(reg(theta, layers=part) for part in (range(0, 1), range(1, 3)))
    assert blocks == pytest.approx(expected, rel=1e-13)
    serial_net, serial_theta = problem(MPI.COMM_SELF)
    serial_theta["b"][...] = 0.0
    serial = ReducedFunctional(serial_net, np.zeros((1, 2)), [0], alpha=alpha, beta=beta)
    assert serial.regulariser(serial_theta) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_taylor_every_control_separately(task):
    net, theta, rf = _problem(epsilon=0.1, task=task)
    for name in net.trainable:
        d = _direction(theta, net.trainable).subset([name])
        result = taylor_test(rf, theta, d, h0=1e-3)
        assert result.min_rate >= 1.95, (name, result.table())


@pytest.mark.parametrize(
    "scheme,epsilon,checkpoint",
    [
        ("imex_euler", 0.1, "sqrt"),
        ("imex_euler", 0.0, 3),
        ("midpoint", 0.1, 1),
        ("verlet", 0.0, "sqrt"),
    ],
)
def test_checkpointing_is_bit_identical(scheme, epsilon, checkpoint):
    _, theta, rf_full = _problem(scheme=scheme, epsilon=epsilon, layers=9)
    _, _, rf_ck = _problem(scheme=scheme, epsilon=epsilon, layers=9, checkpoint=checkpoint)
    J1, g1 = rf_full.value_and_gradient(theta)
    J2, g2 = rf_ck.value_and_gradient(theta)
    assert J1 == J2
    assert all(np.array_equal(g1[k], g2[k]) for k in g1)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus"])
@pytest.mark.parametrize("kernel,options", KERNELS)
@pytest.mark.parametrize("scheme,epsilon", [("imex_euler", 0.0), ("imex_euler", 0.1)])
def test_adjoint_records_and_written_gradient_are_bit_identical(
    kernel, options, scheme, epsilon, activation
):
    """The gradient sweep (records for the adjoint alone: Δt σ'(Z) stored in the
    forward; each layer's gradient written, not added to zeros) against the
    trajectory sweep (full records, σ' evaluated in the adjoint, accumulated)."""
    net, theta, rf = _problem(kernel=kernel, options=options, scheme=scheme, epsilon=epsilon)
    net = ContinuumNetwork(
        net.space,
        2,
        2,
        kernel=kernel,
        kernel_options=dict(options or {}),
        scheme=scheme,
        epsilon=epsilon,
        layers=4,
        activation=activation,
        train_embedding=True,
    )
    X = rf.X
    lean = Sweep(net, theta).gradient(X, rf.misfit)
    full = Sweep(net, theta).gradient(X, rf.misfit, trajectory=True)
    assert lean.misfit == full.misfit
    assert all(np.array_equal(lean.gradient[k], full.gradient[k]) for k in full.gradient)


def test_reversible_verlet_gradient_equals_stored():
    _, theta, rf_full = _problem(scheme="verlet", layers=9)
    _, _, rf_rev = _problem(scheme="verlet", layers=9, checkpoint="reverse")
    _, g1 = rf_full.value_and_gradient(theta)
    _, g2 = rf_rev.value_and_gradient(theta)
    assert (g1 - g2).norm() < 1e-10 * g1.norm()


def test_reverse_needs_reversible_scheme():
    with pytest.raises(ValueError, match=r"^checkpointing: 'reverse' needs a reversible scheme"):
        _problem(checkpoint="reverse")


def test_dense_gradient_equals_numpy_backpropagation():
    """ε = 0 dense ResNet u ← u + Δt σ(W M_L u + b), backpropagated by hand in NumPy."""
    net, theta, rf = _problem(layers=5, S=7)
    rf.alpha = rf.beta = rf.gamma = rf.delta = 0.0
    _, grad = rf.value_and_gradient(theta)
    sp, L, dt = net.space, net.layers, net.dt
    W = [sp.to_canonical(theta["W"][n], axis_full=True) for n in range(L)]
    b = [sp.to_canonical(theta["b"][n]) for n in range(L)]
    m, E, C = (sp.to_canonical(a) for a in (sp.m, theta["E"], theta["C"]))
    X, y = rf.X, rf.y
    us, zs = [E @ X], []
    for n in range(L):
        zs.append(W[n] @ (m[:, None] * us[-1]) + b[n][:, None])
        us.append(us[-1] + dt * np.tanh(zs[-1]))
    Y = C.T @ (m[:, None] * us[-1]) + theta["d"][:, None]
    P = np.exp(Y - Y.max(0))
    P /= P.sum(0)
    P[y, np.arange(len(y))] -= 1
    G = P / len(y)
    gu = m[:, None] * (C @ G)
    gW, gb = [None] * L, [None] * L
    for n in reversed(range(L)):
        delta = dt * (1 - np.tanh(zs[n]) ** 2) * gu
        gW[n] = delta @ (m[:, None] * us[n]).T
        gb[n] = delta.sum(1)
        gu = gu + m[:, None] * (W[n].T @ delta)
    ref = {
        "W": np.stack(gW),
        "b": np.stack(gb),
        "E": gu @ X.T,
        "C": (m[:, None] * us[-1]) @ G.T,
        "d": G.sum(1),
    }
    for k, r in ref.items():
        if k in ("W",):
            ours = np.stack([sp.to_canonical(grad[k][n], axis_full=True) for n in range(L)])
        elif k == "b":
            ours = np.stack([sp.to_canonical(grad[k][n]) for n in range(L)])
        elif k == "d":
            ours = grad[k]
        else:
            ours = sp.to_canonical(grad[k])
        assert np.max(np.abs(ours - r)) <= 1e-10 * np.max(np.abs(r)), k


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_continuous_adjoint_converges_at_order_one(epsilon):
    """‖∇J_continuous − ∇J_discrete‖ / ‖∇J_discrete‖ = O(Δt)."""
    sp = WidthSpace(create_mesh({"kind": "unit_interval", "n": 8}, MPI.COMM_WORLD))
    X = np.random.default_rng(2).standard_normal((2, 5))
    G = np.random.default_rng(3).standard_normal((2, 5)) / 5

    def w(t, x, y):
        return np.cos(2 * x[:, None, 0] - y[None, :, 0] + t)

    def rel_difference(layers):
        net = ContinuumNetwork(sp, 2, 2, layers=layers, epsilon=epsilon)
        theta = net.controls_from_fields(
            net.init_controls(seed=1, gain=1.0), w, lambda t, x: 0.3 * np.sin(3 * x[:, 0] + t)
        )
        misfit = lambda Y: (float(np.sum(G * Y)), G, 0.0)  # noqa: E731
        disc = Sweep(net, theta).gradient(X, misfit).gradient
        cont = continuous_adjoint_gradient(net, theta, X, misfit)
        num = sum(np.sum((disc[k] - cont[k]) ** 2) for k in cont)
        den = sum(np.sum(disc[k] ** 2) for k in cont)
        return np.sqrt(sp.sum(num) / sp.sum(den))

    Ns = [8, 16, 32, 64]
    errors = [rel_difference(N) for N in Ns]
    order = -np.polyfit(np.log(Ns), np.log(errors), 1)[0]
    assert abs(order - 1.0) < 0.15, (errors, order)


@pytest.mark.parametrize("axis", ["width", "data"])
@pytest.mark.parametrize("kernel,options", KERNELS)
def test_same_gradient_on_any_number_of_ranks(axis, kernel, options):
    world = MPI.COMM_WORLD
    rng = np.random.default_rng(9)
    X, y = rng.standard_normal((6, 2)), rng.integers(0, 2, 6)

    def run(layout):
        sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 3}, layout.width))
        net = ContinuumNetwork(
            sp,
            2,
            2,
            kernel=kernel,
            kernel_options=dict(options),
            epsilon=0.1,
            layers=3,
            train_embedding=True,
        )
        theta = net.init_controls(seed=4, gain=1.0)
        part = shard(len(X), layout.group, layout.n_data)
        rf = ReducedFunctional(net, X[part], y[part], alpha=1e-2, beta=1e-2, layout=layout)
        J, g = rf.value_and_gradient(theta)
        full = {}
        for k, v in g.items():
            if k == "d":
                full[k] = v
            elif v.ndim >= 2 and v.shape[0] == net.layers:  # layer controls
                full[k] = np.stack(
                    [sp.to_canonical(v[n], axis_full=(k == "W")) for n in range(net.layers)]
                )
            else:
                full[k] = sp.to_canonical(v)
        return J, full

    kw = {"width": world.size} if axis == "width" else {"data": world.size}
    assert_same_value_and_gradient(
        run(Layout.create(MPI.COMM_SELF)), run(Layout.create(world, **kw))
    )


def _bad(key, match, **change):
    """ReducedFunctional with one argument of the tiny problem changed raises keyed ``key``."""
    net, _, _ = _problem()
    rng = np.random.default_rng(2)
    args = {"X": rng.standard_normal((8, 2)), "y": rng.integers(0, 2, 8)}
    args |= {"task": "classification", "alpha": 0.0}
    args |= change
    task = args.pop("task")
    with pytest.raises(InputError, match=match) as e:
        ReducedFunctional(net, args.pop("X"), args.pop("y"), task, **args)
    assert e.value.key == key


@pytest.mark.parametrize(
    "key,match,change",
    [
        ("task", "classification, regression", {"task": "clasification"}),
        ("X", r"shape \(S_local, 2\)", {"X": np.zeros((2, 8))}),
        ("X", r"shape \(S_local, 2\)", {"X": np.zeros((8, 3))}),
        ("X", "non-finite", {"X": np.full((8, 2), np.nan)}),
        ("X", "numeric", {"X": [["a", "b"]] * 8}),
        ("y", "8 labels", {"y": np.zeros(7, int)}),
        ("y", "labels 0 … 1", {"y": np.full(8, 5)}),
        ("y", "labels 0 … 1", {"y": np.full(8, -1)}),  # not NumPy's last class
        ("y", "labels 0 … 1", {"y": np.full(8, 0.5)}),  # not truncated to 0
        ("y", "numbers", {"y": np.array(["0"] * 8)}),
        ("y", r"shape \(8, 2\)", {"task": "regression", "y": np.zeros((8, 3))}),
        ("y", "non-finite", {"task": "regression", "y": np.full((8, 2), np.inf)}),
        ("alpha", "≥ 0", {"alpha": -1.0}),
        ("alpha", "≥ 0", {"alpha": np.nan}),
        # were OverflowError/TypeError on one rank (the others waited), or accepted
        ("alpha", "≥ 0", {"alpha": 10**400}),
        ("alpha", "≥ 0", {"alpha": True}),
        ("alpha", "≥ 0", {"alpha": 1 + 2j}),
        ("task", "classification, regression", {"task": ["classification"]}),
        ("X", "numeric array", {"X": np.array([[10**400, 1]] * 8, dtype=object)}),
        ("X", "complex", {"X": np.zeros((8, 2)) + 1j}),
        ("y", "numbers", {"y": np.ones(8, bool)}),
    ],
)
def test_reduced_functional_checks_its_arguments(key, match, change):
    """X, y, task and the weights are checked (an InputError keyed by the argument),
    on every rank alike; labels are never wrapped or truncated."""
    _bad(key, match, **change)


def test_one_rank_with_bad_samples_fails_every_data_rank():
    """The data ranks agree on the error: a bad label on one rank only is raised on
    all of them, instead of the others waiting in a collective."""
    world = MPI.COMM_WORLD
    layout = Layout.create(world, width=1, data=world.size)
    net, _, _ = _problem(MPI.COMM_SELF)
    y = np.zeros(4, int)
    if world.rank == world.size - 1:
        y[0] = 7
    with pytest.raises(InputError, match="labels") as e:
        ReducedFunctional(net, np.zeros((4, 2)), y, "classification", layout=layout)
    assert e.value.key == "y"


def test_min_rate_fails_on_nan_and_non_finite_remainders():
    """min_rate is NaN (so ``>= 1.95`` fails) when a remainder is 0/0 or not finite;
    fewer than two steps give no rate and are refused."""
    from pontryx.solver.adjoint.taylor import TaylorResult

    h = [1.0, 0.5, 0.25, 0.125]
    assert TaylorResult(h, [1] * 4, [4.0, 1.0, 0.25, 0.0625]).min_rate == pytest.approx(2.0)
    assert np.isnan(TaylorResult(h, [1] * 4, [4.0, 1.0, 0.0, 0.0]).min_rate)  # was 2
    assert np.isnan(TaylorResult(h, [1] * 4, [4.0, 1.0, np.nan, 0.0625]).min_rate)
    assert np.isnan(TaylorResult(h, [1] * 4, [np.inf, 1.0, 0.25, 0.0625]).min_rate)
    _, theta, rf = _problem()
    d = _direction(theta, ["W", "d"])
    for steps in (1, 0, 2.5, 3.0, "3", True):  # 3.0 passed, then crashed in range()
        with pytest.raises(InputError, match="integer ≥ 2") as e:
            taylor_test(rf, theta, d, steps=steps)
        assert e.value.key == "steps"
    for h0 in (0.0, -1.0, np.inf, np.nan, "a", None):
        with pytest.raises(InputError, match="positive finite") as e:
            taylor_test(rf, theta, d, h0=h0)
        assert e.value.key == "h0"
    with pytest.raises(InputError, match="true or false"):
        taylor_test(rf, theta, d, hessian="no")  # truthy: it computed the Hessian
    odd = Controls({"W": d["W"], "Q": np.zeros(3)}, theta.comm)  # (E untrained: KeyError)
    with pytest.raises(InputError, match="Q: not trainable") as e:
        taylor_test(rf, theta, odd)
    assert e.value.key == "direction"


@pytest.mark.parametrize("scheme", ["rk4", "verlet"])
def test_explicit_schemes_refuse_epsilon_in_python_too(scheme):
    """rk4 and verlet take ε = 0: ε > 0 is refused by the network, not dropped."""
    sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 2}, MPI.COMM_WORLD))
    with pytest.raises(InputError, match=f"the {scheme} scheme needs epsilon = 0") as e:
        ContinuumNetwork(sp, 2, 2, scheme=scheme, epsilon=0.5)
    assert e.value.key == "epsilon"
