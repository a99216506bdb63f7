"""The conv kernel (solver/model/kernels/conv.py): plane differential operators
with channel-kernel coefficients on a box P × Z. Exact gradients (Taylor rate
≥ 1.95), the operator against a direct evaluation of its definition, the same
outputs on 1 and 2 ranks (width and data axes), errors keyed by the argument."""

from mpi4py import MPI

import numpy as np
import pytest
from tiny import outputs_on_one_and_all_ranks

from pontryx.meshes import create_mesh
from pontryx.meshes.errors import InputError
from pontryx.solver import (
    ContinuumNetwork,
    ReducedFunctional,
    WidthSpace,
    taylor_test,
)
from pontryx.solver.model.kernels import make_kernel

BOX = {"kind": "box", "n": [3, 2, 2], "cell": "hexahedron"}


def _space(comm=MPI.COMM_WORLD, mesh=BOX):
    return WidthSpace(create_mesh(dict(mesh), comm))


def _net(comm=MPI.COMM_WORLD, order=2, scheme="imex_euler", epsilon=0.0, shared=False):
    sp = _space(comm)
    net = ContinuumNetwork(
        sp,
        4,
        3,
        kernel="conv",
        kernel_options={"order": order, "length": 0.3, "shared": shared},
        scheme=scheme,
        epsilon=epsilon,
        layers=3,
        embedding="image",
        input_shape=(2, 2),
        train_embedding=True,
    )
    return net, net.init_controls(seed=0, gain=1.0)


def _samples(S=6):
    return np.random.default_rng(2).standard_normal((4, S))


def test_operator_is_its_definition(comm):
    """(K U)(p, l) = Σ_k Σ_l' a[(p,l), k, l'] ω_Z[l'] (D_k U_{·,l'})_p, evaluated
    dof by dof on the gathered arrays; Kᵀ is its transpose."""
    sp = _space(comm)
    K = make_kernel(sp, "conv")
    rng = np.random.default_rng(7)
    a_full = rng.standard_normal((sp.N, K.K, K.L))
    U_full = rng.standard_normal((sp.N, 5))
    a = a_full[sp.offset : sp.offset + sp.n]
    Z = sp.allgather(K.apply(K.layer({"a": a}), U_full[sp.offset : sp.offset + sp.n]))
    D = K.D.toarray().reshape(K.K, K.Np, K.Np)
    dof_p = np.empty(sp.N, dtype=int)
    dof_l = np.empty(sp.N, dtype=int)
    for p in range(K.Np):
        dof_p[K.grid[p]], dof_l[K.grid[p]] = p, np.arange(K.L)
    expected = np.zeros_like(U_full)
    for i in range(sp.N):
        for k in range(K.K):
            for lp in range(K.L):
                DU = D[k, dof_p[i]] @ U_full[K.grid[:, lp]]
                expected[i] += a_full[i, k, lp] * K.wz[lp] * DU
    assert np.allclose(Z, expected, rtol=1e-12, atol=1e-12)
    V = rng.standard_normal((sp.N, 5))
    KtV = sp.allgather(K.apply_T(K.layer({"a": a}), V[sp.offset : sp.offset + sp.n]))
    assert np.sum(V * expected) == pytest.approx(np.sum(KtV * U_full), rel=1e-12)


@pytest.mark.parametrize("shared", [False, True])
def test_column_blocks_change_nothing(comm, monkeypatch, shared):
    """K U, Kᵀ D and the gradient ∂⟨D, K U⟩/∂a over column blocks of 2 samples (2, 2
    and 1 of S = 5) equal those of one block, to round-off."""
    sp = _space(comm)
    K = make_kernel(sp, "conv", shared=shared)
    rng = np.random.default_rng(5)
    ctx = K.layer({"a": rng.standard_normal((sp.n, K.K, K.L))})
    U, D = rng.standard_normal((2, sp.n, 5))

    def outputs():
        g = {"a": np.zeros((sp.n, K.K, K.L))}
        K.vjp(ctx, U, D, g)
        return K.apply(ctx, U), K.apply_T(ctx, D), g["a"]

    whole = outputs()
    monkeypatch.setattr(K, "CHUNK", 2)
    for one, blocked in zip(whole, outputs(), strict=True):
        assert np.allclose(blocked, one, rtol=1e-13, atol=1e-13)


def test_no_columns(comm):
    """K and Kᵀ of an n × 0 block (a data rank's empty share of a minibatch) are
    n × 0 blocks (Kᵀ's reshape of no columns failed: adam with batch_size 1 on
    the data axis crashed)."""
    sp = _space(comm)
    K = make_kernel(sp, "conv")
    a = np.random.default_rng(7).standard_normal((sp.n, K.K, K.L))
    ctx = K.layer({"a": a})
    assert K.apply(ctx, np.zeros((sp.n, 0))).shape == (sp.n, 0)
    assert K.apply_T(ctx, np.zeros((sp.n, 0))).shape == (sp.n, 0)


@pytest.mark.parametrize(
    "upper",
    [[1e4, 1e4, 1e-5], [1e-3, 1e-3, 1e3], [1.0, 1.0, 1.0]],
    ids=["thin-channels", "thin-plane", "cube"],
)
def test_grid_of_an_anisotropic_box(comm, upper):
    """Each axis's levels are told apart on its own scale: the channel levels and
    their trapezoid weights ω_Z are exact to round-off, and a plane much smaller
    than the channel axis is a uniform grid (rounding to 10⁻¹⁰ of the largest
    extent had put ω_Z 10 % off on the thin box and refused the thin plane)."""
    mesh = {"kind": "box", "n": [2, 2, 3], "upper": upper, "cell": "hexahedron"}
    K = make_kernel(_space(comm, mesh), "conv")
    h = upper[2] / 3
    assert np.allclose(K.zs, h * np.arange(4), rtol=1e-14, atol=1e-14 * h)
    assert np.allclose(K.wz, h * np.array([0.5, 1, 1, 0.5]), rtol=1e-14, atol=0)
    assert np.allclose(K.xs, upper[0] / 2 * np.arange(3), rtol=1e-14, atol=1e-14 * upper[0])


def test_plane_operators_differentiate():
    """On the interior of the plane, D_1 = ℓ∂_x, D_3 = ℓ²∂_xx and D_5 = ℓ²∂_xy are
    exact on quadratics (Q1, uniform grid)."""
    sp = _space(MPI.COMM_SELF, {"kind": "box", "n": [6, 6, 1], "cell": "hexahedron"})
    K = make_kernel(sp, "conv", length=0.5)
    x, y = np.meshgrid(K.xs, K.ys)
    x, y = x.ravel(), y.ravel()
    i, j = np.meshgrid(np.arange(K.xs.size), np.arange(K.ys.size))  # by index: the
    i, j = i.ravel(), j.ravel()  # levels are mesh coordinates, 0 and 1 up to round-off
    inner = (i > 0) & (i < K.xs.size - 1) & (j > 0) & (j < K.ys.size - 1)
    D = K.D.toarray().reshape(K.K, K.Np, K.Np)
    f = x**2 + 3 * x * y - y**2
    assert np.allclose((D[1] @ f)[inner], 0.5 * (2 * x + 3 * y)[inner])
    assert np.allclose((D[3] @ f)[inner], 0.25 * 2)
    assert np.allclose((D[4] @ f)[inner], 0.25 * -2)
    assert np.allclose((D[5] @ f)[inner], 0.25 * 3)


@pytest.mark.parametrize(
    "order,scheme,epsilon,shared",
    [
        (2, "imex_euler", 0.0, False),
        (1, "midpoint", 0.1, False),
        (2, "imex_euler", 0.0, True),
        (1, "rk4", 0.0, False),
    ],
)
def test_taylor(order, scheme, epsilon, shared):
    net, theta = _net(order=order, scheme=scheme, epsilon=epsilon, shared=shared)
    theta["b"][...] = 0.1
    y = np.random.default_rng(3).integers(0, 3, 6)
    rf = ReducedFunctional(
        net, _samples().T, y, "classification", alpha=1e-2, beta=1e-2, gamma=1e-3
    )
    d = theta.subset(net.trainable).zeros_like()
    rng = np.random.default_rng(5 + theta.comm.rank)
    for k in d:
        d[k][...] = rng.standard_normal(d[k].shape)
    d["d"][...] = theta.comm.bcast(d["d"] if theta.comm.rank == 0 else None)
    result = taylor_test(rf, theta, d, h0=1e-3)
    assert result.min_rate >= 1.95, result.table()
    net.destroy()


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("axis", ["width", "data"])
def test_same_outputs_on_any_number_of_ranks(axis, shared):
    def network(width):
        return ContinuumNetwork(
            _space(width),
            4,
            3,
            kernel="conv",
            kernel_options={"shared": shared},
            layers=3,
            embedding="image",
            input_shape=(2, 2),
        )

    serial, parallel = outputs_on_one_and_all_ranks(network, _samples(6), axis)
    assert np.max(np.abs(serial - parallel)) < 1e-12


@pytest.mark.parametrize(
    "mesh,options,key",
    [
        ({"kind": "unit_square", "n": 2}, {}, "type"),  # model.kernel.type: conv on this mesh
        (BOX, {"order": 3}, "order"),
        (BOX, {"length": 0}, "length"),
        (BOX, {"rank": 2}, "rank"),
    ],
)
def test_bad_input_names_the_argument(mesh, options, key):
    with pytest.raises(InputError) as e:
        make_kernel(_space(mesh=mesh), "conv", **options)
    assert e.value.key == key


@pytest.mark.parametrize("shared", [False, True])
def test_model_npz_forward_with_numpy_alone(shared, mpi_tmp_path):
    """README's NumPy forward pass on model.npz (Kⁿ = M_L⁻¹ Lⁿ, as for the local
    kernel) reproduces pontryx's Ŷ; the canonical round trip of the controls."""
    from test_outputs import run_readme_forward

    from pontryx.solver.outputs import model_io
    from pontryx.solver.outputs.canonical import from_canonical, to_canonical

    net, theta = _net(shared=shared)
    theta["b"][...] = 0.2
    X = _samples()
    Yhat = net.forward(theta, X)
    back = from_canonical(net, to_canonical(net, theta))
    assert all(np.array_equal(back[k], theta[k]) for k in theta)
    path = mpi_tmp_path / "model.npz"
    model_io.save_model(
        path, net, theta, task="classification", input_shape=(2, 2), classes=(0, 1, 2)
    )
    theta.comm.Barrier()
    error = None
    if theta.comm.rank == 0:
        error = float(np.max(np.abs(run_readme_forward(path, X.T) - Yhat)))
    assert theta.comm.bcast(error) < 1e-10
    net.destroy()
