"""The continuum network as the prior of a PDE inverse problem (pontryx.solver.inverse):
the state equation's adjoint against finite differences, the observation operator,
the chained gradient (Taylor rate 2), independence of the number of ranks, the
classical nodal reconstruction, bad input and the ``pontryx train`` run."""

import itertools
import json

from mpi4py import MPI

import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.mesh
import numpy as np
import pytest
import yaml
from test_cli import cli

from pontryx.forms.operators import function_space
from pontryx.meshes.errors import InputError
from pontryx.solver.adjoint.taylor import taylor_test
from pontryx.solver.app.problem import build_problem
from pontryx.solver.config import validate_config
from pontryx.solver.inverse.expressions import expression
from pontryx.solver.inverse.misfit import ReducedMisfit
from pontryx.solver.inverse.nodal import reconstruct
from pontryx.solver.inverse.observations import (
    PointObservations,
    random_points,
    read_observations,
    synthetic,
)
from pontryx.solver.inverse.pde import EllipticPDE
from pontryx.solver.outputs import read_metrics
from pontryx.solver.outputs.canonical import random_direction

SMALL = {
    "inverse": {
        "domain": {"kind": "unit_square", "n": 6},
        "truth": "1 + 0.5*exp(-10*((x[0]-0.4)**2 + (x[1]-0.5)**2))",
        "observations": {"points": 20, "refine": 1},
        "noise": 0.02,
        "regularisation": {"gamma": 1e-2},
    },
    "mesh": {"kind": "unit_square", "n": 2},
    "model": {"layers": 3, "embedding": {"type": "bump"}},
    "training": {"method": "lmvm", "max_iterations": 4, "alpha": 1e-2, "test_every": 2},
    "output": {"checkpoint_every": 2},
}


def config(comm=MPI.COMM_WORLD, **changes):
    raw = json.loads(json.dumps(SMALL))
    for path, value in changes.items():
        node, keys = raw, path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return validate_config(raw, ranks=comm.size)


def rates(f, x0, dx, g, comm, steps=4, h0=1e-2):
    """Taylor remainders |f(x0 + h dx) − f(x0) − h⟨g, dx⟩| and their rates."""
    f0 = f(x0)
    dj = comm.allreduce(float(np.dot(g, dx)))
    r = [abs(f(x0 + h0 / 2**i * dx) - f0 - h0 / 2**i * dj) for i in range(steps)]
    return [np.log2(a / b) for a, b in itertools.pairwise(r)]


# -- expressions ----------------------------------------------------------------------------------
def test_expression_values():
    x = np.array([[0.25, 0.5], [1.0, 0.0]])
    assert np.allclose(expression("1 + x[0]*y", 2)(x), [1.25, 1.0])
    assert np.allclose(expression("where(x < 0.3, 2, 3)", 2)(x), [2, 3])
    assert np.allclose(expression(2.5, 2)(x), [2.5, 2.5])
    for text in ("10**10**10", "1/0", "1/(x-x)"):  # NumPy arithmetic: inf, no exception
        assert np.isinf(expression(text, 2)(x)).all()


@pytest.mark.parametrize(
    "text",
    ["__import__('os')", "x.real", "open('f')", "x[3]", "z", "1 +", "sin(1, 2)", "[1]", "'a'"],
)
def test_expression_refuses(text):
    with pytest.raises(InputError) as e:
        expression(text, 2, "truth")
    assert e.value.key == "truth" and "\n" not in str(e.value)


# -- the state equation, its adjoint, the observation operator ------------------------------------
@pytest.fixture(scope="module")
def pde2d():
    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 8, 8)
    pde = EllipticPDE(
        function_space(mesh, 1), source="1 + x[1]", dirichlet=["left", "bottom"], g_N=0.5
    )
    yield pde
    pde.destroy()


def test_point_observations_exact_on_linears_and_adjoint(pde2d, comm):
    V = pde2d.V
    points = random_points(V.mesh, 15, seed=3)
    B = PointObservations(V, points)
    assert comm.allreduce(len(B.mine)) == 15
    u = dolfinx.fem.Function(V)
    u.interpolate(lambda x: 2 * x[0] - 3 * x[1] + 1)
    assert np.allclose(B.apply(u), 2 * B.points[:, 0] - 3 * B.points[:, 1] + 1)
    rng = np.random.default_rng(comm.rank)
    u.x.array[:] = rng.standard_normal(len(u.x.array))
    u.x.scatter_forward()
    r = rng.standard_normal(len(B.mine))
    w = dolfinx.fem.Function(V)
    B.adjoint(r, w)
    n = pde2d.n
    lhs = comm.allreduce(float(np.dot(B.apply(u), r)))
    rhs = comm.allreduce(float(np.dot(u.x.array[:n], w.x.array[:n])))
    assert np.isclose(lhs, rhs, rtol=1e-12)


def test_adjoint_operator_is_the_transpose(pde2d, comm):
    """ufl.adjoint(∂F/∂u) assembles to the transpose of ∂F/∂u (same BCs)."""
    pde = pde2d
    pde.set_parameter(np.sin(3 * pde.x[:, 0]))
    pde._assemble(pde.A, pde._J)
    pde._assemble(pde.Aadj, pde._Jadj)
    x, y = pde.A.createVecs()
    x.setRandom()
    y.setRandom()
    a, b = pde.A.createVecs()
    pde.A.mult(x, a)
    pde.Aadj.mult(y, b)
    assert np.isclose(a.dot(y), b.dot(x), rtol=1e-12)


def test_misfit_gradient_against_finite_differences(pde2d, comm):
    """dj/dm by the adjoint: Taylor rate 2, with the H¹ terms."""
    pde = pde2d
    pde.set_parameter(np.zeros(pde.n))
    points = random_points(pde.mesh, 25, seed=1)
    B = PointObservations(pde.V, points)
    clean = B.apply(pde.solve_state())
    obs = synthetic(B, clean, 0.05, seed=0)
    j = ReducedMisfit(pde, obs, gamma=0.1, delta=0.3, m0=0.2)
    m0 = 0.3 * np.cos(2 * pde.x[:, 0]) * pde.x[:, 1]
    _, g = j.value_and_gradient(m0)
    dm = np.random.default_rng(1).standard_normal(pde.n)
    assert min(rates(j, m0, dm, g, comm)) > 1.95


# -- the chained functional -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {},
        {
            "inverse__domain": {"kind": "interval", "n": 12},
            "inverse__truth": "1 + 0.5*x",
            "mesh": {"kind": "interval", "n": 5},
            "model__embedding": {"type": "coordinate"},
            "training__gamma": 1e-2,  # the network's H¹-in-width term
            "training__beta": 1e-2,
        },
        {"inverse__observations": {"kind": "field", "refine": 0}, "inverse__degree": 2},
        {
            "inverse__domain": {"kind": "lshape", "h": 0.3},
            "inverse__pde__dirichlet": ["left", "bottom"],
            "inverse__pde__g_N": "0.5*x[1]",
        },
    ],
    ids=["2d-points", "1d", "2d-field-P2", "gmsh-lshape-neumann"],
)
def test_chained_gradient_taylor(comm, changes):
    """∇J(θ) through the network's adjoint sweep and the PDE adjoint: rate 2."""
    p = build_problem(config(**changes), comm)
    try:
        d = random_direction(p.net, p.controls, p.net.trainable, seed=2)
        result = taylor_test(p.rf, p.controls, d, h0=1e-2, steps=4)
        assert min(result.rates) >= 1.95, result.table()
    finally:
        p.destroy()


def _canonical_gradient(p):
    from pontryx.solver.outputs.canonical import to_canonical

    J, g = p.rf.value_and_gradient(p.controls)
    return J, to_canonical(p.net, g)


def test_independent_of_the_number_of_ranks(comm):
    """J and ∇J (canonical order) on all ranks — width split and data split — equal
    one rank's to round-off."""
    one = build_problem(config(MPI.COMM_SELF, parallel={"width": 1}), MPI.COMM_SELF)
    try:
        J1, g1 = _canonical_gradient(one)
    finally:
        one.destroy()
    layouts = [{"width": 1}] if comm.size == 1 else [{"width": 1}, {"width": comm.size}]
    for parallel in layouts:
        p = build_problem(config(comm, parallel=parallel), comm)
        try:
            J, g = _canonical_gradient(p)
        finally:
            p.destroy()
        assert np.isclose(J, J1, rtol=1e-12, atol=0)
        for name in g1:
            scale = np.max(np.abs(g1[name])) or 1.0
            assert np.max(np.abs(g[name] - g1[name])) <= 1e-10 * scale, (parallel, name)


@pytest.mark.parametrize("method", ["ntr", "nls", "lbfgs"])
def test_other_methods_run(comm, method):
    """The Newton types with differences of adjoint gradients (hessian: fd), and
    pontryx's own L-BFGS, reduce J."""
    from pontryx.solver.app.problem import make_method
    from pontryx.solver.training.loop import train

    options = {"hessian": "fd"} if method != "lbfgs" else {}
    p = build_problem(config(training__method=method, training__options=options), comm)
    try:
        J0 = p.rf(p.controls)
        trainer = make_method(p)
        try:
            train(trainer, 2)
        finally:
            trainer.destroy()
        assert p.rf(p.controls) < J0
    finally:
        p.destroy()


def test_nodal_reconstruction_decreases_the_error(comm):
    p = build_problem(config(), comm)
    try:
        j = ReducedMisfit(p.pde, p.observations, gamma=10.0)
        err = p.rf_test.error
        m0 = np.zeros(p.pde.n)
        before = err(m0)
        r = reconstruct(j, p.physical.m, m0, max_iterations=30)
        assert r.iterations > 0 and r.value < j(m0)
        assert err(r.m) < before
    finally:
        p.destroy()


# -- files and bad input ---------------------------------------------------------------------------
def test_read_observations(tmp_path):
    (tmp_path / "a.csv").write_text("x,y,value\n0.1,0.2,1.0\n0.3,0.4,2.0\n")
    points, values = read_observations(tmp_path / "a.csv", 2)
    assert points.shape == (2, 2) and np.allclose(values, [1, 2])
    np.savez(tmp_path / "b.npz", points=points, values=values)
    assert np.allclose(read_observations(tmp_path / "b.npz", 2)[0], points)
    with pytest.raises(InputError, match="columns"):
        read_observations(tmp_path / "a.csv", 3)
    np.savez(tmp_path / "c.npz", points=points, values=values[:1])
    with pytest.raises(InputError, match="one per point"):
        read_observations(tmp_path / "c.npz", 2)
    (tmp_path / "d.npz").write_text("not an archive")  # NumPy would call it pickled data
    with pytest.raises(InputError, match=r"cannot read d\.npz: not a zip archive$"):
        read_observations(tmp_path / "d.npz", 2)


def write(path, obj):
    if MPI.COMM_WORLD.rank == 0:
        path.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj))
    MPI.COMM_WORLD.Barrier()
    return path


BAD = [
    ({"inverse__noise": 0}, "inverse.noise", "> 0"),
    ({"inverse__noise": -0.1}, "inverse.noise", "> 0"),
    ({"inverse__truth": None}, "inverse.truth", "required"),
    ({"inverse__truth": "1 - 2*x[0]"}, "inverse.truth", "positive"),
    ({"inverse__truth": "exp(x[2])"}, "inverse.truth", "coordinate"),
    ({"inverse__pde__dirichlet": ["left", "up"]}, "inverse.pde.dirichlet", "unknown side"),
    ({"inverse__pde__source": "sin(x"}, "inverse.pde.source", "syntax"),
    # non-finite coefficients are refused before any solve, keyed by their key
    ({"inverse__truth": "1/(x-x)"}, "inverse.truth", "'1/(x-x)' is not finite on Ω_phys: inf"),
    ({"inverse__truth": "exp(1000*x)"}, "inverse.truth", "is not finite on Ω_phys: inf at x"),
    ({"inverse__truth": "10**10**10"}, "inverse.truth", "is not finite on Ω_phys: inf at x"),
    ({"inverse__truth": "sqrt(x-2)"}, "inverse.truth", "is not finite on Ω_phys: nan at x"),
    # finite, but the solves would overflow (a KSP failure) or the error's norm underflow
    ({"inverse__truth": "1e307*x*x + 1"}, "inverse.truth", "(beyond, the solves under- or"),
    ({"inverse__truth": "1e-300"}, "inverse.truth", "must lie in [1e-150, 1e+150]"),
    ({"inverse__truth": "1" + "0" * 400}, "inverse.truth", "cannot evaluate"),
    ({"inverse__truth": [1, 2]}, "inverse.truth", "expected a number or a string"),
    ({"inverse__pde__source": "1/(x-x)"}, "inverse.pde.source", "is not finite on Ω_phys"),
    ({"inverse__pde__source": float("nan")}, "inverse.pde.source", "expected a finite number"),
    # only a dof of the refined mesh of the synthetic data, x = 0.25: keyed all the same
    (
        {"inverse__pde__source": "where(abs(x - 0.25) < 1e-9, 1/(x-x), 1)"},
        "inverse.pde.source",
        "inf at x = (0.25, 0)",
    ),
    (
        {"inverse__truth": "where(abs(y - 0.25) < 1e-9, 1/(y-y), 1)"},
        "inverse.truth",
        "inf at x = (0, 0.25)",
    ),
    ({"inverse__pde__g_D": "log(x-x)"}, "inverse.pde.g_D", "-inf at x = (0, 0)"),
    (
        {"inverse__pde__dirichlet": ["left"], "inverse__pde__g_N": "1/(y-y)"},
        "inverse.pde.g_N",
        "inf at x = (0, 0)",
    ),
    ({"inverse__domain": {"kind": "nowhere"}}, "inverse.domain.kind", "mesh kind"),
    (
        {"inverse__observations__kind": "field", "inverse__observations__file": "obs.csv"},
        "inverse.observations.file",
        "synthetic",
    ),
    ({"inverse__observations__file": "missing.csv"}, "inverse.observations.file", "exist"),
    ({"data": {"name": "ellipses"}}, "data", "no data"),
    ({"training__method": "msa"}, "training.method", "inverse run"),
    ({"training__method": "ntr"}, "training.options.hessian", "Hessian"),
    ({"training__method": "ntl"}, "training.method", "inverse run"),
    ({"training__levels": [{"max_iterations": 2}]}, "training.levels", "multilevel"),
    ({"training__delta": 0.1}, "training.delta", "layer controls only"),
    ({"model__init__gain": 0.5}, "model.init.gain", "removed"),
]


@pytest.mark.parametrize("changes, key, text", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_input_is_one_line(capsys, mpi_tmp_path, changes, key, text):
    raw = json.loads(json.dumps(SMALL))
    write(mpi_tmp_path / "obs.csv", "0.5,0.5,1.0\n")
    for path, value in changes.items():
        node, keys = raw, path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    code, _, err = cli(capsys, "validate", write(mpi_tmp_path / "bad.yaml", raw))
    assert code == 2, err
    line = err.strip()
    assert "\n" not in line and line.startswith(f"config error: {key}:") and text in line, line


@pytest.mark.parametrize(
    "rows, text",
    [
        ("0.5,0.5,1.0\n1.5,0.5,2.0\n", "outside Ω_phys"),
        ("0.5,1.0\n", "columns"),
        ("0.5,0.5,0.0\n", "every observed value is 0"),
    ],
    ids=["outside", "shape", "zero"],
)
def test_bad_observation_files(capsys, mpi_tmp_path, rows, text):
    raw = json.loads(json.dumps(SMALL))
    raw["inverse"]["observations"] = {"file": "obs.csv"}
    write(mpi_tmp_path / "obs.csv", rows)
    code, _, err = cli(capsys, "validate", write(mpi_tmp_path / "bad.yaml", raw))
    assert code == 2 and "config error: inverse.observations.file:" in err and text in err, err


@pytest.mark.parametrize(
    "points, values, text",
    [
        (np.array([["a", "b"]]), np.ones(1), "'points' holds string values"),
        (np.full((1, 2), 0.5), np.ones(1, complex), "'values' holds complex values"),
        (np.full((1, 2), 0.5, object), np.ones(1), "'points' is an object array"),
    ],
    ids=["string", "complex", "object"],
)
def test_observation_npz_of_other_than_real_numbers(capsys, mpi_tmp_path, points, values, text):
    """A string array was a traceback (exit 1); complex values were taken with their
    imaginary part dropped (exit 0, NumPy's warning)."""
    raw = json.loads(json.dumps(SMALL))
    raw["inverse"]["observations"] = {"file": "obs.npz"}
    if MPI.COMM_WORLD.rank == 0:
        np.savez(mpi_tmp_path / "obs.npz", points=points, values=values)
    MPI.COMM_WORLD.Barrier()
    code, _, err = cli(capsys, "validate", write(mpi_tmp_path / "bad.yaml", raw))
    assert code == 2 and "config error: inverse.observations.file:" in err and text in err, err


# -- the run ---------------------------------------------------------------------------------------
def test_train_resume_evaluate_check_gradient(capsys, mpi_tmp_path):
    cfg = write(mpi_tmp_path / "inv.yaml", json.loads(json.dumps(SMALL)))
    run = mpi_tmp_path / "run"
    code, _, err = cli(capsys, "train", cfg, "--output", run, "--quiet")
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 4 and np.isfinite(summary["train"]["discrepancy"])
    assert 0 < summary["kappa_error"] < 1 and summary["inverse"]["observations"] == 20
    for name in (
        "inverse.npz",
        "model.npz",
        "plots/kappa.png",
        "plots/state.png",
        "plots/curves.png",
    ):
        assert (run / name).is_file(), name
    assert (run / "paraview" / "inverse.bp").is_dir()
    fields = np.load(run / "inverse.npz")
    assert fields["kappa"].shape == (49,) and fields["points"].shape == (20, 2)
    code, _, err = cli(
        capsys,
        "train",
        cfg,
        "--output",
        run,
        "--quiet",
        "--resume",
        "--set",
        "training.max_iterations=6",
    )
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["iterations"] == 6
    code, out, err = cli(capsys, "evaluate", run)
    assert code == 0 and "discrepancy" in out and "κ" in out, out + err
    # the misfit Φ = ½ M · discrepancy²; metrics.csv's misfit Φ + the H¹ terms (it was
    # Φ alone there, and Φ − the H¹ terms in evaluate and summary.json)
    code, out, err = cli(capsys, "evaluate", run, "--json")
    train = json.loads(out)["train"]
    assert train["misfit"] == pytest.approx(0.5 * 20 * train["discrepancy"] ** 2, rel=1e-12)
    assert train["regulariser_h1"] > 0
    last = read_metrics(run)[-1]
    assert last["misfit"] == pytest.approx(train["misfit"] + train["regulariser_h1"], rel=1e-12)
    code, out, err = cli(capsys, "check-gradient", cfg)
    assert code == 0 and "PASS" in out, out + err


@pytest.mark.parametrize("name", ["inverse_1d", "inverse_2d", "inverse_3d"])
def test_examples_validate_and_run_shortened(capsys, mpi_tmp_path, name):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / f"{name}.yaml"
    code, out, err = cli(capsys, "validate", example)
    assert code == 0 and "valid" in out, err
    small = {"interval": 8, "unit_square": 4, "unit_cube": 2}
    kind = yaml.safe_load(example.read_text())["inverse"]["domain"]["kind"]
    sets = [
        f"inverse.domain.n={small[kind]}",
        "inverse.observations.points=10",
        "training.max_iterations=2",
        "output.checkpoint_every=1",
    ]
    run = mpi_tmp_path / name
    args = [a for s in sets for a in ("--set", s)]
    code, _, err = cli(capsys, "train", example, "--output", run, "--quiet", *args)
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["iterations"] == 2
