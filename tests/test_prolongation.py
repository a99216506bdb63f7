"""Prolongation between networks (solver/model/prolongation.py) and multilevel
training (solver/training/levels.py): the interpolation is exact on nested
spaces and independent of the rank count, controls keep their values at the
coarse nodes, depth interpolation is linear, and nested iteration runs the one
training loop level after level."""

from mpi4py import MPI

import numpy as np
import pytest

from pontryx.meshes import InputError, create_mesh
from pontryx.solver import ContinuumNetwork, Layout, ReducedFunctional, WidthSpace
from pontryx.solver.model.fields import FieldLaw
from pontryx.solver.model.prolongation import Prolongation, prolong_controls, prolong_depth
from pontryx.solver.outputs.canonical import to_canonical
from pontryx.solver.training.levels import Level, train_levels

KERNELS = [("dense", {}), ("lowrank", {"rank": 3}), ("local", {})]


def _space(n, degree=1, comm=MPI.COMM_WORLD, kind="unit_square"):
    desc = {"kind": kind, "n": n} if kind != "disk" else {"kind": "disk", "h": n}
    return WidthSpace(create_mesh(desc, comm), degree)


@pytest.mark.parametrize("degree", [1, 2])
def test_interpolation_is_exact_on_nested_spaces(degree):
    """P reproduces V_H functions (here the polynomials of degree ``degree``),
    rows sum to 1, w(x, y) = f(x) g(y) in both variables, and Pᵀ is the
    transpose: ⟨Y, P X⟩ = ⟨Pᵀ Y, X⟩."""
    c, f = _space(3, degree), _space(6, degree)
    P = Prolongation(c, f)

    def poly(x):
        return 1 + 2 * x[:, 0] - x[:, 1] + (degree == 2) * x[:, 0] * x[:, 1]

    assert np.allclose(P(poly(c.x)), poly(f.x), atol=1e-13)
    assert np.allclose(np.asarray(P.P.sum(axis=1)).ravel(), 1.0, atol=1e-13)
    W = poly(c.x)[:, None] * np.cos(c.allgather(c.x)[:, 0])[None, :]
    assert np.allclose(P.kernel(W), P(W) @ P.full.T.toarray(), atol=1e-12)
    Wf = P.kernel(poly(c.x)[:, None] * poly(c.allgather(c.x))[None, :])
    assert np.allclose(Wf, poly(f.x)[:, None] * poly(f.allgather(f.x))[None, :], atol=1e-12)
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((c.n, 2)), rng.standard_normal((f.n, 2))
    assert f.sum(float(np.vdot(Y, P(X)))) == pytest.approx(c.sum(float(np.vdot(P.restrict(Y), X))))


def test_interpolation_between_non_matching_meshes():
    """gmsh disks with different h: every fine dof gets a partition of unity."""
    P = Prolongation(_space(0.5, kind="disk"), _space(0.3, kind="disk"))
    assert np.allclose(np.asarray(P.P.sum(axis=1)).ravel(), 1.0, atol=1e-10)


def test_depth_interpolation():
    t = lambda L: (np.arange(L) + 0.5) / L  # noqa: E731  (layer midpoints on [0, 1])
    values = 2 * t(4)[:, None] + np.arange(3)[None, :]
    fine = prolong_depth(values, 8)
    inner = (t(8) > t(4)[0]) & (t(8) < t(4)[-1])
    assert np.allclose(fine[inner], (2 * t(8)[:, None] + np.arange(3)[None, :])[inner])
    assert np.allclose(fine[0], values[0]) and np.allclose(fine[-1], values[-1])
    assert np.array_equal(prolong_depth(values, 4), values)
    assert np.allclose(prolong_depth(values[:1], 5), values[:1])


@pytest.mark.parametrize("kernel,options", KERNELS)
def test_prolonged_controls_keep_their_values_at_the_coarse_nodes(kernel, options):
    """Same depth, nested meshes: every control at the coarse nodes (both dof axes
    for the dense kernel) equals the coarse one; the same on any number of ranks."""

    def run(comm):
        nets = [
            ContinuumNetwork(_space(n, comm=comm), 2, 2, kernel=kernel, kernel_options=options)
            for n in (2, 4)
        ]
        coarse = nets[0].init_controls(seed=0, law=FieldLaw(bias_variance=1.0))
        fine = prolong_controls(nets[0], coarse, nets[1])
        return [to_canonical(net, th) for net, th in zip(nets, (coarse, fine))], nets

    (cc, fc), nets = run(MPI.COMM_WORLD)
    xc, xf = (to_canonical(net, {"C": net.space.x})["C"] for net in nets)
    index = [int(np.argmin(np.sum((xf - p) ** 2, axis=1))) for p in xc]
    for name, value in cc.items():
        got = fc[name]
        if name == "d":
            assert np.array_equal(got, value)
            continue
        got = got[:, index] if name in nets[0].layer_names else got[index]
        if name == "W":
            got = got[:, :, index]
        assert np.allclose(got, value, atol=1e-12), name
    (_, fs), _ = run(Layout.create(MPI.COMM_SELF).width)
    for name, value in fs.items():
        assert np.allclose(value, fc[name], atol=1e-12), name


def test_prolongation_refuses_other_kernels():
    a = ContinuumNetwork(_space(2), 2, 2, kernel="lowrank", kernel_options={"rank": 2})
    b = ContinuumNetwork(_space(4), 2, 2, kernel="lowrank", kernel_options={"rank": 3})
    with pytest.raises(InputError, match=r"^kernel: "):
        prolong_controls(a, a.init_controls(), b)


def test_train_levels_runs_the_loop_level_after_level():
    """Two levels (n = 2, 2 layers → n = 4, 4 layers): each level trains its
    iterations; the second starts at J of the prolonged first-level controls."""
    rng = np.random.default_rng(0)
    X, y = rng.uniform(-1, 1, (16, 2)), rng.integers(0, 2, 16)
    levels = []
    for n, layers in ((2, 2), (4, 4)):
        net = ContinuumNetwork(_space(n), 2, 2, layers=layers, T=2.0)
        levels.append(Level(net, ReducedFunctional(net, X, y, alpha=1e-4), max_iterations=3))
    levels[0].controls = levels[0].net.init_controls(seed=0, law=FieldLaw())
    seen = []
    results = train_levels(levels, "lmvm", on_record=lambda k, rec: seen.append((k, rec.iteration)))
    assert seen == [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]
    assert [r.result.trainer.iteration for r in results] == [3, 3]
    start = prolong_controls(levels[0].net, results[0].controls, levels[1].net)
    J0 = levels[1].rf(start)
    assert results[1].history[0].loss < J0  # the fine level improved on its start
    with pytest.raises(InputError, match=r"^levels: "):
        train_levels([])
