"""Noise in depth (solver/model/noise.py): the Q-Wiener increments (pointwise
variance g²Δt, Matérn correlation, canonical draws), the expected loss over M
paths, the pathwise gradient (Taylor rate 2) and Hessian action (rate 3) for
every depth scheme and storage, minibatches that keep each sample's paths,
redrawn paths, and the same J and ∇J on 1 and 2 ranks (width and data axes)."""

from mpi4py import MPI

import numpy as np
import pytest
from tiny import assert_same_value_and_gradient

from pontryx.meshes import create_mesh
from pontryx.solver import ContinuumNetwork, Layout, ReducedFunctional, WidthSpace, shard
from pontryx.solver.adjoint import taylor_test
from pontryx.solver.model.noise import DepthNoise
from pontryx.solver.outputs.canonical import random_direction, to_canonical

SQUARE = {"kind": "unit_square", "n": 3}


def _problem(
    comm=MPI.COMM_WORLD,
    *,
    scheme="imex_euler",
    epsilon=0.0,
    layers=4,
    S=6,
    samples=2,
    amplitude=0.3,
    checkpoint=None,
    layout=None,
    resample=False,
):
    """A dense network with noise in depth on S two-class samples."""
    comm = layout.width if layout is not None else comm
    sp = WidthSpace(create_mesh(SQUARE, comm))
    net = ContinuumNetwork(sp, 2, 2, scheme=scheme, epsilon=epsilon, layers=layers)
    noise = DepthNoise(
        sp, amplitude, correlation_length=0.4, samples=samples, seed=3, resample=resample
    )
    theta = net.init_controls(seed=0, gain=1.0)
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((S, 2)), rng.integers(0, 2, S)
    if layout is not None:
        part = shard(S, layout.group, layout.n_data)
        X, y = X[part], y[part]
    rf = ReducedFunctional(net, X, y, alpha=1e-2, checkpoint=checkpoint, noise=noise, layout=layout)
    return net, theta, rf


def test_increments_have_the_matern_law(comm):
    """Var(g ΔW(x)) ≈ g²Δt inside Ω (unit pointwise variance of T ξ, converging as
    h → 0) and the Matérn correlation ≈ 0.13 at distance ρ; canonical draws."""
    sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 12}, MPI.COMM_SELF))
    noise = DepthNoise(sp, 0.5, correlation_length=0.3)
    X = noise.increments(0, np.arange(3000), 0, 0.04)  # g √Δt = 0.1
    x = sp.x
    inner = (x.min(axis=1) > 0.3) & (x.max(axis=1) < 0.7)
    variance = X.var(axis=1) / 0.1**2
    assert 0.95 < variance[inner].mean() < 1.25, variance[inner].mean()
    i = np.argmin(((x - [0.35, 0.5]) ** 2).sum(axis=1))
    j = np.argmin(((x - [0.65, 0.5]) ** 2).sum(axis=1))  # 0.3 apart
    assert 0.05 < np.corrcoef(X[i], X[j])[0, 1] < 0.2
    # draws depend on (seed, epoch, layer, column) only: any subset gives the same columns
    ids = np.array([5, 300, 2, 1000])
    sub = noise.increments(0, ids, 0, 0.04)
    assert np.array_equal(sub, noise.increments(0, ids, 0, 0.04))
    full = noise.increments(0, np.arange(1001), 0, 0.04)
    assert np.allclose(sub, full[:, ids], rtol=1e-12, atol=1e-15)
    assert not np.allclose(sub, noise.increments(1, ids, 0, 0.04))
    assert not np.allclose(sub, noise.increments(0, ids, 1, 0.04))
    noise.destroy()


def test_expected_loss_is_the_mean_over_paths():
    """J with M paths is the mean of the M single-path misfits; amplitude 0 is the
    deterministic network exactly; the deterministic copy has no noise."""
    _, theta, rf = _problem(samples=3)
    J = rf(theta)
    Y = rf.sweep(theta).forward(rf._Xc)[0]
    per_path = [rf._loss.value(Y[:, p::3], rf.y, rf.S)[0] for p in range(3)]
    assert abs(rf.last["misfit"] - np.mean(per_path)) < 1e-14
    assert np.ptp(per_path) > 1e-3  # the paths differ
    det = rf.deterministic()
    assert det.noise is None and det.paths == 1
    assert abs(det(theta) - J) > 1e-4
    _, _, quiet = _problem(samples=1, amplitude=0.0)
    assert quiet(theta) == det(theta)


@pytest.mark.parametrize(
    "scheme,epsilon,checkpoint",
    [
        ("imex_euler", 0.1, None),
        ("imex_euler", 0.0, 2),
        ("midpoint", 0.1, None),
        ("verlet", 0.0, "reverse"),
        ("rk4", 0.0, "sqrt"),
    ],
)
def test_pathwise_gradient_taylor(scheme, epsilon, checkpoint):
    """The adjoint of the noisy sweep (increments fixed) is the gradient of J_M:
    Taylor rate 2 over every control; any storage gives the same gradient."""
    net, theta, rf = _problem(scheme=scheme, epsilon=epsilon, checkpoint=checkpoint)
    delta = random_direction(net, theta, net.trainable, seed=4)
    res = taylor_test(rf, theta, delta, h0=1e-2, steps=4)
    assert min(res.rates) > 1.95, res.rates
    _, g = rf.value_and_gradient(theta)
    _, _, full = _problem(scheme=scheme, epsilon=epsilon)
    _, g_full = full.value_and_gradient(theta)
    assert (g - g_full).norm() <= 1e-12 * g_full.norm()


def test_pathwise_hessian_action_taylor():
    net, theta, rf = _problem(scheme="midpoint", epsilon=0.1)
    delta = random_direction(net, theta, net.trainable, seed=6)
    res = taylor_test(rf, theta, delta, h0=1e-2, steps=4, hessian=True)
    assert min(res.rates) > 1.95 and res.rates2[-1] > 2.9, (res.rates, res.rates2)


def test_minibatches_keep_each_samples_paths():
    """A batch holds the same paths as the full functional: the misfits of a
    partition into batches add up to the full one."""
    _, theta, rf = _problem(S=7, samples=2)
    rf(theta)
    full = rf.last["misfit"]
    parts = [np.array([0, 3, 5]), np.array([1, 2, 4, 6])]
    total = 0.0
    for idx in parts:
        b = rf.batch(idx)
        b(theta)
        total += b.last["misfit"] * len(idx) / 7
    assert abs(total - full) < 1e-13


def test_resample_redraws_the_paths():
    _, theta, rf = _problem(resample=True)
    J0 = rf(theta)
    rf.redraw(5)
    J5 = rf(theta)
    assert J5 != J0 and rf.batch(np.arange(3)).epoch == 5
    rf.redraw(0)
    assert rf(theta) == J0
    _, _, fixed = _problem(resample=False)
    fixed.redraw(5)
    assert fixed(theta) == J0  # fixed paths: the epoch stays 0


@pytest.mark.parametrize("axis", ["width", "data"])
def test_same_noisy_gradient_on_any_number_of_ranks(axis):
    world = MPI.COMM_WORLD

    def run(layout):
        net, theta, rf = _problem(layout=layout, epsilon=0.1, S=5)
        J, g = rf.value_and_gradient(theta)
        return J, to_canonical(net, g)

    kw = {"width": world.size} if axis == "width" else {"data": world.size}
    assert_same_value_and_gradient(
        run(Layout.create(MPI.COMM_SELF)), run(Layout.create(world, **kw))
    )


def test_bad_noise_options():
    sp = WidthSpace(create_mesh(SQUARE, MPI.COMM_SELF))
    for kw, key in (
        ({"amplitude": -1.0}, "amplitude"),
        ({"amplitude": 1.0, "correlation_length": 0.0}, "correlation_length"),
        ({"amplitude": 1.0, "smoothness": 0}, "smoothness"),
        ({"amplitude": 1.0, "samples": 0}, "samples"),
        ({"amplitude": 1.0, "seed": -2}, "seed"),
    ):
        with pytest.raises(ValueError, match=rf"^{key}: expected"):
            DepthNoise(sp, **kw)


def test_readme_numpy_forward_redraws_the_training_paths(mpi_tmp_path):
    """README's NumPy forward on model.npz: the deterministic prediction, and the
    M training paths of every sample (the noise redrawn from the documented keys)."""
    from test_outputs import readme_forward_namespace

    from pontryx.solver.outputs import model_io

    comm = MPI.COMM_WORLD
    net, theta, rf = _problem(epsilon=0.1, S=4, samples=2, layers=3)
    theta["b"][...] = 0.1
    path = mpi_tmp_path / "model.npz"
    model_io.save_model(
        path, net, theta, task="classification", input_shape=(2,), classes=(0, 1), noise=rf.noise
    )
    Y_paths = rf.sweep(theta).forward(rf._Xc)[0]
    Y_det = net.forward(theta, rf.X)
    comm.Barrier()
    errors = None
    if comm.rank == 0:
        ns = readme_forward_namespace(path, rf.X.T.copy())
        scale = max(1.0, np.max(np.abs(Y_det)))
        errors = (
            np.max(np.abs(ns["Yhat"] - Y_det)) / scale,
            np.max(np.abs(ns["Ypaths"] - Y_paths)) / scale,
            np.max(np.abs(ns["Ymean"] - Y_paths.reshape(2, 4, 2).mean(axis=2))),
        )
    errors = comm.bcast(errors, root=0)
    assert max(errors) < 1e-10, errors


# -- through the command line ---------------------------------------------------------------
NOISY = """
mesh: {kind: unit_square, n: 3}
model: {layers: 3, T: 2.0, epsilon: 0.05,
        noise: {amplitude: 0.3, correlation_length: 0.3, samples: 2, seed: 1, resample: true}}
data: {name: ellipses, n_train: 24, n_test: 12}
training: {method: sgd, max_iterations: 4, test_every: 2, options: {batch_size: 8}}
output: {checkpoint_every: 2, plots: false, paraview: false}
"""


def test_train_evaluate_and_resume_with_noise(capsys, mpi_tmp_path):
    """sgd with paths redrawn every step: a run resumed at iteration 2 ends exactly
    like the uninterrupted one; evaluate reports the deterministic network and the
    mean over the paths; model.npz holds the noise."""
    import json

    from test_cli import cli, write

    from pontryx.solver.outputs import model_io, read_metrics

    cfg = write(mpi_tmp_path / "noisy.yaml", NOISY)
    one, two = mpi_tmp_path / "one", mpi_tmp_path / "two"
    assert cli(capsys, "train", cfg, "--output", one, "--quiet")[0] == 0
    assert (
        cli(capsys, "train", cfg, "--output", two, "--quiet", "--set", "training.max_iterations=2")[
            0
        ]
        == 0
    )
    assert cli(capsys, "train", cfg, "--output", two, "--quiet", "--resume")[0] == 0
    a, b = read_metrics(one), read_metrics(two)
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and len(a) == 4
    summary = json.loads((one / "summary.json").read_text())
    assert summary["noise"]["paths"] == 2 and "accuracy" in summary["noise"]["test"]
    code, out, _ = cli(capsys, "evaluate", one)
    assert code == 0 and "deterministic network" in out and "mean over 2 noise path" in out
    f = model_io.load_model(one / "model.npz")
    assert float(f["noise_amplitude"]) == 0.3 and int(f["noise_samples"]) == 2
    assert "stiffness_data" in f


@pytest.mark.parametrize(
    "override,key",
    [
        ("training.method=msa", "model.noise.amplitude: noise in depth needs"),
        ("training.method=lmvm", "model.noise.resample: new paths every iteration need"),
        ("model.noise.smoothness=0", "model.noise.smoothness: expected an integer ≥ 1"),
        ("model.noise.samples=-1", "model.noise.samples: expected an integer ≥ 1"),
        ("model.noise.nosuch=1", "model.noise.nosuch: unknown key"),
    ],
)
def test_noise_configuration_errors(capsys, mpi_tmp_path, override, key):
    from test_cli import cli, write

    cfg = write(mpi_tmp_path / "noisy.yaml", NOISY)
    code, _, err = cli(capsys, "validate", cfg, "--set", override)
    assert code == 2 and key in err, err


@pytest.mark.parametrize("method", ["adam", "sgd"])
def test_a_data_rank_with_an_empty_share_of_a_minibatch(capsys, mpi_tmp_path, method):
    """Minibatches of 2 of 5 samples over the data ranks leave a rank with no column:
    the noise and the width diffusion solve nothing there (MUMPS refused 0 right-hand
    sides: a traceback on 2 ranks)."""
    from test_cli import cli, write

    cfg = write(mpi_tmp_path / "tiny.yaml", NOISY)
    code, _, err = cli(
        capsys, "train", cfg, "--output", mpi_tmp_path / "run", "--quiet",
        "--set", "data.n_train=5", "--set", f"training.method={method}",
        "--set", "training.options.batch_size=2", "--set", "training.max_iterations=3",
        "--set", "parallel.width=1",
    )  # fmt: skip
    assert code == 0, err


def test_the_diffusion_solve_of_no_columns(comm):
    """DiffusionSolver.solve of an n × 0 block is an n × 0 block, without a solve."""
    from pontryx.meshes import create_mesh
    from pontryx.solver import WidthSpace
    from pontryx.solver.model.diffusion import DiffusionSolver

    space = WidthSpace(create_mesh({"kind": "unit_square", "n": 3}, comm))
    solver = DiffusionSolver(space, 0.1)
    assert solver.solve(np.zeros((space.n, 0))).shape == (space.n, 0)
    solver.destroy()
    space.destroy()
