"""The UFL forms are the model: the batched sweep (forward, discrete adjoint,
gradients) and the batched layer Hamiltonian equal the forms of
:mod:`pontryx.forms.residual` evaluated sample by sample (:mod:`ufl_layer`), for
every scheme, kernel and ε, on any number of ranks; the lumped measure is the
lumped mass of the width space."""

from mpi4py import MPI

import dolfinx.fem
import numpy as np
import pytest
import ufl
from ufl_layer import UFLLayer, _vector

from pontryx.forms.operators import lumped_measure
from pontryx.forms.residual import hamiltonian_density, imex_euler_forms
from pontryx.meshes import create_mesh
from pontryx.solver import ContinuumNetwork, ReducedFunctional, Sweep, WidthSpace
from pontryx.solver.adjoint.hamiltonian import (
    hamiltonian,
    hamiltonian_gradient,
    layer_hamiltonians,
)

KERNELS = [("dense", {}), ("lowrank", {"rank": 3}), ("local", {})]
SCHEMES = [
    ("imex_euler", 0.0),
    ("imex_euler", 0.1),
    ("midpoint", 0.0),
    ("midpoint", 0.1),
    ("verlet", 0.0),
    ("rk4", 0.0),
]


def _network(kernel, options, scheme, epsilon, degree=1, n=3, layers=3):
    sp = WidthSpace(create_mesh({"kind": "unit_square", "n": n}, MPI.COMM_WORLD), degree)
    net = ContinuumNetwork(
        sp,
        2,
        2,
        kernel=kernel,
        kernel_options=dict(options),
        scheme=scheme,
        epsilon=epsilon,
        layers=layers,
        T=1.5,
        train_embedding=True,
    )
    theta = net.init_controls(seed=1, gain=1.0)
    theta["b"][...] = 0.2 * np.random.default_rng(0).standard_normal(theta["b"].shape)
    return net, theta


def _samples(S=2):
    X = np.random.default_rng(3).standard_normal((2, S))
    G = np.random.default_rng(7).standard_normal((2, S))
    return X, G, (lambda Y: (float(np.sum(G * Y)), G, 0.0))


def _close(a, b, rtol=1e-11):
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    return float(np.max(np.abs(a - b), initial=0.0)) <= rtol * scale


@pytest.mark.parametrize("degree", [1, 2, 3])
@pytest.mark.parametrize("kind", ["unit_square", "unit_interval"])
def test_lumped_measure_is_the_lumped_mass(kind, degree):
    sp = WidthSpace(create_mesh({"kind": kind, "n": 3}, MPI.COMM_WORLD), degree)
    f = dolfinx.fem.Function(sp.V)
    f.interpolate(lambda x: 1 + x[0] ** 2)
    v = ufl.TestFunction(sp.V)
    fm = _vector(f * v * lumped_measure(sp.V, sp.lumping), sp.n)
    assert np.allclose(fm, sp.m * f.x.array[: sp.n], rtol=1e-13, atol=0)


@pytest.mark.parametrize("kernel,options", KERNELS)
@pytest.mark.parametrize("scheme,epsilon", SCHEMES)
def test_batched_sweep_equals_the_forms(kernel, options, scheme, epsilon):
    """States, outputs, costates Λⁿ and the gradients in b, E and the kernel: the
    batched sweep against the residual forms and their derived adjoint blocks."""
    net, theta = _network(kernel, options, scheme, epsilon)
    sp, K = net.space, net.kernel
    X, G, misfit = _samples()
    res = Sweep(net, theta).gradient(X, misfit, trajectory=True)
    layer = UFLLayer(net)
    gb, gE = np.zeros_like(theta["b"]), np.zeros_like(theta["E"])
    gK = {k: np.zeros_like(theta[k]) for k in K.shapes()}
    for s in range(X.shape[1]):
        state = net.scheme.initial_state((theta["E"] @ X[:, s])[:, None])
        state = tuple(u[:, 0] for u in state)
        records = []
        for n in range(net.layers):
            for a, b in zip(state, res.states[n]):
                assert _close(a, b[:, s])
            th = net.layer_controls(theta, n)
            new, values = layer.forward(n, th, theta["b"][n], state)
            records.append((th, values))
            state = new
        yhat = sp.sum(theta["C"].T @ (sp.m * state[0])) + theta["d"]
        assert _close(yhat, res.Yhat[:, s])
        lam = (sp.m * (theta["C"] @ G[:, s]), *(np.zeros(sp.n) for _ in state[1:]))
        for n in reversed(range(net.layers)):
            th, values = records[n]
            lam, db, dK = layer.adjoint(n, th, values, lam)
            for a, b in zip(lam, res.costates[n]):
                assert _close(a, b[:, s], 1e-10)
            gb[n] += db
            for k, v in dK.items():
                gK[k][n] += v
        gE += np.outer(lam[0], X[:, s])
    assert _close(gb, res.gradient["b"])
    assert _close(gE, res.gradient["E"])
    for k, v in gK.items():
        assert _close(v, res.gradient[k]), k


@pytest.mark.parametrize("kernel,options", KERNELS)
@pytest.mark.parametrize("scheme,epsilon", SCHEMES)
def test_batched_hamiltonian_equals_the_form(kernel, options, scheme, epsilon):
    """Hⁿ(Uⁿ, P^{n+1}, θⁿ) batched = Σ_s ⟨P_s, gⁿ(u_s)⟩ from the layer Hamiltonian
    form; ∂_θ Hⁿ = −∂J/∂θⁿ (the Pontryagin signs of DESIGN.md §1/§3)."""
    net, theta = _network(kernel, options, scheme, epsilon)
    X, _, misfit = _samples()
    res = Sweep(net, theta).gradient(X, misfit, trajectory=True)
    layer = UFLLayer(net)
    for n in range(net.layers):
        th = {k: theta[k][n] for k in net.layer_names}
        state, lam = res.states[n], res.costates[n + 1]
        H = hamiltonian(net, n, th, state, lam)
        H_ufl = sum(
            layer.hamiltonian(
                n,
                net.layer_controls(theta, n),
                theta["b"][n],
                tuple(u[:, s] for u in state),
                tuple(L[:, s] for L in lam),
            )
            for s in range(X.shape[1])
        )
        assert H == pytest.approx(H_ufl, rel=1e-11, abs=1e-13)
        dH = hamiltonian_gradient(net, n, th, state, lam)
        for k in net.layer_names:
            assert _close(dH[k], -res.gradient[k][n]), k


@pytest.mark.parametrize("epsilon", [0.0, 0.1])
def test_imex_euler_hamiltonian_is_the_density(epsilon):
    """Hⁿ = ⟨P, Uⁿ⟩ + Δt h(uⁿ, q, zⁿ) with q = (M_L + ΔtεA)⁻¹ P (one sample)."""
    net, theta = _network("dense", {}, "imex_euler", epsilon)
    sp, n = net.space, 1
    X, _, misfit = _samples(1)
    res = Sweep(net, theta).gradient(X, misfit, trajectory=True)
    U, L = res.states[n][0][:, 0], res.costates[n + 1][0][:, 0]
    th = {k: theta[k][n] for k in net.layer_names}
    H = hamiltonian(net, n, th, (U[:, None],), (L[:, None],))
    const = dolfinx.fem.Constant
    f = imex_euler_forms(sp.V, const(sp.mesh, net.dt), const(sp.mesh, epsilon), net.activation)
    q, u, z = (dolfinx.fem.Function(sp.V) for _ in range(3))
    layer = UFLLayer(net)
    ctx = net.kernel.layer(net.layer_controls(theta, n))
    zn = net.kernel.apply(ctx, U[:, None])[:, 0] + theta["b"][n]
    solve = f.steps[1]
    for fn, values in ((u, U), (z, zn)):
        layer._set(fn, values)
    layer._set(q, layer._solve(solve.jacobian_adjoint(), -L))  # (∂F/∂u)ᵀ q = P
    h = sp.sum(
        dolfinx.fem.assemble_scalar(
            dolfinx.fem.form(hamiltonian_density(q, u, z, const(sp.mesh, epsilon), net.activation))
        )
    )
    assert H == pytest.approx(sp.sum(float(-L @ U)) + net.dt * h, rel=1e-12)


def test_layer_hamiltonians_with_the_regulariser():
    """The maximum principle's function: Hⁿ at θⁿ from a trajectory, with R (α, β):
    H equals the batched parts, and ∂_θHⁿ = −∂J/∂θⁿ including the regulariser."""
    net, theta = _network("dense", {}, "imex_euler", 0.05, layers=4)
    X = np.random.default_rng(3).standard_normal((6, 2))
    y = np.arange(6) % 2
    rf = ReducedFunctional(net, X, y, alpha=0.1, beta=0.05)
    Hs = layer_hamiltonians(rf, theta)
    traj = rf.trajectory(theta)
    _, grad = rf.value_and_gradient(theta)
    frozen = {k: theta[k] for k in net.layer_names}
    for n in range(net.layers):
        th = {k: theta[k][n] for k in net.layer_names}
        args = (net, n, th, traj.states[n], traj.costates[n + 1])
        H0 = hamiltonian(*args)
        Rn = net.space.sum(rf.regulariser.layer(n, th, frozen, {k: 0 * v for k, v in th.items()}))
        assert Hs[n] == pytest.approx(H0 - Rn, rel=1e-13)
        dH = hamiltonian_gradient(*args, regulariser=rf.regulariser, frozen=frozen)
        for k in net.layer_names:
            assert _close(dH[k], -grad[k][n]), k
