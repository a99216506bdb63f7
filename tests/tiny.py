"""Small problems shared by the tests: a network on a few ellipses samples."""

from __future__ import annotations

from mpi4py import MPI

import numpy as np

from pontryx.meshes import create_mesh
from pontryx.solver import ContinuumNetwork, Layout, ReducedFunctional, WidthSpace, shard
from pontryx.solver.data import load_dataset

INTERVAL = {"kind": "unit_interval", "n": 4}


def ellipses_problem(
    comm=MPI.COMM_WORLD,
    *,
    layout=None,
    n=16,
    alpha=1e-2,
    beta=0.0,
    gamma=0.0,
    delta=0.0,
    layers=4,
    mesh=INTERVAL,
    **model,
):
    """(rf, controls) for a network on ``mesh`` and ``n`` ellipses samples,
    width-distributed over ``layout.width`` (or ``comm``), the samples split over
    ``layout.data``; the nodal initial controls of seed 0."""
    ds = load_dataset({"name": "ellipses", "n_train": n, "n_test": 4, "seed": 0})
    space = WidthSpace(create_mesh(mesh, layout.width if layout is not None else comm))
    net = ContinuumNetwork(space, 2, 2, layers=layers, **model)
    X, y = ds.X_train, ds.y_train
    if layout is not None:
        s = shard(len(X), layout.data.rank, layout.data.size)
        X, y = X[s], y[s]
    rf = ReducedFunctional(
        net, X, y, "classification", alpha=alpha, beta=beta, gamma=gamma, delta=delta, layout=layout
    )
    return rf, net.init_controls(seed=0)


def assert_same_value_and_gradient(one, two, rtol_value=1e-13, rtol_gradient=1e-12):
    """(J, {name: canonical gradient}) of two layouts agree to round-off."""
    (J1, g1), (J2, g2) = one, two
    assert abs(J1 - J2) <= rtol_value * abs(J1), (J1, J2)
    for k in g1:
        scale = max(np.max(np.abs(g1[k])), 1e-300)
        assert np.max(np.abs(g1[k] - g2[k])) <= rtol_gradient * scale, k


def outputs_on_one_and_all_ranks(network, X, axis, comm=MPI.COMM_WORLD):
    """The outputs of ``network(width_comm)`` (a ContinuumNetwork on that width
    communicator) at the samples X (columns) with seed-4 controls: on one rank, and
    with ``comm``'s ranks on the width or the data ``axis`` (samples gathered)."""

    def run(layout):
        net = network(layout.width)
        theta = net.init_controls(seed=4, gain=1.0)
        part = shard(X.shape[1], layout.group, layout.n_data)
        Y = net.forward(theta, X[:, part])
        return np.concatenate(layout.data.allgather(Y), axis=1)

    layout = Layout.create(comm, **{axis: comm.size})
    return run(Layout.create(MPI.COMM_SELF)), run(layout)
