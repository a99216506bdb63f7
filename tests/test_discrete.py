"""Discrete-weight networks (``training.options.weights: ternary | binary``): the
L²(M_L) projection onto {c·T}, E-MSA/MSA whose layer step projects a latent
kernel (Li & Hao 2018), the straight-through baseline (sgd/adam), the int8
codes of model.npz, resume and the command line."""

import json

from mpi4py import MPI

import numpy as np
import pytest

from pontryx.meshes import create_mesh
from pontryx.solver import ContinuumNetwork, ReducedFunctional, WidthSpace
from pontryx.solver.data import load_dataset
from pontryx.solver.outputs import model_io, read_metrics
from pontryx.solver.outputs.canonical import to_canonical
from pontryx.solver.training import make_trainer
from pontryx.solver.training.discrete import NONMONOTONE, DiscreteSet, project, twn

SQUARE = {"kind": "unit_square", "n": 3}
# E-MSA options under which sweeps are rejected and the flip search takes part of them
FLIPS = {"nonmonotone": 1, "rho": 1e-3, "rho_min": 1e-4, "curvature": "none"}


def _problem(comm=MPI.COMM_WORLD, n=24, layers=3, kernel="dense", alpha=1e-3):
    ds = load_dataset({"name": "ellipses", "n_train": n, "n_test": 8, "seed": 0})
    space = WidthSpace(create_mesh(SQUARE, comm))
    options = {"rank": 3} if kernel == "lowrank" else None
    net = ContinuumNetwork(space, 2, 2, layers=layers, T=2.0, kernel=kernel, kernel_options=options)
    rf = ReducedFunctional(net, ds.X_train, ds.y_train, "classification", alpha=alpha)
    return rf, net.init_controls(seed=0, gain=1.0)


def _levels(dset, controls):
    """Per kernel control and layer: the distinct values over all ranks."""
    out = {}
    for name in dset.names:
        local = [np.unique(v) for v in controls[name]]
        every = dset.comm.allgather(local)
        out[name] = [np.unique(np.concatenate([r[n] for r in every])) for n in range(len(local))]
    return out


def _check_discrete(dset, controls):
    assert dset.violation(controls) == 0.0
    for name, layers in _levels(dset, controls).items():
        for values in layers:
            scale = np.max(np.abs(values))
            assert scale > 0, name
            allowed = {-scale, 0.0, scale} if dset.kind == "ternary" else {-scale, scale}
            assert set(values.tolist()) <= allowed, (name, values)


# -- the projection ----------------------------------------------------------------------
def _objective(W, w, T, c):
    return float(np.sum(w * (c * T - W) ** 2))


def test_projection_is_the_weighted_l2_minimiser(comm):
    """Lloyd's iteration ends at a fixed point (T the nearest level of W/c, c the
    best scale for T) within 10⁻⁴ of the minimum of ‖cT − W‖_ω over all ternary
    supports {|W| > τ} (brute force on the gathered array), never worse than
    TWN's guess; binary is sign with the ω-mean of |W|."""
    rf, theta = _problem(comm)
    net = rf.net
    dset = DiscreteSet(net, "ternary")
    omega = dset.omega["W"]
    W = theta["W"]
    T, c = project(comm, W, omega, "ternary")
    Tt, ct = twn(comm, W, omega, "ternary")
    Tb, cb = project(comm, W, omega, "binary")
    Wg = to_canonical(net, theta)["W"]
    mc = net.space.to_canonical(net.space.m)
    wg = mc[:, None] * mc[None, :]
    for n in range(net.layers):
        a, w = np.abs(Wg[n]).ravel(), wg.ravel()
        best = np.inf
        for tau in np.concatenate([[-1.0], np.unique(a)]):
            s = a > tau
            if s.any():
                cs = np.sum(w[s] * a[s]) / np.sum(w[s])
                best = min(best, float(np.sum(w * a**2) - cs**2 * np.sum(w[s])))
        mine = comm.allreduce(_objective(W[n], omega, T[n], c[n]))
        theirs = comm.allreduce(_objective(W[n], omega, Tt[n], ct[n]))
        assert best * (1 - 1e-12) <= mine <= best * (1 + 1e-4) and mine <= theirs * (1 + 1e-12)
        assert np.array_equal(T[n], np.sign(W[n]) * (np.abs(W[n]) > c[n] / 2))
        w = np.broadcast_to(omega, W[n].shape)
        num = comm.allreduce(np.sum(w * np.abs(W[n]) * np.abs(T[n])))
        assert c[n] == pytest.approx(num / comm.allreduce(np.sum(w * np.abs(T[n]))), rel=1e-14)
        wsum = comm.allreduce(np.sum(w))
        assert cb[n] == pytest.approx(comm.allreduce(np.sum(w * np.abs(W[n]))) / wsum)
        assert np.array_equal(Tb[n], np.where(W[n] >= 0, 1, -1))
    assert T.dtype == np.int8 and np.all(c > 0) and set(np.unique(T)) <= {-1, 0, 1}


# -- the trainers -------------------------------------------------------------------
def _check_nonmonotone(J, M):
    """J_k ≤ max(J_{k−M}, …, J_{k−1}) for every k (M = 1: J never increases)."""
    for k in range(1, len(J)):
        assert J[k] <= max(J[max(0, k - M) : k]), (k, J)


CASES = [
    ("emsa", "ternary", {}),
    ("emsa", "binary", {}),
    ("emsa", "ternary", {"order": "jacobi", "curvature": "none", "rho": 1.0}),
    ("msa", "ternary", {}),
    ("adam", "ternary", {}),
    ("sgd", "binary", {"momentum": 0.9}),
]


@pytest.mark.parametrize(("method", "kind", "options"), CASES)
def test_every_iterate_is_discrete(method, kind, options):
    """Every iterate's kernel takes at most 3 (ternary) or 2 (binary) values per
    layer, ±c with c > 0 (and 0); the Pontryagin sweeps' step control holds:
    MSA never increases J of the discrete network, E-MSA (nonmonotone, memory
    M = NONMONOTONE) never exceeds the largest J of the last M iterates."""
    rf, theta = _problem()
    trainer = make_trainer(method, rf, theta, {"weights": kind, **options})
    dset = trainer.discrete
    _check_discrete(dset, trainer.controls)
    J = [rf(trainer.controls)]
    for rec in trainer.iterate(5):
        _check_discrete(dset, trainer.controls)
        J.append(rf(trainer.controls))
        assert kind == "binary" or 0.0 < rec.extra["sparsity"] < 1.0
    assert len(J) == 6
    if method in ("emsa", "msa"):
        _check_nonmonotone(J, NONMONOTONE if method == "emsa" else 1)
    assert J[-1] < J[0]


@pytest.mark.parametrize("kernel", ["dense", "lowrank"])
def test_discrete_emsa_descends(kernel):
    """E-MSA ternary with its step control (ρ adapted, the latent kernel moved by
    the block solves, b re-solved) reduces J of the discrete network well below
    its start within 10 sweeps, on either kernel."""
    rf, theta = _problem(kernel=kernel, n=32)
    trainer = make_trainer("emsa", rf, theta, {"weights": "ternary"})
    J0 = rf(trainer.controls)
    recs = list(trainer.iterate(10))
    assert recs[-1].loss < 0.5 * J0
    _check_nonmonotone([J0, *(r.loss for r in recs)], NONMONOTONE)


def test_flip_search_accepts_a_part_of_a_rejected_sweep():
    """E-MSA ternary, monotone (nonmonotone: 1), Li et al.'s augmented Hamiltonian
    from a small ρ: sweeps are rejected and the flip search accepts a fraction
    f < 1 of them (the best flips by their first-order gain) at the same ρ; J
    never increases and every iterate is discrete; without it ρ grows instead."""
    options = {"weights": "ternary", **FLIPS}
    rf, theta = _problem(n=32)
    trainer = make_trainer("emsa", rf, theta.copy(), options)
    J = [rf(trainer.controls)]
    fractions = []
    for rec in trainer.iterate(6):
        _check_discrete(trainer.discrete, trainer.controls)
        J.append(rf(trainer.controls))
        assert rec.loss == pytest.approx(J[-1], rel=1e-12)
        fractions.append(rec.extra["fraction"])
        if rec.extra["fraction"] < 1:
            assert rec.extra["rho"] == trainer.rho  # ρ kept
    _check_nonmonotone(J, 1)
    assert min(fractions) < 1 and J[-1] < J[0]
    off = make_trainer("emsa", rf, theta.copy(), {**options, "flip_search": False})
    assert all(r.extra["fraction"] == 1.0 for r in off.iterate(6))


def test_ste_baseline_trains():
    """adam with the straight-through estimator: the gradient at the TWN-quantised
    kernel moves the latent one; J of the quantised network falls."""
    rf, theta = _problem(n=32)
    trainer = make_trainer("adam", rf, theta, {"weights": "ternary", "learning_rate": 0.03})
    J0 = rf(trainer.controls)
    recs = list(trainer.iterate(40))
    assert rf(trainer.controls) < 0.6 * J0
    assert not np.array_equal(trainer.latent["W"], trainer.controls["W"])
    _check_discrete(trainer.discrete, trainer.controls)
    assert recs[-1].extra["sparsity"] > 0


def test_emsa_rho_floor():
    """E-MSA ternary: ρ never falls below its floor (default RHO_MIN for discrete
    weights, none for real ones; ``rho_min`` sets it)."""
    from pontryx.solver.training.discrete import RHO_MIN

    rf, theta = _problem()
    assert make_trainer("emsa", rf, theta.copy(), {}).rho_min == 0.0
    for options, floor in (({}, RHO_MIN), ({"rho_min": 0.05}, 0.05)):
        trainer = make_trainer("emsa", rf, theta.copy(), {"weights": "ternary", **options})
        for _ in trainer.iterate(6):
            assert trainer.rho >= floor
    with pytest.raises(ValueError, match=r"^rho_min: expected null or ρ_min ≥ 0"):
        make_trainer("emsa", rf, theta.copy(), {"weights": "ternary", "rho_min": -1.0})


@pytest.mark.parametrize(
    ("method", "options"),
    [("emsa", {"weights": "ternary"}), ("msa", {"weights": "binary"}),
     ("emsa", {"weights": "ternary", **FLIPS}),
     ("adam", {"weights": "ternary", "batch_size": 8})],
)  # fmt: skip
def test_resume_is_bit_identical(method, options):
    """state() after 2 iterations, restored into a fresh trainer, continues exactly
    as the uninterrupted run (the latent kernel is part of the state)."""
    rf, theta = _problem()
    one = make_trainer(method, rf, theta.copy(), options)
    list(one.iterate(4))
    two = make_trainer(method, rf, theta.copy(), options)
    list(two.iterate(2))
    state = {k: np.array(v, copy=True) for k, v in two.state().items()}
    assert set(state) >= {f"latent/{k}" for k in two.discrete.names}
    kinds = two.state_kinds()
    assert kinds["latent/W"] == ("control", "W")
    three = make_trainer(method, rf, theta.copy(), options)
    three.restore(state)
    list(three.iterate(2))
    for k in one.controls:
        assert np.array_equal(one.controls[k], three.controls[k]), k
    assert np.array_equal(one.latent["W"], three.latent["W"])


@pytest.mark.parametrize("options", [{}, FLIPS])
def test_rank_independent(comm, options):
    """E-MSA ternary on a width split gives the run of one rank (to round-off),
    also through the flip search (``FLIPS``: accepted fractions f < 1)."""
    if comm.size == 1:
        pytest.skip("needs ranks to compare")
    out = []
    for c in (MPI.COMM_SELF, comm):
        rf, theta = _problem(c, n=32 if options else 24)
        trainer = make_trainer("emsa", rf, theta, {"weights": "ternary", **options})
        recs = list(trainer.iterate(4 if options else 3))
        if options:
            assert min(r.extra["fraction"] for r in recs) < 1
        out.append((recs[-1].loss, to_canonical(rf.net, trainer.controls)["W"]))
    assert out[0][0] == pytest.approx(out[1][0], rel=1e-9)
    assert np.allclose(out[0][1], out[1][1], rtol=1e-9, atol=1e-12)


@pytest.mark.parallel
@pytest.mark.parametrize("method", ["emsa", "msa"])
def test_depth_axis_equals_one_rank(comm, method):
    """The Jacobi sweep over a depth axis (each depth rank rounds its own layers and
    broadcasts them with their latent kernel): the iterates of one rank, bit for bit."""
    from tiny import ellipses_problem as layered

    from pontryx.solver import Layout

    layout = Layout.create(comm, width=1, data=1, depth=comm.size)
    options = {"weights": "ternary", **({"order": "jacobi"} if method == "emsa" else {})}
    runs = []
    for rf, theta in (layered(layout=layout), layered(comm=MPI.COMM_SELF)):
        trainer = make_trainer(method, rf, theta.copy(), options)
        runs.append(([r.loss for r in trainer.iterate(3)], trainer))
    (a, split), (b, one) = runs
    assert a == b
    for k in one.controls:
        assert np.array_equal(split.controls[k], one.controls[k]), k
    assert np.array_equal(split.latent["W"], one.latent["W"])


def test_option_errors():
    rf, theta = _problem()
    from pontryx.solver.model.bounds import Bounds

    with pytest.raises(ValueError, match=r"^weights: expected real, ternary or binary"):
        make_trainer("emsa", rf, theta.copy(), {"weights": "quaternary"})
    with pytest.raises(ValueError, match=r"^flip_search: needs weights: ternary or binary"):
        make_trainer("emsa", rf, theta.copy(), {"flip_search": True})
    with pytest.raises(ValueError, match=r"^flip_search: expected null, true or false"):
        make_trainer("emsa", rf, theta.copy(), {"weights": "ternary", "flip_search": 1})
    with pytest.raises(ValueError, match=r"^flip_search: not an option of method 'msa'"):
        make_trainer("msa", rf, theta.copy(), {"weights": "ternary", "flip_search": True})
    with pytest.raises(ValueError, match=r"^weights: not an option of method 'lmvm'"):
        make_trainer("lmvm", rf, theta.copy(), {"weights": "ternary"})
    with pytest.raises(ValueError, match=r"^weights: not an option of method 'langevin'"):
        make_trainer("langevin", rf, theta.copy(), {"weights": "ternary"})
    bounds = Bounds({"W": 1.0}, rf.net.trainable)
    with pytest.raises(ValueError, match=r"^bounds.W: the kernel takes discrete values"):
        make_trainer("adam", rf, theta.copy(), {"weights": "binary"}, bounds)
    # bounds on the real controls stay: b in its box at every iterate
    bounds = Bounds({"b": 0.05}, rf.net.trainable)
    trainer = make_trainer("emsa", rf, theta.copy(), {"weights": "ternary"}, bounds)
    for _ in trainer.iterate(3):
        assert bounds.violation(trainer.controls) == 0.0
        _check_discrete(trainer.discrete, trainer.controls)


# -- model.npz ------------------------------------------------------------------------
@pytest.mark.parametrize(("kernel", "kind"), [("dense", "ternary"), ("lowrank", "binary")])
def test_model_file_holds_int8_codes(kernel, kind, mpi_tmp_path):
    """The discrete kernel is written as int8 codes and per-layer scales;
    load_model gives back the float values, README's NumPy forward reproduces Ŷ."""
    from test_outputs import run_readme_forward

    comm = MPI.COMM_WORLD
    rf, theta = _problem(kernel=kernel)
    net = rf.net
    dset = DiscreteSet(net, kind)
    dset.quantise(theta.copy(), theta)
    path = mpi_tmp_path / "model.npz"
    model_io.save_model(
        path, net, theta, task="classification", input_shape=(2,), classes=(0, 1), weights=kind
    )
    comm.Barrier()
    with np.load(path, allow_pickle=False) as raw:
        for name in dset.names:
            assert raw[name].dtype == np.int8 and raw[f"{name}_scale"].shape == (net.layers,)
            assert np.all(raw[f"{name}_scale"] > 0)
        assert str(raw["weights"]) == kind
    f = model_io.load_model(path)
    back = model_io.controls_from_model(net, f)
    assert all(np.array_equal(back[k], theta[k]) for k in theta)
    X = np.random.default_rng(3).standard_normal((5, 2))
    Yhat = net.forward(theta, np.ascontiguousarray(X.T))
    error = None
    if comm.rank == 0:
        error = float(np.max(np.abs(run_readme_forward(path, X) - Yhat)))
    assert comm.bcast(error, root=0) < 1e-10
    with pytest.raises(ValueError, match="is not discrete"):
        model_io.save_model(
            path, net, net.init_controls(seed=0), task="classification", input_shape=(2,),
            weights=kind,
        )  # fmt: skip


# -- the command line -------------------------------------------------------------------
CONFIG = """
mesh: {kind: unit_square, n: 3}
model: {layers: 3, T: 2.0}
data: {name: ellipses, n_train: 24, n_test: 12}
training: {method: emsa, max_iterations: 4, test_every: 2, options: {weights: ternary}}
output: {checkpoint_every: 2, plots: false, paraview: false}
"""


def test_train_resume_and_evaluate(capsys, mpi_tmp_path):
    """pontryx train with weights: ternary; a run resumed at iteration 2 ends like the
    uninterrupted one; model.npz holds int8 codes; evaluate reproduces the summary."""
    from test_cli import cli, write

    cfg = write(mpi_tmp_path / "discrete.yaml", CONFIG)
    one, two = mpi_tmp_path / "one", mpi_tmp_path / "two"
    assert cli(capsys, "train", cfg, "--output", one, "--quiet")[0] == 0
    short = ("--set", "training.max_iterations=2")
    assert cli(capsys, "train", cfg, "--output", two, "--quiet", *short)[0] == 0
    assert cli(capsys, "train", cfg, "--output", two, "--quiet", "--resume")[0] == 0
    a, b = read_metrics(one), read_metrics(two)
    assert [r["loss"] for r in a] == [r["loss"] for r in b] and len(a) == 4
    assert "sparsity" in a[-1]
    summary = json.loads((one / "summary.json").read_text())
    assert summary["weights"]["kind"] == "ternary"
    assert 0 < summary["weights"]["sparsity"] < 1
    with np.load(one / "model.npz", allow_pickle=False) as raw:
        assert raw["W"].dtype == np.int8
    code, out, _ = cli(capsys, "evaluate", one)
    assert code == 0 and f"{summary['test']['accuracy']:.4f}" in out


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("training.options.weights=quaternary",
         "training.options.weights: expected real, ternary or binary, got 'quaternary'"),
        ("training.bounds={W: 1.0}", "training.bounds.W: the kernel takes discrete values"),
        ("training.method=lmvm", "training.options.weights: not an option of method 'lmvm'"),
    ],
)  # fmt: skip
def test_command_line_errors_are_one_line(capsys, mpi_tmp_path, override, needle):
    from test_cli import cli, write

    cfg = write(mpi_tmp_path / "discrete.yaml", CONFIG)
    code, _, err = cli(capsys, "train", cfg, "--output", mpi_tmp_path / "run", "--set", override)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and needle in lines[0], err
