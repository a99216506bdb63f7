"""HJB in reduced dimension (pontryx.solver.hjb): the scheme's monotonicity, its
order on LQR against the Riccati solution, the exact control minimisation, the
feedback law against pontryx's open-loop solution, and ``pontryx hjb``."""

import json

from mpi4py import MPI

import numpy as np
import pytest
import yaml
from test_cli import cli

from pontryx.solver.hjb.compare import ReducedNetwork
from pontryx.solver.hjb.scheme import ValueFunction, minimise_component
from pontryx.solver.hjb.system import lqr, riccati

A = np.array([[0.2, 1.0], [-1.0, -0.3]])
R, Q, P_T, T = np.array([1.0, 2.0]), 0.5 * np.eye(2), np.eye(2), 0.5


@pytest.fixture(scope="module")
def network():
    rn = ReducedNetwork(
        [[0.0, -2.0], [2.0, 0.0]], [1.0, -1.0], 0.0, 1.0, alpha=0.2, bound=1.0, T=1.0, layers=8
    )
    yield rn
    rn.destroy()


@pytest.mark.parametrize("which", ["network", "lqr"])
def test_scheme_is_monotone_and_commutes_with_constants(network, which):
    system = network.system if which == "network" else lqr(A, R, Q, P_T, bound=4.0)
    vf = ValueFunction(system, [-2, -2], [2, 2], 12, 1.0)
    rng = np.random.default_rng(0)
    shape = tuple(vf.n + 1)
    for _ in range(5):
        W = rng.standard_normal(shape)
        V = W + np.abs(rng.standard_normal(shape)) * (rng.random(shape) < 0.3)
        assert np.all(vf.step(V) >= vf.step(W) - 1e-12)
        assert np.allclose(vf.step(W + 0.7), vf.step(W) + 0.7, atol=1e-12)


def test_component_minimum_is_exact(network):
    """Candidates + Newton find the minimum of (r/2)b² + ψ⁺D⁺ + ψ⁻D⁻ over the box."""
    rng = np.random.default_rng(1)
    a, Dp, Dm = rng.normal(0, 1.5, 200), rng.normal(0, 1, 200), rng.normal(0, 1, 200)
    sys = network.system
    b, v = minimise_component(sys, 0, a, Dp, Dm, candidates=11)
    dense = np.linspace(sys.lo[0], sys.hi[0], 20001)[:, None]
    f = sys.psi(a + dense)
    brute = 0.5 * sys.r[0] * dense**2 + np.where(f >= 0, f * Dp, f * Dm)
    assert np.all(v <= brute.min(axis=0) + 1e-9)
    assert np.all((b >= sys.lo[0]) & (b <= sys.hi[0]))


def test_lqr_value_function_converges_at_order_one():
    """V_h(0, ·) against ½uᵀP(0)u (Riccati) on |u|∞ ≤ 0.75: order ≈ 1 in h (and Δτ)."""
    system = lqr(A, R, Q, P_T, bound=4.0)
    P0 = riccati(A, R, Q, P_T, T)
    errors = []
    for n in (16, 32):
        vf = ValueFunction(system, [-2.5, -2.5], [2.5, 2.5], n, T, controls=11)
        vf.solve()
        X = vf.nodes
        exact = 0.5 * np.einsum("ik,ij,jk->k", X, P0, X)
        inside = np.all(np.abs(X) <= 0.75, axis=0)
        m = vf.lumped_mass().ravel()[inside]
        e = (vf.levels[0].ravel() - exact)[inside]
        errors.append(np.sqrt(np.sum(m * e * e) / np.sum(m)))
    assert errors[1] < 0.035
    assert np.log2(errors[0] / errors[1]) > 0.8, errors


def test_riccati_against_the_scalar_closed_form():
    """1×1-like check: A = a I, R = r I, Q = 0, P_T = p I: P(t) = p / (e^{-2a(T−t)}·… )."""
    a, r, p = 0.3, 2.0, 1.5
    P = riccati(a * np.eye(2), [r, r], np.zeros((2, 2)), p * np.eye(2), T)
    # −P' = 2aP − P²/r:  P(t) = 2a r p e^{2a s} / (2a r + p (e^{2a s} − 1)), s = T − t
    s = T
    exact = 2 * a * r * p * np.exp(2 * a * s) / (2 * a * r + p * (np.exp(2 * a * s) - 1))
    assert np.allclose(P, exact * np.eye(2), rtol=1e-9)


def test_fixed_kernel_gradient_and_open_loop(network):
    from pontryx.solver.adjoint.taylor import taylor_test

    rf = network.functional()
    c = network.controls([0.5, 0.0])
    c["b"][...] = 0.3
    d = c.subset(["b"]).zeros_like()
    d["b"][...] = np.random.default_rng(2).standard_normal(d["b"].shape)
    assert min(taylor_test(rf, c, d, h0=1e-2).rates) > 1.95
    _, co, result = network.open_loop([0.5, 0.0], max_iterations=200)
    W = network.space.from_canonical(np.array([[0.0, -2.0], [2.0, 0.0]]), axis_full=True)
    assert np.array_equal(co["W"][3], W)  # the kernel never moves
    assert np.all(np.abs(co["b"]) <= 1.0) and result.converged


def test_feedback_against_open_loop(network):
    """On a coarse grid the closed loop costs at least the open-loop optimum, and
    little more; V_h(0, u₀) agrees within the grid's error."""
    vf = ValueFunction(network.system, [-2.5, -2.5], [2.5, 2.5], 32, 1.0, multiple=8)
    vf.solve()
    for u0 in ([0.5, 0.0], [-0.5, 0.5]):
        Jo, _, _ = network.open_loop(u0, max_iterations=200)
        Jc, _ = network.closed_loop(vf, u0)
        assert Jc >= Jo - 1e-9
        assert (Jc - Jo) / Jo < 0.01, (u0, Jc, Jo)
        assert abs(vf.value(0.0, u0) - Jo) / Jo < 0.15, (u0, vf.value(0.0, u0), Jo)


# -- pontryx hjb -----------------------------------------------------------------------------------
SMALL = {
    "hjb": {"grid": {"n": 12}, "initial_states": [[0.5, 0.0]]},
    "mesh": {"kind": "interval", "n": 1},
    "model": {"T": 1.0, "layers": 4},
    "training": {"method": "lmvm", "alpha": 0.2, "max_iterations": 50},
}


def merge(base: dict, change: dict) -> dict:
    for k, v in change.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "mesh":
            merge(base[k], v)
        else:
            base[k] = v
    return base


def write(path, obj):
    if MPI.COMM_WORLD.rank == 0:
        path.write_text(yaml.safe_dump(obj))
    MPI.COMM_WORLD.Barrier()
    return path


def test_pontryx_hjb_run(capsys, mpi_tmp_path):
    cfg = write(mpi_tmp_path / "h.yaml", SMALL)
    run = mpi_tmp_path / "run"
    code, out, err = cli(capsys, "hjb", cfg, "--output", run)
    assert code == 0, err
    assert "closed loop" in out and "open loop" in out
    summary = json.loads((run / "summary.json").read_text())
    row = summary["initial_states"][0]
    assert row["closed_loop"] >= row["open_loop"] - 1e-9
    for name in ("value.npz", "plots/value.png", "plots/feedback.png", "config.yaml"):
        assert (run / name).is_file(), name
    assert (run / "paraview" / "value.bp").is_dir()
    assert np.load(run / "value.npz")["V"].shape == (5, 13, 13)
    code, _, err = cli(capsys, "hjb", cfg, "--output", run)  # not empty: refused
    assert code == 2 and "--output" in err


@pytest.mark.parametrize("stage", ["value_function", "open_loop", "outputs"])
def test_hjb_overwrite_stopped_by_a_signal_keeps_the_old_run(
    capsys, mpi_tmp_path, monkeypatch, stage
):
    """A signal during the study of an --overwrite stops it between its stages (exit
    143, one line) and puts the old run back as it was (it had been deleted as the
    new run began: one config.yaml was left); one while the outputs are written is
    noted and they are finished. A signal inside TAO's callbacks had been a
    traceback."""
    import os
    import signal

    from pontryx.solver.app import hjb as hjb_app

    cfg = write(mpi_tmp_path / "h.yaml", SMALL)
    run = mpi_tmp_path / "run"
    assert cli(capsys, "hjb", cfg, "--output", run, "--quiet")[0] == 0
    before = _files(run)
    target = {
        "value_function": (ValueFunction, "solve"),
        "open_loop": (ReducedNetwork, "open_loop"),
        "outputs": (hjb_app, "_outputs"),
    }[stage]
    real = getattr(*target)

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(*target, signalled)
    code, out, err = cli(capsys, "hjb", cfg, "--output", run, "--quiet", "--overwrite")
    if stage == "outputs":
        assert code == 0, err
        return
    assert code == 143 and err == "interrupted\n" and not out, (code, err)
    assert _files(run) == before


@pytest.mark.parametrize("where", ["new", "empty"])
def test_hjb_fresh_run_stopped_by_a_signal_keeps_nothing(capsys, mpi_tmp_path, monkeypatch, where):
    """README: a signal stops the study with "nothing of the new run kept" — a fresh
    run had left config.yaml and .pontryx/, and the same command was then refused
    (not empty). An empty directory given stays, empty; a new one goes."""
    import os
    import signal

    cfg = write(mpi_tmp_path / "h.yaml", SMALL)
    run = mpi_tmp_path / "run"
    if where == "empty" and MPI.COMM_WORLD.rank == 0:
        run.mkdir()
    MPI.COMM_WORLD.Barrier()
    real = ValueFunction.solve

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(ValueFunction, "solve", signalled)
        code, _, err = cli(capsys, "hjb", cfg, "--output", run, "--quiet")
    assert code == 143 and err == "interrupted\n", (code, err)
    if MPI.COMM_WORLD.rank == 0:
        assert (list(run.iterdir()) == []) if where == "empty" else not run.exists()
    MPI.COMM_WORLD.Barrier()
    assert cli(capsys, "hjb", cfg, "--output", run, "--quiet")[0] == 0


@pytest.mark.parametrize("activation", ["sigmoid", "softplus", "smooth_relu"])
def test_hjb_runs_with_every_activation(capsys, mpi_tmp_path, activation):
    """sigmoid (and softplus, whose σ' is the sigmoid) was a TypeError traceback: the
    component minimisation evaluates σ on 0-d arrays."""
    raw = merge(json.loads(json.dumps(SMALL)), {"hjb": {"grid": {"n": 4}}})
    raw["model"]["activation"] = activation
    raw["output"] = {"plots": False, "paraview": False}
    cfg = write(mpi_tmp_path / "h.yaml", raw)
    code, _, err = cli(capsys, "hjb", cfg, "--output", mpi_tmp_path / "run", "--quiet")
    assert code == 0, err


def _files(run):
    """The run's files and their bytes (rank 0; None elsewhere), but the lock."""
    if MPI.COMM_WORLD.rank != 0:
        return None
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*"))
            if p.is_file() and p.name != "lock"}  # fmt: skip


def test_hjb_follows_the_output_switches(capsys, mpi_tmp_path):
    """output.plots and output.paraview decide on the figures and the VTX file, as
    for train; the other outputs are always written."""
    raw = merge(json.loads(json.dumps(SMALL)), {"hjb": {"grid": {"n": 4}}})
    raw["output"] = {"plots": False, "paraview": False}
    run = mpi_tmp_path / "run"
    code, _, err = cli(capsys, "hjb", write(mpi_tmp_path / "h.yaml", raw), "--output", run)
    assert code == 0, err
    assert sorted(p.name for p in run.iterdir()) == [
        ".pontryx", "config.yaml", "summary.json", "value.npz"
    ]  # fmt: skip


def test_hjb_offers_only_its_own_flags(capsys, mpi_tmp_path):
    """hjb has no --resume: a run directory in the way offers --overwrite alone."""
    cfg = write(
        mpi_tmp_path / "h.yaml", merge(json.loads(json.dumps(SMALL)), {"hjb": {"grid": {"n": 4}}})
    )
    run, foreign = mpi_tmp_path / "run", mpi_tmp_path / "foreign"
    code, _, err = cli(capsys, "hjb", cfg, "--output", run, "--quiet")
    assert code == 0, err
    if MPI.COMM_WORLD.rank == 0:
        foreign.mkdir()
        (foreign / "notes.txt").write_text("mine")
    MPI.COMM_WORLD.Barrier()
    for where, flags, needle in (
        (run, [], f"run directory '{run}' is not empty; use --overwrite to replace its results"),
        (foreign, [], "is not empty; use --overwrite to replace its results"),
        (
            foreign,
            ["--overwrite"],
            "run.json); --overwrite only acts on one — choose a new --output",
        ),
    ):
        code, out, err = cli(capsys, "hjb", cfg, "--output", where, "--quiet", *flags)
        assert code == 2 and err.startswith("config error: --output: ") and needle in err, err
        assert err.count("\n") == 1 and "--resume" not in err and not out
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
    code, _, err = cli(capsys, "hjb", cfg, "--output", run, "--quiet", "--overwrite")
    assert code == 0, err


@pytest.mark.parametrize(
    "change, key",
    [
        ({"mesh": {"kind": "interval", "n": 4}}, "mesh"),
        ({"training": {"method": "adam"}}, "training.method"),
        ({"training": {"alpha": 0.0}}, "training.alpha"),
        ({"model": {"epsilon": 0.1}}, "model.epsilon"),
        ({"hjb": {"initial_states": [[3.0, 0.0]]}}, "hjb.initial_states.0"),
        ({"hjb": {"grid": {"lower": [1, 1], "upper": [0, 2]}}}, "hjb.grid.upper"),
        ({"hjb": {"bound": -1}}, "hjb.bound"),
        ({"hjb": {"grid": {"cfl": 1e-308}}}, "hjb.grid.cfl"),  # 8e307 steps: an OverflowError
        ({"data": {"name": "ellipses"}}, "data"),
        ({"model": {"degree": 2}}, "model.degree"),
        ({"training": {"beta": 0.1}}, "training.beta"),
        ({"training": {"bounds": {"b": 1.0}}}, "training.bounds"),
        ({"training": {"gamma": 0.1}}, "training.gamma"),
        ({"training": {"delta": 0.1}}, "training.delta"),
        ({"training": {"levels": [{"max_iterations": 2}]}}, "training.levels"),
        ({"hjb": {"grid": {"n": 100000}}}, "hjb.grid.n"),  # 10¹⁰ nodes: refused, not bad_alloc
        ({"hjb": {"grid": {"n": 1}}}, "hjb.grid.n"),
        ({"hjb": {"grid": {"controls": 10**11}}}, "hjb.grid.controls"),  # was a MemoryError
        ({"hjb": None}, "hjb"),  # was "data: required key is missing"
        # values for which the study cannot be finite (were tracebacks, exit 3 with a
        # half-written run, or warnings on stderr)
        ({"hjb": {"bound": 1e308}}, "hjb.bound"),
        ({"hjb": {"offset": 1e308}}, "hjb.offset"),
        ({"hjb": {"target": 1e200}}, "hjb.target"),
        ({"hjb": {"readout": [1e308, -1e308]}}, "hjb.readout"),
        ({"hjb": {"readout": [1e148, 1e148]}}, "hjb.readout"),  # its gradient overflows
        ({"hjb": {"kernel": [[0, -1e300], [1e300, 0]]}}, "hjb.kernel"),
        ({"hjb": {"grid": {"lower": [-1e308, -1e308]}}}, "hjb.grid.lower"),
        ({"hjb": {"grid": {"upper": [1e200, 1e200]}}}, "hjb.grid.upper"),
        ({"training": {"alpha": 1e308}}, "training.alpha"),
        ({"model": {"T": 1e300}}, "model.T"),
        ({"model": {"activation": "softplus"}, "hjb": {"bound": 1e149}}, "hjb.bound"),
        # the width mesh's own keys (were keyed hjb.upper / a RuntimeError)
        ({"mesh": {"kind": "interval", "n": 1, "lower": 5}}, "mesh.upper"),
        ({"mesh": {"kind": "interval", "n": 1, "upper": 1e-300}}, "mesh.upper"),
        ({"mesh": {"kind": "interval", "n": 1, "lower": -1e308, "upper": 1e308}}, "mesh.lower"),
        # the network's model keys (were keyed hjb.layers), and a bound the masses of
        # the width mesh dominate, not the default kernel 1 (was keyed hjb.kernel)
        ({"model": {"layers": 10**8}}, "model.layers"),
        ({"mesh": {"kind": "interval", "n": 1, "upper": 1e40}}, "mesh"),
        # the open-loop method is checked as train checks it, before anything is written
        # (were: a half-written run, a traceback, or silently ignored)
        ({"training": {"options": {"learning_rate": 0.1}}}, "training.options.learning_rate"),
        (
            {"training": {"options": {"petsc_options": {"tao_ls_type": "nosuch"}}}},
            "training.options.petsc_options.tao_ls_type",
        ),
        ({"petsc": {"pontryx_tao": {"tao_type": "nosuch"}}}, "petsc.pontryx_tao.tao_type"),
        ({"petsc": {"pontryx_tao": {"gatol": 1}}}, "petsc.pontryx_tao.gatol"),
        ({"data": {"n_train": 2**64}}, "data.n_train"),
        # train's checks of keys hjb does not use hold too (validate passed them)
        ({"model": {"init": {"smoothness": 40}}}, "model.init.smoothness"),
        ({"training": {"checkpointing": "reverse"}}, "training.checkpointing"),
        ({"parallel": {"depth": 2}}, "parallel.depth"),
    ],
)
def test_hjb_bad_input(capsys, mpi_tmp_path, change, key):
    raw = merge(json.loads(json.dumps(SMALL)), change)
    code, out, err = cli(
        capsys, "hjb", write(mpi_tmp_path / "bad.yaml", raw), "-o", mpi_tmp_path / "o"
    )
    assert code == 2 and err.startswith(f"config error: {key}:"), err
    assert err.count("\n") == 1 and not out, err
    assert not (mpi_tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["validate", "check-gradient"])
def test_validate_refuses_what_hjb_cannot_compute(capsys, mpi_tmp_path, command):
    for change, key in (
        ({"hjb": {"bound": 1e308}}, "hjb.bound"),
        ({"hjb": {"offset": 1e308}}, "hjb.offset"),
        ({"hjb": {"grid": {"lower": [-1e308, -1e308]}}}, "hjb.grid.lower"),
    ):
        raw = merge(json.loads(json.dumps(SMALL)), change)
        code, _, err = cli(capsys, command, write(mpi_tmp_path / "bad.yaml", raw))
        assert code == 2 and err.startswith(f"config error: {key}:"), err
        assert err.count("\n") == 1, err


def test_extreme_accepted_values_stay_finite(capsys, mpi_tmp_path):
    """Just inside the ranges: the study runs, no warning, every number finite."""
    raw = merge(
        json.loads(json.dumps(SMALL)),
        {
            "hjb": {"bound": 1e140, "target": 1e140, "grid": {"n": 4}},
            "training": {"max_iterations": 3},
        },
    )
    run = mpi_tmp_path / "run"
    code, _, err = cli(capsys, "hjb", write(mpi_tmp_path / "x.yaml", raw), "-o", run, "--quiet")
    assert code in (0, 4) and "Warning" not in err, err
    text = (run / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text


def test_evaluate_names_an_hjb_run(capsys, mpi_tmp_path):
    """evaluate on a finished hjb run: not 'the run has not finished'."""
    raw = merge(json.loads(json.dumps(SMALL)), {"hjb": {"grid": {"n": 4}}})
    run = mpi_tmp_path / "run"
    code, _, err = cli(capsys, "hjb", write(mpi_tmp_path / "h.yaml", raw), "-o", run, "--quiet")
    assert code in (0, 4), err
    code, out, err = cli(capsys, "evaluate", run)
    assert code == 2 and err.startswith("config error: evaluate: ") and "hjb run" in err, err
    assert "not finished" not in err and err.count("\n") == 1 and not out


def test_hjb_without_an_hjb_section(capsys, mpi_tmp_path):
    """A training configuration (no hjb: section, no data: either): keyed hjb."""
    raw = {k: v for k, v in json.loads(json.dumps(SMALL)).items() if k != "hjb"}
    cfg = write(mpi_tmp_path / "train.yaml", raw)
    code, _, err = cli(capsys, "hjb", cfg, "-o", mpi_tmp_path / "o")
    assert (
        code == 2
        and err
        == "config error: hjb: this configuration has no hjb: section (pontryx train runs it)\n"
    ), err
    assert not (mpi_tmp_path / "o").exists()


def test_train_refuses_an_hjb_configuration(capsys, mpi_tmp_path):
    code, _, err = cli(
        capsys, "train", write(mpi_tmp_path / "h.yaml", SMALL), "-o", mpi_tmp_path / "o"
    )
    assert code == 2 and "config error: hjb:" in err


def test_the_width_interval_is_honoured():
    """mesh: {kind: interval, n: 1, upper: 2} doubles M_L: r_i = α m_i and c = C M_L."""
    a = ReducedNetwork([[0, 1], [1, 0]], [1.0, 1.0], 0.0, 1.0, 0.2, 1.0, layers=2)
    b = ReducedNetwork(
        [[0, 1], [1, 0]],
        [1.0, 1.0],
        0.0,
        1.0,
        0.2,
        1.0,
        layers=2,
        width_mesh={"kind": "interval", "n": 1, "upper": 2.0},
    )
    try:
        assert np.allclose(b.system.r, 2 * a.system.r)
    finally:
        a.destroy()
        b.destroy()


def test_example_validates_checks_gradient_and_runs_shortened(capsys, mpi_tmp_path):
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "hjb.yaml"
    code, out, err = cli(capsys, "validate", example)
    assert code == 0 and "valid" in out and "cells" in out, out + err
    code, out, err = cli(capsys, "check-gradient", example)
    assert code == 0 and "PASS" in out, out + err
    sets = ["hjb.grid.n=10", "model.layers=4", "hjb.initial_states=[[0.5, 0.0]]"]
    run = mpi_tmp_path / "hjb"
    args = [a for s in sets for a in ("--set", s)]
    code, _, err = cli(capsys, "hjb", example, "--output", run, "--quiet", *args)
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "done" and len(summary["initial_states"]) == 1
