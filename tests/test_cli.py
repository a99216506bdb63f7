"""The ``pontryx`` command line, in process (every rank runs ``main``, as under
``mpirun``): every command, every example (shortened), a table of malformed
configurations, run-directory rules, restart, and the non-finite stop.

Subprocess tests (SIGKILL and resume, a fault on one rank under mpirun, the
installed entry point) are in test_cli_subprocess.py."""

import json
import shutil
from pathlib import Path

from mpi4py import MPI

import numpy as np
import pytest
import yaml

from pontryx.solver.app.cli import main
from pontryx.solver.data import load_dataset
from pontryx.solver.outputs import model_io, read_metrics

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

SMALL = """
mesh: {kind: unit_square, n: 3}
model: {layers: 3, T: 2.0, init: {variance: 3.0}}
data: {name: ellipses, n_train: 24, n_test: 12}
training: {method: lmvm, max_iterations: 6, test_every: 2}
output: {checkpoint_every: 2, plots: false, paraview: {samples: 2, kernel_rows: 1}}
"""
#: the tests that look at the plots turn them on (they are most of a small run's time)
PLOTS = ("--set", "output.plots=true")


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``main(args)`` on every rank; (exit code, rank 0's stdout, rank 0's stderr)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    comm = MPI.COMM_WORLD
    codes = comm.allgather(code)
    assert len(set(codes)) == 1, f"ranks disagree on the exit code: {codes}"
    out, err = comm.bcast((out, err) if comm.rank == 0 else None, root=0)
    return code, out, err


def write(path: Path, text: str) -> Path:
    if MPI.COMM_WORLD.rank == 0:
        path.write_text(text)
    MPI.COMM_WORLD.Barrier()
    return path


@pytest.fixture
def small(mpi_tmp_path):
    return write(mpi_tmp_path / "small.yaml", SMALL)


# ------------------------------------------------------------- commands ---


@pytest.mark.parametrize(
    "command", [[], ["train"], ["evaluate"], ["check-gradient"], ["validate"], ["info"]]
)
def test_help_everywhere(capsys, command):
    code, out, _ = cli(capsys, *command, "--help")
    assert code == 0 and "usage: pontryx" in out


def test_train_help_lists_the_batch_script_options(capsys):
    _, out, _ = cli(capsys, "train", "--help")
    for opt in ("--output", "--set", "--resume", "--overwrite", "--quiet"):
        assert opt in out


def test_info(capsys):
    code, out, _ = cli(capsys, "info")
    assert code == 0
    for word in (
        "pontryx",
        "DOLFINx",
        "PETSc",
        "MPI",
        "mumps",
        "superlu_dist",
        "hypre",
        "scalapack",
        "petsc4py.get_config()",
    ):
        assert word in out
    assert f"ranks     {MPI.COMM_WORLD.size} on one node; /dev/shm " in out
    code, out, _ = cli(capsys, "info", "--json")
    info = json.loads(out)
    assert info["versions"]["dolfinx"].startswith("0.11")
    assert set(info["petsc"]["external_packages"]) >= {"mumps", "hypre", "ml", "scalapack"}
    assert info["shared_memory"]["one_node"] is True and info["shared_memory"]["free_mb"] > 0


def test_validate(capsys, small):
    code, out, err = cli(capsys, "validate", small)
    assert code == 0 and "valid" in out and "N = 16 dofs" in out and not err


def test_train_writes_the_run_directory(capsys, small, mpi_tmp_path):
    run = mpi_tmp_path / "run"
    code, out, err = cli(capsys, "train", small, "--output", run, *PLOTS)
    assert code == 0, err
    assert out.count("\niter ") + out.startswith("iter ") == 6  # one line per iteration
    assert "results in" in out
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "metrics.csv",
        "summary.json",
        "model.npz",
        "plots/curves.png",
        "plots/decision_boundary.png",
        "plots/features.png",
        "plots/hamiltonian.png",
        "paraview/states.bp",
        "paraview/controls.bp",
        "paraview/controls.json",
    ):
        assert (run / name).exists(), name
    rows = read_metrics(run)
    assert [r["iteration"] for r in rows] == list(range(1, 7))
    assert [r["test_metric"] is not None for r in rows] == [False, True] * 3
    assert all(max(r["stationarity_layers"]) == r["stationarity"] for r in rows)
    assert len(rows[0]["stationarity_layers"]) == 3
    assert "stationarity_layers" not in (run / "metrics.csv").read_text()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "max_iterations" and summary["iterations"] == 6
    assert summary["ranks"] == MPI.COMM_WORLD.size and summary["dofs"] == 16
    assert {"train", "test", "time", "versions", "layout"} <= set(summary)
    width_ranks = summary["layout"]["width"]
    assert summary["exchange"] == ("shared" if width_ranks > 1 else "none")
    assert summary["versions"]["dolfinx"].startswith("0.11")
    # the resolved configuration reproduces the run (it validates, has all defaults)
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["model"]["scheme"] == "imex_euler" and resolved["data"]["seed"] == 0
    assert resolved["output"]["directory"] == str(run)
    assert [p.name for p in sorted((run / "checkpoints").iterdir())] == [
        "iter-00000004",
        "iter-00000006",
    ]
    # ... and repeats it from the run directory alone
    again = mpi_tmp_path / "again"
    code, _, err = cli(capsys, "train", run / "config.yaml", "--output", again, "--quiet")
    assert code == 0, err
    A, B = model_io.load_model(run / "model.npz"), model_io.load_model(again / "model.npz")
    assert all(np.array_equal(A[k], B[k]) for k in A)

    # existing output is never overwritten silently
    before = (run / "summary.json").read_bytes()
    code, out, err = cli(capsys, "train", small, "--output", run)
    assert code == 2 and "not empty" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert (run / "summary.json").read_bytes() == before

    # --resume of a finished run trains no further; --overwrite starts again
    code, out, _ = cli(capsys, "train", small, "--output", run, "--resume", "--quiet")
    assert code == 0 and out == ""
    assert len(read_metrics(run)) == 6
    code, _, _ = cli(
        capsys,
        "train",
        small,
        "--output",
        run,
        "--overwrite",
        "--quiet",
        "--set",
        "training.max_iterations=2",
    )
    assert code == 0 and len(read_metrics(run)) == 2

    # evaluate reproduces the summary's numbers from model.npz and config.yaml
    code, _, _ = cli(capsys, "train", small, "--output", run, "--overwrite", "--quiet")
    code, out, err = cli(capsys, "evaluate", run, "--json")
    assert code == 0, err
    ev = json.loads(out)
    summary = json.loads((run / "summary.json").read_text())
    for split in ("train", "test"):
        assert ev[split]["accuracy"] == pytest.approx(summary[split]["accuracy"], abs=1e-12)
        assert ev[split]["loss"] == pytest.approx(summary[split]["loss"], rel=1e-10)
    code, out, _ = cli(capsys, "evaluate", run, "--data", "n_test=40", "--data", "seed=3")
    assert code == 0 and "40 samples" in out
    code, _, err = cli(capsys, "evaluate", run, "--data", "n_test=-1")
    assert code == 2 and err.startswith("config error: data.n_test")
    # another data set starts from its own defaults (the configured one's keys stay behind)
    other = ["--data", "name=swiss_roll", "--data", "n_test=30"]
    code, out, err = cli(capsys, "evaluate", run, *other)
    assert code == 0 and "Swiss roll" in out and "30 samples" in out, err
    code, _, err = cli(capsys, "evaluate", run, "--data", "name=digits")
    assert code == 2 and "has 64 features, the model takes 2" in err, err
    code, _, err = cli(capsys, "evaluate", run, "--data", "n_test=100000000000")  # MemoryError
    assert code == 2 and err.startswith("config error: memory: ") and "data.n_test" in err, err
    code, _, err = cli(capsys, "evaluate", mpi_tmp_path / "nothing")
    assert code == 2 and "not found" in err


def test_evaluate_on_a_data_file(capsys, small, mpi_tmp_path):
    """--data FILE: every row evaluated, labels mapped by the model's classes (a file
    with some of the classes only works; an unknown label is refused); a model with
    non-finite weights is reported as such (exit 3)."""
    run = mpi_tmp_path / "run"
    assert cli(capsys, "train", small, "--output", run, "--quiet")[0] == 0
    d = load_dataset({"name": "ellipses", "n_train": 30, "n_test": 1, "seed": 5})
    X, y = d.X_train, d.y_train
    only = y == 1
    if MPI.COMM_WORLD.rank == 0:
        np.savez(mpi_tmp_path / "d.npz", X=X, y=y)
        np.savez(mpi_tmp_path / "ones.npz", X=X[only], y=y[only])
        np.savez(mpi_tmp_path / "bad.npz", X=X, y=np.where(y == 1, 7, 0))
    MPI.COMM_WORLD.Barrier()
    code, out, err = cli(capsys, "evaluate", run, "--data", mpi_tmp_path / "d.npz", "--json")
    assert code == 0, err
    assert json.loads(out)["file"]["samples"] == 30
    code, out, err = cli(capsys, "evaluate", run, "--data", mpi_tmp_path / "ones.npz", "--json")
    assert code == 0, err
    assert json.loads(out)["file"]["samples"] == int(only.sum())
    code, _, err = cli(capsys, "evaluate", run, "--data", mpi_tmp_path / "bad.npz")
    assert code == 2 and "label 7" in err and "not a class of the model" in err
    assert err.count("\n") == 1
    model = dict(np.load(run / "model.npz"))
    model["W"][0, 0, 0] = np.nan
    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.rank == 0:
        np.savez(run / "model.npz", **model)
    MPI.COMM_WORLD.Barrier()
    code, _, err = cli(capsys, "evaluate", run)
    assert code == 3 and "non-finite values (in W)" in err
    whole = (run / "model.npz").read_bytes()
    MPI.COMM_WORLD.Barrier()
    for damaged in (b"not a model", whole[: len(whole) // 2]):  # text; a truncated archive
        if MPI.COMM_WORLD.rank == 0:
            (run / "model.npz").write_bytes(damaged)
        MPI.COMM_WORLD.Barrier()
        code, _, err = cli(capsys, "evaluate", run)
        assert code == 2 and "not a pontryx model file" in err and err.count("\n") == 1, err
        assert "pickle" not in err  # NumPy's own message would suggest loading it unsafely


def test_evaluate_edge_files(capsys, small, mpi_tmp_path):
    """One sample is evaluated (a split's 2-sample minimum had been applied); a loss
    that overflows is exit 3 in one line (was "Infinity" in --json, exit 0, NumPy's
    warnings); boolean and byte-string labels train and evaluate (were refused by
    evaluate); a run that ended without a model says how it ended."""
    comm = MPI.COMM_WORLD
    d = load_dataset({"name": "ellipses", "n_train": 30, "n_test": 1, "seed": 5})
    if comm.rank == 0:
        (mpi_tmp_path / "one.csv").write_text("a,b,label\n0.1,-0.1,1\n")
        rows = "".join(f"{a}e308,{b}e308,{c}\n" for a, b, c in ((1, 1, 0), (1, 1, 1), (-1, 1, 0)))
        (mpi_tmp_path / "huge.csv").write_text("a,b,label\n" + rows)
        np.savez(mpi_tmp_path / "bool.npz", X=d.X_train, y=d.y_train.astype(bool))
        np.savez(mpi_tmp_path / "bytes.npz", X=d.X_train, y=np.where(d.y_train, b"b", b"a"))
    comm.Barrier()
    run = mpi_tmp_path / "run"
    code, _, err = cli(capsys, "train", small, "--output", run, "--quiet",
                       "--set", "model.activation=softplus")  # fmt: skip
    assert code == 0, err
    code, out, err = cli(capsys, "evaluate", run, "--data", mpi_tmp_path / "one.csv", "--json")
    assert code == 0 and json.loads(out)["file"]["samples"] == 1, err
    code, out, err = cli(capsys, "evaluate", run, "--data", mpi_tmp_path / "huge.csv", "--json")
    assert code == 3 and not out and err.count("\n") == 1, (out, err)
    assert "the loss on" in err and "is not finite" in err and "Warning" not in err
    for labels in ("bool", "bytes"):
        data = mpi_tmp_path / f"{labels}.npz"
        own = mpi_tmp_path / labels
        code, _, err = cli(capsys, "train", small, "--output", own, "--quiet",
                           "--set", f"data={{name: file, path: {data}}}")  # fmt: skip
        assert code == 0, err
        assert cli(capsys, "evaluate", own)[0] == 0
        code, _, err = cli(capsys, "evaluate", own, "--data", data)
        assert code == 0, err
    if comm.rank == 0:
        (run / "model.npz").unlink()
    comm.Barrier()
    code, _, err = cli(capsys, "evaluate", run)
    assert code == 2 and "the run ended with status 'max_iterations' without one" in err, err


def test_evaluate_a_csv_trained_model_on_an_npz_file(capsys, small, mpi_tmp_path):
    """The training CSV's column keys (target, header) do not follow --data to an NPZ
    file (they used to be copied and refused there); samples of another shape than
    the model's input shape are refused, one line, exit 2."""
    comm = MPI.COMM_WORLD
    d = load_dataset({"name": "ellipses", "n_train": 40, "n_test": 1, "seed": 2})
    X, y = d.X_train, d.y_train
    if comm.rank == 0:
        rows = "\n".join(f"{c},{a:.17g},{b:.17g}" for c, (a, b) in zip(y, X))
        (mpi_tmp_path / "first.csv").write_text(f"label,x1,x2\n{rows}\n")
        (mpi_tmp_path / "first.txt").write_text(f"label,x1,x2\n{rows}\n")  # CSV too
        np.savez(mpi_tmp_path / "xy.npz", X=X, y=y)
        np.savez(mpi_tmp_path / "tall.npz", X=X.reshape(-1, 2, 1), y=y)
        np.savez(mpi_tmp_path / "wide.npz", X=X.reshape(-1, 1, 2), y=y)
    comm.Barrier()
    run = mpi_tmp_path / "run"
    data = f"data={{name: file, path: {mpi_tmp_path / 'first.csv'}, target: 0, header: true}}"
    code, _, err = cli(capsys, "train", small, "--output", run, "--quiet", "--set", data)
    assert code == 0, err
    results = []
    for file in ("first.csv", "first.txt", "xy.npz"):
        code, out, err = cli(capsys, "evaluate", run, "--data", mpi_tmp_path / file, "--json")
        assert code == 0, err
        results.append(json.loads(out)["file"])
    assert [r["samples"] for r in results] == [40, 40, 40]
    assert results[1]["loss"] == results[0]["loss"]
    assert results[2]["loss"] == pytest.approx(results[0]["loss"], rel=1e-12)
    image = mpi_tmp_path / "image"
    data = f"data={{name: file, path: {mpi_tmp_path / 'wide.npz'}}}"
    code, _, err = cli(capsys, "train", small, "--output", image, "--quiet", "--set", data)
    assert code == 0, err
    assert cli(capsys, "evaluate", image, "--data", mpi_tmp_path / "wide.npz")[0] == 0
    code, out, err = cli(capsys, "evaluate", image, "--data", mpi_tmp_path / "tall.npz")
    assert code == 2 and "samples of shape [2, 1], the model takes [1, 2]" in err, err
    assert err.count("\n") == 1 and not out


def test_evaluate_refuses_mixed_data_and_inconsistent_model_files(capsys, small, mpi_tmp_path):
    """--data: one file, or KEY=VALUE overrides, not both; a model.npz that is not
    what README's "The model file" documents: one line naming the file and the entry,
    exit 2; non-finite values stay exit 3."""
    run = mpi_tmp_path / "run"
    assert cli(capsys, "train", small, "--output", run, "--quiet")[0] == 0
    d = load_dataset({"name": "ellipses", "n_train": 10, "n_test": 1, "seed": 5})
    if MPI.COMM_WORLD.rank == 0:
        np.savez(mpi_tmp_path / "d.npz", X=d.X_train, y=d.y_train)
    MPI.COMM_WORLD.Barrier()
    file = mpi_tmp_path / "d.npz"
    code, out, err = cli(capsys, "evaluate", run, "--data", "name=peaks")  # 5 classes
    assert code == 2 and err.startswith("config error: --data: the data set of --data"), err
    assert "has 5 outputs, the model takes 2" in err and err.count("\n") == 1
    for data in ([file, "n_test=5"], ["n_test=5", file], [file, file], ["="], ["=5"]):
        flags = [x for v in data for x in ("--data", v)]
        code, out, err = cli(capsys, "evaluate", run, *flags)
        assert code == 2 and err.startswith("config error: --data: "), (data, err)
        assert err.count("\n") == 1 and not out, err
    good = dict(np.load(run / "model.npz"))
    model = str(run / "model.npz")
    for change, needle in (
        ({"version": np.array(99)}, "version: expected 1"),
        ({"weights": np.array("ternary")}, "weights: 'ternary' but no kernel control"),
        ({"weights": np.array("fuzzy")}, "weights: expected one of real, ternary, binary"),
        ({"classes": np.array([0])}, "classes: 1 class labels for a model of 2 outputs"),
        ({"layers": np.array(7)}, "b: has shape (3, 16), expected (layers, N) = (7, 16)"),
        ({"n_in": np.array(3)}, "E: has shape (16, 2)"),
        ({"T": np.array("long")}, "T: expected a 0-d number"),
        ({"W_scale": np.ones(3)}, "W_scale: a model with real weights"),
        ({"scheme": None}, "scheme: missing"),
        ({"scheme": np.array("rk4")}, "scheme: the file has 'rk4', the network has 'imex_euler'"),
        ({"activation": np.array("sigmoid")}, "activation: the file has 'sigmoid'"),
        ({"T": np.array(1.0)}, "T: the file has 1.0, the network has 2.0"),
    ):
        arrays = {k: v for k, v in {**good, **change}.items() if v is not None}
        MPI.COMM_WORLD.Barrier()  # every rank has read the previous file
        if MPI.COMM_WORLD.rank == 0:
            np.savez(run / "model.npz", **arrays)
        MPI.COMM_WORLD.Barrier()
        code, out, err = cli(capsys, "evaluate", run)
        assert code == 2 and err.startswith(f"config error: evaluate: {model}: {needle}"), err
        assert err.count("\n") == 1 and not out, err
    codes = {"weights": np.array("ternary"), "W": np.sign(good["W"]).astype(np.int8)}
    for change, needle in (
        ({**codes, "W_scale": np.ones(2)}, "W_scale: expected 3 scales"),
        ({**codes, "W_scale": -np.ones(3)}, "W_scale: expected scales c_n > 0"),
        ({**codes, "W": 2 * codes["W"], "W_scale": np.ones(3)}, "W: expected codes in"),
        (  # a 0 code in a binary kernel (was taken)
            {"weights": np.array("binary"), "W": 0 * codes["W"], "W_scale": np.ones(3)},
            "W: expected codes in {-1, 1} (weights 'binary')",
        ),
        (  # codes of another integer type than README's int8 (int16 was taken)
            {**codes, "W": codes["W"].astype(np.int16), "W_scale": np.ones(3)},
            "W: expected int8 codes",
        ),
    ):
        MPI.COMM_WORLD.Barrier()
        if MPI.COMM_WORLD.rank == 0:
            np.savez(run / "model.npz", **{**good, **change})
        MPI.COMM_WORLD.Barrier()
        code, out, err = cli(capsys, "evaluate", run)
        assert code == 2 and err.startswith(f"config error: evaluate: {model}: {needle}"), err
    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.rank == 0:  # consistent codes and scales: evaluated; a NaN scale: exit 3
        np.savez(run / "model.npz", **{**good, **codes, "W_scale": np.full(3, 0.5)})
    MPI.COMM_WORLD.Barrier()
    assert cli(capsys, "evaluate", run)[0] == 0
    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.rank == 0:
        np.savez(run / "model.npz", **{**good, **codes, "W_scale": np.array([0.5, np.nan, 1])})
    MPI.COMM_WORLD.Barrier()
    code, _, err = cli(capsys, "evaluate", run)
    assert code == 3 and "non-finite values (in W)" in err, err
    # config.yaml's parallel section is checked too (its layout is replaced, not its library)
    text = (run / "config.yaml").read_text()
    MPI.COMM_WORLD.Barrier()
    if MPI.COMM_WORLD.rank == 0:
        (run / "config.yaml").write_text(text.replace("blas: numpy", "blas: bogus"))
    MPI.COMM_WORLD.Barrier()
    code, _, err = cli(capsys, "evaluate", run)
    assert code == 2 and err.startswith("config error: parallel.blas:"), err


def test_train_with_bounds(capsys, small, mpi_tmp_path):
    """``training.bounds`` from the command line: lmvm runs as blmvm (said once), the
    trained model stays in the box."""
    run = mpi_tmp_path / "boxed"
    code, out, err = cli(
        capsys, "train", small, "--output", run, "--quiet",
        "--set", "training.bounds={W: 0.2, b: [-0.1, 0.1]}",
    )  # fmt: skip
    assert code == 0, err
    assert "note: training.bounds: lmvm runs as blmvm (its bounded variant)" in out
    model = model_io.load_model(run / "model.npz")
    assert np.max(np.abs(model["W"])) <= 0.2 and np.max(np.abs(model["b"])) <= 0.1


def test_emsa_reports_the_maximum_principle_gap(capsys, small, mpi_tmp_path):
    run = mpi_tmp_path / "emsa"
    code, _, err = cli(
        capsys, "train", small, "--output", run, "--quiet", "--set", "training.method=emsa", *PLOTS
    )
    assert code == 0, err
    rows = read_metrics(run)
    assert all(len(r["gap_layers"]) == 3 and r["gap"] == max(r["gap_layers"]) for r in rows)
    assert "gap" in (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert (run / "plots" / "hamiltonian.png").exists()


def test_check_gradient(capsys, small):
    code, out, err = cli(capsys, "check-gradient", small)
    assert code == 0, out + err
    assert "observed rates" in out and "PASS" in out
    rates = [float(r) for r in out.split("observed rates:")[1].splitlines()[0].split(",")]
    assert len(rates) == 3 and min(rates) >= 1.95
    code, out, _ = cli(
        capsys,
        "check-gradient",
        small,
        "--set",
        "model.kernel.type=lowrank",
        "--set",
        "model.kernel.rank=2",
        "--set",
        "model.epsilon=0.1",
    )
    assert code == 0 and "PASS" in out
    code, out, _ = cli(capsys, "check-gradient", small, "--set", "model.scheme=rk4")
    assert code == 0 and "PASS" in out
    # steps so small that round-off dominates: the test reports failure
    code, out, _ = cli(capsys, "check-gradient", small, "--h0", "1e-12")
    assert code == 1 and "FAIL" in out
    code, _, err = cli(capsys, "check-gradient", small, "--steps", "1")
    assert code == 2 and "--steps" in err


@pytest.mark.parametrize(
    "flags",
    [
        ["--seed", "-1"],
        ["--steps", "100000"],  # 4.0**steps overflowed in first_step
        ["--steps", "28"],
        ["--h0", "inf"],
        ["--h0", "1e300"],
        ["--h0", "2"],
        ["--h0", "nan"],
        ["--h0", "0"],
    ],
)
def test_check_gradient_flags_out_of_range(capsys, small, flags):
    """Every flag is checked before the configuration is read: one line keyed by it."""
    code, out, err = cli(capsys, "check-gradient", small, *flags)
    assert code == 2 and err.startswith(f"config error: {flags[0]}: expected "), err
    assert err.count("\n") == 1 and not out


def test_check_gradient_round_off_fails_without_warnings(capsys, small, recwarn):
    """Steps so small that J(θ + hδ) = J(θ) exactly: a FAIL line, the table's rates
    of those zero remainders nan, and no NumPy warning (log₂(0/0))."""
    code, out, err = cli(capsys, "check-gradient", small, "--h0", "1e-300")
    assert code == 1 and "FAIL" in out and "nan" in out and not err, out + err
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


# ------------------------------------------------------------- examples ---

SHORT = {  # the smallest mesh of each kind used by the examples
    "unit_square": ["mesh.n=3"],
    "rectangle": ["mesh.n=[3, 3]"],
    "interval": ["mesh.n=6"],
    "unit_cube": ["mesh.n=1"],
    "box": ["mesh.n=[2, 2, 1]"],
    "disk": ["mesh.h=0.6"],
}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_check_gradient_passes_on_every_example_as_shipped(capsys, example):
    """With its defaults (the first step chosen from the problem)."""
    code, out, err = cli(capsys, "check-gradient", example)
    assert code == 0 and "PASS" in out, out + err


class _Wrong:
    """A reduced functional whose gradient is off by a relative ``eta``."""

    def __init__(self, rf, eta):
        self.rf, self.eta = rf, eta

    def __call__(self, controls):
        return self.rf(controls)

    def value_and_gradient(self, controls):
        J, g = self.rf.value_and_gradient(controls)
        g = g.copy()
        for name in g:
            g[name] *= 1.0 + self.eta
        return J, g


@pytest.mark.parametrize(
    "example",
    [e for e in EXAMPLES if e.stem != "digits_conv"],  # the slow one (1 797 images); fails too
    ids=lambda p: p.stem,
)
def test_check_gradient_fails_on_every_example_for_an_error_of_1e_3(capsys, example, monkeypatch):
    """The steps chosen from J alone reach close to round-off, where ∇J·(1 + 10⁻³)
    moves a rate out of [1.95, 2.05] (with the steps chosen from the gradient
    under test, as before, ∇J·1.3 passed)."""
    from pontryx.solver.adjoint import taylor

    test = taylor.taylor_test
    monkeypatch.setattr(taylor, "taylor_test", lambda rf, *a, **k: test(_Wrong(rf, 1e-3), *a, **k))
    code, out, err = cli(capsys, "check-gradient", example)
    assert code == 1 and "FAIL" in out, out + err


@pytest.mark.parametrize(
    "example",
    # test_inverse.py and test_hjb.py run those
    [e for e in EXAMPLES if not e.stem.startswith(("inverse_", "hjb"))],
    ids=lambda p: p.stem,
)
def test_example_runs_shortened(capsys, example, mpi_tmp_path):
    code, out, err = cli(capsys, "validate", example)  # as shipped: mesh, data, model, method
    assert code == 0 and "valid" in out, err
    cfg = yaml.safe_load(example.read_text())
    kind = cfg.get("mesh", {}).get("kind", "unit_square")
    overrides = [
        *SHORT[kind],
        "training.max_iterations=2",
        "data.n_train=20",
        "output.checkpoint_every=1",
        "output.paraview.samples=1",
    ]
    overrides += ["data.n_test=20"]
    if cfg["model"].get("kernel", {}).get("type") == "lowrank":
        overrides.append("model.kernel.rank=3")
    sets = [a for o in overrides for a in ("--set", o)]
    run = mpi_tmp_path / example.stem
    code, _, err = cli(capsys, "train", example, "--output", run, "--quiet", *sets)
    # the one-shot solves to a tolerance: stopped by the iterations it is not converged (4)
    assert code == (4 if cfg["training"]["method"] == "oneshot" else 0), err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["iterations"] == 2 and np.isfinite(summary["train"]["loss"])
    assert (run / "model.npz").is_file() and (run / "plots" / "curves.png").is_file()
    if cfg["data"]["name"] == "digits":
        assert (run / "plots" / "digits.png").is_file()


# ----------------------------------------------------- restart and faults ---


def _metrics_without_time(run):
    return [{k: v for k, v in r.items() if k not in ("time", "sweeps")} for r in read_metrics(run)]


def test_resume_continues_bit_for_bit(capsys, small, mpi_tmp_path):
    """A run stopped after a checkpoint and resumed equals an uninterrupted run
    (controls bit-identical; metrics equal except the elapsed time and TAO's
    evaluation counter ``sweeps``, which TAO restarts)."""
    a, b = mpi_tmp_path / "a", mpi_tmp_path / "b"
    assert cli(capsys, "train", small, "--output", a, "--quiet")[0] == 0
    assert (
        cli(capsys, "train", small, "--output", b, "--quiet", "--set", "training.max_iterations=4")[
            0
        ]
        == 0
    )
    assert len(read_metrics(b)) == 4
    assert cli(capsys, "train", small, "--output", b, "--quiet", "--resume")[0] == 0
    assert _metrics_without_time(a) == _metrics_without_time(b)
    A, B = model_io.load_model(a / "model.npz"), model_io.load_model(b / "model.npz")
    assert all(np.array_equal(A[k], B[k]) for k in A)
    sa, sb = (json.loads((r / "summary.json").read_text()) for r in (a, b))
    assert sa["train"] == sb["train"] and sa["test"] == sb["test"]


def test_resume_off_the_chunk_grid_and_with_a_minibatch_method(capsys, small, mpi_tmp_path):
    """A TAO run stopped by max_iterations off the checkpoint grid (5, K = 2) and
    continued ends as an uninterrupted one (it resumes from iteration 4: TAO's memory
    restarts at the grid); a minibatch method that continues another's checkpoint
    mid-epoch draws its permutation at once (it divided by an empty batch)."""
    a = mpi_tmp_path / "a"
    assert cli(capsys, "train", small, "--output", a, "--quiet")[0] == 0
    five = ("--set", "training.max_iterations=5")
    for keep in (2, 1):  # with one checkpoint kept, the grid point before is kept too
        b, kept = mpi_tmp_path / f"b{keep}", ("--set", f"output.keep_checkpoints={keep}")
        assert cli(capsys, "train", small, "--output", b, "--quiet", *five, *kept)[0] == 0
        assert cli(capsys, "train", small, "--output", b, "--quiet", "--resume", *kept)[0] == 0
        assert _metrics_without_time(a) == _metrics_without_time(b)
        A, B = model_io.load_model(a / "model.npz"), model_io.load_model(b / "model.npz")
        assert all(np.array_equal(A[k], B[k]) for k in A)
    c = mpi_tmp_path / "c"
    four = ("--set", "training.max_iterations=4")
    assert cli(capsys, "train", small, "--output", c, "--quiet", *four)[0] == 0
    switch = ("--set", "training.method=adam", "--set", "training.options.batch_size=10")
    code, _, err = cli(capsys, "train", small, "--output", c, "--quiet", "--resume", *switch)
    assert code == 0, err  # 24 samples, 3 batches per epoch: iteration 4 is mid-epoch
    summary = json.loads((c / "summary.json").read_text())
    assert summary["iterations"] == 6 and summary["method"] == "adam"


def test_tao_records_every_iteration(capsys, small, mpi_tmp_path):
    """One metrics row per TAO iteration, rejected trust-region steps included
    (``accepted`` 0): the rows match summary.json's iteration count."""
    run = mpi_tmp_path / "run"
    ntr = ("--set", "training.method=ntr", "--set", "training.max_iterations=8")
    assert cli(capsys, "train", small, "--output", run, "--quiet", *ntr)[0] == 0
    rows = read_metrics(run)
    summary = json.loads((run / "summary.json").read_text())
    assert [r["iteration"] for r in rows] == list(range(1, summary["iterations"] + 1))
    assert all(r["accepted"] in (0, 1) for r in rows)


def test_a_signal_in_the_coarse_levels_stops_without_a_checkpoint(
    capsys, small, mpi_tmp_path, monkeypatch
):
    """A signal during training.levels stops after the coarse iteration in progress
    (not after the whole level), writes no checkpoint (the coarse networks are not
    the run's) and says that --resume starts again, with the levels."""
    from pontryx.solver.app.signals import StopRequest

    run = mpi_tmp_path / "run"
    levels = ("--set", "training.levels=[{mesh: {n: 2}, max_iterations: 50}]")
    with monkeypatch.context() as m:
        m.setattr(StopRequest, "requested", lambda self: 15)  # SIGTERM, as soon as asked
        code, _, err = cli(capsys, "train", small, "--output", run, "--quiet", *levels)
    assert code == 143 and "stopped in the coarse levels" in err, err
    assert "it starts again, with the coarse levels" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["resume_from"] is None
    assert not list((run / "checkpoints").glob("iter-*"))
    code, out, err = cli(capsys, "train", small, "--output", run, "--resume", *levels)
    assert code == 0 and "level 1/1" in out, err


def test_a_signal_while_the_outputs_are_written_lets_them_finish(
    capsys, small, mpi_tmp_path, monkeypatch
):
    """A signal after the last iteration, while model, plots and summary are being
    written, is noted and the outputs finished: the run ends as it finished (it
    had been raised between collectives on one rank: 2 ranks hung, and 1 rank
    ended 130 without a summary)."""
    import os
    import signal

    from pontryx.solver.app.run import TrainingRun

    finish = TrainingRun.finish

    def signalled(self, reason):
        os.kill(os.getpid(), signal.SIGTERM if MPI.COMM_WORLD.rank == 0 else signal.SIGINT)
        return finish(self, reason)

    monkeypatch.setattr(TrainingRun, "finish", signalled)
    run = mpi_tmp_path / "run"
    code, _, err = cli(capsys, "train", small, "--output", run, "--quiet", *PLOTS)
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "max_iterations" and (run / "model.npz").exists()


@pytest.mark.parametrize("signum, code", [("SIGTERM", 143), ("SIGUSR1", 138), ("SIGINT", 130)])
def test_a_signal_before_training_is_one_line(
    capsys, small, mpi_tmp_path, monkeypatch, signum, code
):
    """SIGTERM, SIGUSR1 or SIGINT while the problem is built (before the training
    loop takes them) ends the command with 128 + the signal and one line from rank
    0 (each rank had printed "[rank r/2] interrupted" and aborted; SIGTERM hit
    PETSc's handler, a signal dump)."""
    import os
    import signal

    from pontryx.solver.app import run as run_module

    build = run_module.build_problem

    def signalled(*args, **kwargs):
        os.kill(os.getpid(), getattr(signal, signum))
        return build(*args, **kwargs)

    monkeypatch.setattr(run_module, "build_problem", signalled)
    run = mpi_tmp_path / "run"
    got, out, err = cli(capsys, "train", small, "--output", run, "--quiet")
    assert got == code and err == "interrupted\n" and not out, (got, err)


def test_oneshot_resumed_on_another_layout_says_it_drops_its_kkt_state(capsys, small, mpi_tmp_path):
    """The one-shot's KKT vector and L-BFGS pairs are bound to the layout: resumed on
    another one it continues from the controls and a warning line says so."""
    if MPI.COMM_WORLD.size != 2:
        pytest.skip("changes the layout of 2 ranks")
    run = mpi_tmp_path / "run"
    oneshot = ("--set", "training.method=oneshot", "--set", "training.max_iterations=2")
    data = ("--set", "parallel.data=2")
    code, _, err = cli(capsys, "train", small, "--output", run, "--quiet", *oneshot, *data)
    assert code in (0, 4), err
    more = ("--set", "training.max_iterations=3", "--set", "parallel={width: 2, data: 1}")
    code, out, err = cli(capsys, "train", small, "--output", run, "--resume", *oneshot[:2], *more)
    assert code in (0, 4), err
    assert "written on another layout" in out + err
    assert "written on another layout" in (run / "train.log").read_text()


def test_levels_checked_before_the_run_directory_is_touched(capsys, small, mpi_tmp_path):
    """A coarse level the layout cannot split (fewer layers than depth ranks) is
    refused by validate and by train before anything is written (with --overwrite
    it had deleted the old run); checkpointing: k > layers is k = layers, not a
    memory error; a level's share counts against --max-memory."""
    comm = MPI.COMM_WORLD
    code, _, err = cli(capsys, "validate", small, "--set", "training.checkpointing=100000000")
    assert code == 0, err
    run = mpi_tmp_path / "run"
    assert cli(capsys, "train", small, "--output", run, "--quiet")[0] == 0
    before = _snapshot(run) if comm.rank == 0 else None
    many = ("--set", "training.levels=[{layers: 2000, max_iterations: 1}]", "--max-memory", "20M")
    code, _, err = cli(capsys, "train", small, "--output", run, "--overwrite", *many)
    assert code == 2 and "--max-memory" in err and "training.levels" in err, err
    if comm.size == 2:
        split = (
            "--set",
            "training.method=oneshot",
            "--set",
            "parallel.depth=2",
            "--set",
            "training.levels=[{layers: 1, max_iterations: 1}]",
        )
        code, _, err = cli(capsys, "validate", small, *split)
        assert code == 2 and err.startswith("config error: training.levels.0.layers:"), err
        code, _, err = cli(capsys, "train", small, "--output", run, "--overwrite", *split)
        assert code == 2 and err.startswith("config error: training.levels.0.layers:"), err
    comm.Barrier()
    same = _snapshot(run) == before if comm.rank == 0 else None
    assert comm.bcast(same, root=0)


@pytest.mark.parametrize("example", ["inverse_1d.yaml", "hjb.yaml"])
def test_parallel_blas_is_checked_by_inverse_and_hjb_runs(capsys, example, monkeypatch):
    """parallel.blas names a library that must load for every kind of run (inverse and
    hjb runs accepted mkl without MKL and trained on NumPy's BLAS)."""
    from pontryx.solver.model import blas

    use = blas.use

    def without_mkl(name):
        if name == "mkl":
            raise blas.BlasUnavailable("Intel MKL not found (test)")
        return use(name)

    monkeypatch.setattr(blas, "use", without_mkl)
    config = Path(__file__).resolve().parents[1] / "examples" / example
    code, _, err = cli(capsys, "validate", config, "--set", "parallel.blas=mkl")
    assert code == 2 and err.startswith("config error: parallel.blas: Intel MKL not found"), err


LEVELS = (
    "training.levels=[{mesh: {n: 1}, layers: 1, max_iterations: 3}, "
    "{mesh: {n: 2}, max_iterations: 4}]",
    "--set",
    "output.plots=false",
    "--set",
    "output.paraview=false",
)


def test_multilevel_training_and_resume(capsys, small, mpi_tmp_path):
    """``training.levels``: the coarse levels train first (reported in the progress
    and summary.json), the configured problem starts from their prolonged controls;
    a resumed run skips the coarse levels, keeps their record (from its checkpoint)
    and ends bit-for-bit like an uninterrupted one; a bad level is one line keyed
    under training.levels."""
    a, b = mpi_tmp_path / "a", mpi_tmp_path / "b"
    code, out, err = cli(capsys, "train", small, "--output", a, "--set", *LEVELS)
    assert code == 0, err
    assert "level 1/2: N = 4, 1 layers: 3 iterations" in out and "level 2/2: N = 9" in out
    summary = json.loads((a / "summary.json").read_text())
    assert [lv["dofs"] for lv in summary["levels"]] == [4, 9] and summary["iterations"] == 6
    short = ("--set", "training.max_iterations=4")
    assert cli(capsys, "train", small, "--output", b, "--quiet", "--set", *LEVELS, *short)[0] == 0
    before = json.loads((b / "summary.json").read_text())["levels"]
    MPI.COMM_WORLD.Barrier()  # every rank has read it
    if MPI.COMM_WORLD.rank == 0:
        (b / "summary.json").unlink()  # the record lives in the checkpoint
    MPI.COMM_WORLD.Barrier()
    code, out, _ = cli(capsys, "train", small, "--output", b, "--resume", "--set", *LEVELS)
    assert code == 0 and "level 1/2" not in out
    after = json.loads((b / "summary.json").read_text())["levels"]
    assert after == before  # the levels' own time too: they were not trained again

    def untimed(levels):
        return [{k: v for k, v in lv.items() if k != "time"} for lv in levels]

    assert untimed(after) == untimed(summary["levels"])
    A, B = model_io.load_model(a / "model.npz"), model_io.load_model(b / "model.npz")
    assert all(np.array_equal(A[k], B[k]) for k in A)
    bad = "training.levels=[{mesh: {n: 0}, max_iterations: 1}]"
    code, _, err = cli(capsys, "train", small, "--output", mpi_tmp_path / "c", "--set", bad)
    assert code == 2 and err.startswith("config error: training.levels.0.mesh.n:"), err
    assert not (mpi_tmp_path / "c").exists()  # checked before anything is written


def test_resume_with_other_configuration_is_refused(capsys, small, mpi_tmp_path):
    run = mpi_tmp_path / "run"
    assert cli(capsys, "train", small, "--output", run, "--quiet")[0] == 0
    code, _, err = cli(
        capsys, "train", small, "--output", run, "--resume", "--set", "model.layers=4"
    )
    assert code == 2 and err.startswith("config error: --resume:") and "model.layers" in err


def test_resume_without_checkpoint_starts_fresh(capsys, small, mpi_tmp_path):
    """--resume into an empty (or new) directory starts a run; into a directory
    that is not a pontryx run it refuses (exit 2) and touches nothing."""
    run, foreign = mpi_tmp_path / "run", mpi_tmp_path / "foreign"
    if MPI.COMM_WORLD.rank == 0:
        run.mkdir()
        foreign.mkdir()
        (foreign / "notes.txt").write_text("mine")
    MPI.COMM_WORLD.Barrier()
    code, _, err = cli(capsys, "train", small, "--output", run, "--resume", "--quiet")
    assert code == 0, err
    assert len(read_metrics(run)) == 6
    code, _, err = cli(capsys, "train", small, "--output", foreign, "--resume", "--quiet")
    assert code == 2 and "not a pontryx run directory" in err and err.count("\n") == 1
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def _snapshot(run):
    """Every entry below ``run`` (but the lock) with its contents, taken on rank 0
    (None on the others): unchanged means byte-identical files and no entry added or
    removed."""
    if MPI.COMM_WORLD.rank != 0:
        return None
    return {
        str(p.relative_to(run)): p.read_bytes() if p.is_file() else p.is_dir()
        for p in sorted(run.rglob("*"))
        if p.name != "lock"
    }


def _unchanged(run, before) -> bool:
    """Whether ``run`` is as :func:`_snapshot` found it, the same answer on every rank
    (an assertion that failed on one rank alone would leave the others waiting)."""
    return MPI.COMM_WORLD.bcast(_snapshot(run) == before if MPI.COMM_WORLD.rank == 0 else None)


# (what is done to a finished run, extra arguments, the one line's key, text it contains)
DAMAGED_RUNS = [
    ("metrics-not-utf8", "metrics", ["--resume"], "--resume", "metrics.jsonl is not UTF-8"),
    ("metrics-bad-line", "metrics-line", ["--resume"], "--resume", "line 1 is not a JSON line"),
    # emptied or cut before the checkpoint's iteration (metrics.csv was cut back to it)
    ("metrics-emptied", "metrics-empty", ["--resume"], "--resume", "no record of iteration 1"),
    ("metrics-cut", "metrics-cut", ["--resume"], "--resume", "no record of iteration 2"),
    ("checkpoints-a-file", "checkpoints", ["--resume"], "--output", "checkpoints' is not a fold"),
    ("log-a-folder", "train.log", ["--resume"], "--output", "train.log' is not a regular"),
    ("marker-a-list", "marker-list", ["--overwrite"], "--overwrite", "not a pontryx run marker"),
    ("marker-parent", "marker-dotdot", ["--overwrite"], "--overwrite", "lists '..', not an"),
    ("no-config", "config", ["--resume", "--set", "training.alpha=0.5"], "--resume", "missing"),
    ("none-intact", "shared", ["--resume"], "--resume", "the newest, iter-00000002, is dam"),
]


def _tiny() -> str:
    """BASE for 2 iterations, a checkpoint and a trajectory record after each, no plots."""
    raw = yaml.safe_load(_with("training.max_iterations", 2))
    raw["output"] = {"plots": False, "paraview": False, "checkpoint_every": 1}
    raw["output"]["trajectory_every"] = 1
    return yaml.safe_dump(raw)


def _damage(run, what):
    if what == "metrics":
        (run / "metrics.jsonl").write_bytes(b"\x00\xff garbage\n")
    elif what == "metrics-line":  # a damaged line before the others (dropped them all)
        lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
        (run / "metrics.jsonl").write_text("not a record\n" + "".join(lines[1:]))
    elif what == "metrics-empty":
        (run / "metrics.jsonl").write_text("")
    elif what == "metrics-cut":  # in the middle of the second record
        text = (run / "metrics.jsonl").read_text()
        (run / "metrics.jsonl").write_text(text[: text.index("\n") + 20])
    elif what == "checkpoints":
        shutil.rmtree(run / "checkpoints")
        (run / "checkpoints").write_text("x")
    elif what == "train.log":
        (run / "train.log").unlink()
        (run / "train.log").mkdir()
    elif what.startswith("marker"):
        marker = run / ".pontryx" / "run.json"
        text = json.loads(marker.read_text())
        text["written"].append("..")
        marker.write_text("[1, 2]" if what == "marker-list" else json.dumps(text))
    elif what == "config":
        (run / "config.yaml").unlink()
    elif what == "shared":
        for f in (run / "checkpoints").glob("*/shared.npz"):
            f.write_bytes(b"x")


@pytest.mark.parametrize(
    ("what", "extra", "key", "needle"),
    [d[1:] for d in DAMAGED_RUNS],
    ids=[d[0] for d in DAMAGED_RUNS],
)
def test_a_damaged_run_is_refused_before_anything_is_written(
    capsys, mpi_tmp_path, what, extra, key, needle
):
    """--resume / --overwrite of a run whose own entries pontryx cannot have left
    so: one line (exit 2) naming the file, and the run directory byte-identical."""
    cfg = write(mpi_tmp_path / "tiny.yaml", _tiny())
    run = mpi_tmp_path / "run"
    assert cli(capsys, "train", cfg, "--output", run, "--quiet")[0] == 0
    if MPI.COMM_WORLD.rank == 0:
        _damage(run, what)
    MPI.COMM_WORLD.Barrier()
    before = _snapshot(run)
    code, out, err = cli(capsys, "train", cfg, "--output", run, "--quiet", *extra)
    assert code == 2 and err.count("\n") == 1 and out == "", err
    assert err.startswith(f"config error: {key}: ") and needle in err, err
    assert _unchanged(run, before)


# what a run writes inside its folders, and what is put in its way
IN_THE_WAY = [
    ("plots/curves.png", "folder"),
    ("paraview/states.bp", "file"),
    ("paraview/controls.json", "link"),
]


def _put_in_the_way(run, name, kind, saved):
    """Move pontryx's ``run/name`` to ``saved``; a folder, file or link in its place."""
    entry = run / name
    entry.rename(saved)
    if kind == "folder":
        entry.mkdir()
    elif kind == "file":
        entry.write_text("mine")
    else:
        entry.symlink_to(run / "config.yaml")


def _put_back(run, name, saved):
    entry = run / name
    if entry.is_dir() and not entry.is_symlink():
        entry.rmdir()
    else:
        entry.unlink()
    saved.rename(entry)


def test_outputs_in_the_way_inside_plots_and_paraview_are_refused_at_once(capsys, mpi_tmp_path):
    """A folder where the run writes plots/curves.png, a file where it writes
    paraview/states.bp (a folder), a link in place of paraview/controls.json:
    --resume refuses before training (one line, exit 2, naming the entry, nothing
    written); with plots and ParaView turned off they are not in the way; --overwrite
    refuses them too (moving plots/ aside deleted a user's folder at curves.png), and
    overwrites once they are gone."""
    raw = yaml.safe_load(_tiny())
    raw["output"].update(plots=True, paraview={"samples": 1, "kernel_rows": 1})
    cfg = write(mpi_tmp_path / "outputs.yaml", yaml.safe_dump(raw))
    run, saved, root = mpi_tmp_path / "run", mpi_tmp_path / "saved", MPI.COMM_WORLD.rank == 0
    assert cli(capsys, "train", cfg, "--output", run, "--quiet")[0] == 0
    more = ("--set", "training.max_iterations=3")
    for name, kind in IN_THE_WAY:
        if root:
            _put_in_the_way(run, name, kind, saved)
        MPI.COMM_WORLD.Barrier()
        before = _snapshot(run)
        code, out, err = cli(capsys, "train", cfg, "--output", run, "--quiet", "--resume", *more)
        assert code == 2 and err.count("\n") == 1 and out == "", err
        assert err.startswith("config error: --output: ") and f"{name}' is not a" in err, err
        assert f"pontryx writes its {name} there" in err, err
        assert _unchanged(run, before)  # collective: rank 0 puts it back only after this
        if root:
            _put_back(run, name, saved)
        MPI.COMM_WORLD.Barrier()
    if root:
        for k, (name, kind) in enumerate(IN_THE_WAY):
            _put_in_the_way(run, name, kind, mpi_tmp_path / f"saved{k}")
    MPI.COMM_WORLD.Barrier()
    off = ("--set", "output.plots=false", "--set", "output.paraview=false")
    code, _, err = cli(capsys, "train", cfg, "--output", run, "--quiet", "--resume", *more, *off)
    assert code == 0, err
    assert (run / "plots" / "curves.png").is_dir()  # left as it is
    before = _snapshot(run)
    code, out, err = cli(capsys, "train", cfg, "--output", run, "--quiet", "--overwrite")
    assert code == 2 and "' is not a" in err and err.count("\n") == 1, err
    assert _unchanged(run, before)
    if root:
        for k, (name, _) in enumerate(IN_THE_WAY):
            _put_back(run, name, mpi_tmp_path / f"saved{k}")
    MPI.COMM_WORLD.Barrier()
    code, _, err = cli(capsys, "train", cfg, "--output", run, "--quiet", "--overwrite")
    assert code == 0, err
    assert (run / "plots" / "curves.png").is_file() and (run / "paraview" / "states.bp").is_dir()


def test_the_last_line_lists_what_was_written(capsys, mpi_tmp_path):
    cfg = write(mpi_tmp_path / "tiny.yaml", _tiny())
    code, out, err = cli(capsys, "train", cfg, "--output", mpi_tmp_path / "run")
    assert code == 0, err
    assert out.rstrip().endswith("/run/: summary.json, metrics.csv, model.npz"), out


def test_non_finite_loss_stops_with_exit_code_3(capsys, small, mpi_tmp_path, monkeypatch):
    monkeypatch.setenv("PONTRYX_FAULT_INJECT", "nan:3")
    run = mpi_tmp_path / "run"
    code, _, err = cli(capsys, "train", small, "--output", run, "--quiet")
    assert code == 3
    assert "non-finite loss at iteration 3" in err and "checkpoint is iteration 2" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["iter-00000002"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "non-finite" and summary["exit_code"] == 3
    assert summary["reason"] == "non-finite loss at iteration 3"
    assert summary["message"] == err.strip().removeprefix("error: ")
    assert summary["last_checkpoint"] == 2 and summary["ranks"] == MPI.COMM_WORLD.size
    for key in ("iterations", "method", "time", "layout", "dofs", "versions", "train", "test"):
        assert key in summary, key
    # the run can be resumed from the last good checkpoint once the cause is gone
    monkeypatch.delenv("PONTRYX_FAULT_INJECT")
    code, _, err = cli(capsys, "train", small, "--output", run, "--quiet", "--resume")
    assert code == 0, err
    assert [r["iteration"] for r in read_metrics(run)] == list(range(1, 7))


DIVERGING_KSP = "{ksp_type: cg, pc_type: none, ksp_max_it: 1}"


@pytest.mark.parametrize(
    "config,settings,solve",
    [
        ("small", ["training.method=lmvm"], "the width-diffusion solve"),
        ("small", ["training.method=adam"], "the width-diffusion solve"),
        ("inverse_1d", [], "the inverse problem's state solve"),
    ],
)
def test_an_inner_solve_that_does_not_converge_stops_with_exit_code_4(
    capsys, small, mpi_tmp_path, config, settings, solve
):
    """An iterative KSP that runs out of iterations: the width diffusion's (inside
    TAO's objective, or called by adam directly; the run directory then has a
    not_converged summary), an inverse run's PDE (while it makes its data, before
    the run directory exists): one line naming the solve, exit code 4."""
    run = mpi_tmp_path / "run"
    inverse = config == "inverse_1d"
    prefix = "pontryx_pde" if inverse else "pontryx_diffusion"
    path = ROOT / "examples" / "inverse_1d.yaml" if inverse else small
    sets = [*settings, f"petsc={{{prefix}: {DIVERGING_KSP}}}"]
    if not inverse:  # with ε > 0 the width diffusion is solved
        sets.append("model.epsilon=0.1")
    args = [a for key in sets for a in ("--set", key)]
    code, _, err = cli(capsys, "train", path, "--output", run, "--quiet", *args)
    assert code == 4 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert (
        f"error: {solve} (options prefix {prefix}_) did not converge: KSP DIVERGED_MAX_IT "
        "after 1 iterations" in err
    )
    if inverse:
        return
    assert "; training stopped, no checkpoint was written" in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "not_converged" and summary["exit_code"] == 4
    assert summary["reason"].startswith(f"{solve} (options prefix")
    assert summary["message"] == err.strip().removeprefix("error: ")


def test_diverging_method_stops_with_exit_code_3(capsys, small, mpi_tmp_path):
    run = mpi_tmp_path / "run"
    code, _, err = cli(
        capsys,
        "train",
        small,
        "--output",
        run,
        "--quiet",
        "--set",
        "training.method=sgd",
        "--set",
        "training.options={learning_rate: 1.0e+300}",
    )
    assert code == 3 and "non-finite" in err and "Traceback" not in err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "non-finite" and summary["exit_code"] == 3
    # sgd went back to θ₀, the last iterate with a finite loss: its scores are θ₀'s
    start = mpi_tmp_path / "start"
    code, _, err = cli(
        capsys, "train", small, "--output", start, "--quiet", "--set", "training.method=sgd",
        "--set", "training.max_iterations=0",
    )  # fmt: skip
    assert code == 0, err
    initial = json.loads((start / "summary.json").read_text())
    assert summary["iterations"] == 0
    assert summary["train"] == pytest.approx(initial["train"])
    assert summary["test"] == pytest.approx(initial["test"])


@pytest.mark.serial  # the fault is raised on rank 0 alone
def test_an_overwrite_that_fails_before_its_first_iteration_keeps_the_old_run(
    capsys, small, tmp_path, monkeypatch
):
    """An internal error before the new run's first iteration is logged (here an
    injected one, in the first iteration) puts the overwritten run back byte for
    byte; once an iteration is logged the old run is gone (README: an overwrite
    deletes the old run once the new one has started)."""
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", small, "--output", run, "--quiet")
    assert code == 0, err
    before = _snapshot(run)
    monkeypatch.setenv("PONTRYX_FAULT_INJECT", "0:1")
    code, _, err = cli(capsys, "train", small, "--output", run, "--quiet", "--overwrite")
    assert code == 1 and "injected fault" in err
    assert _snapshot(run) == before
    # a non-finite J at θ₀ (exit 3) has no result either: the old run back too
    monkeypatch.delenv("PONTRYX_FAULT_INJECT")
    args = ("--quiet", "--overwrite", "--set", "model.T=1e308")
    code, _, err = cli(capsys, "train", small, "--output", run, *args)
    assert code == 3 and "non-finite" in err and _snapshot(run) == before, err
    monkeypatch.setenv("PONTRYX_FAULT_INJECT", "0:2")
    code, _, err = cli(capsys, "train", small, "--output", run, "--quiet", "--overwrite")
    assert code == 1 and "injected fault" in err
    assert [r["iteration"] for r in read_metrics(run)] == [1]
    assert not (run / "summary.json").exists() and not (run / ".pontryx" / "replaced").exists()


def test_bad_fault_hook_is_bad_input(capsys, small, mpi_tmp_path, monkeypatch):
    monkeypatch.setenv("PONTRYX_FAULT_INJECT", "soon")
    code, _, err = cli(capsys, "train", small, "--output", mpi_tmp_path / "r")
    assert code == 2 and "PONTRYX_FAULT_INJECT" in err


# ------------------------------------------------------------ bad input ---

BASE = {
    "mesh": {"kind": "unit_square", "n": 2},
    "model": {"layers": 2},
    "data": {"name": "ellipses", "n_train": 8, "n_test": 8},
    "training": {"max_iterations": 1},
}


def _with(path: str, value):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    node = raw
    *head, last = path.split(".")
    for key in head:
        node = node.setdefault(key, {})
    node[last] = value
    return yaml.safe_dump(raw)


def _without(section):
    return yaml.safe_dump({k: v for k, v in BASE.items() if k != section})


# (id, YAML text, extra command-line arguments, text the one-line message must contain)
BAD = [
    ("T-negative", _with("model.T", -1), [], "model.T: expected a number > 0, got -1"),
    ("T-string", _with("model.T", "deep"), [], "model.T: expected a number"),
    ("layers-zero", _with("model.layers", 0), [], "model.layers"),
    ("layers-float", _with("model.layers", 2.5), [], "model.layers: expected an integer"),
    ("width-float", _with("parallel.width", 1.0), [], "expected an integer, got 1.0"),
    (
        "noise-smoothness-off",
        _with("model.noise", {"smoothness": 33}),
        [],
        "model.noise.smoothness: expected an integer 1 ≤ β ≤ 32, got 33",
    ),
    (
        "level-too-large",  # the coarse levels count in the memory estimate
        _with("training.levels", [{"mesh": {"n": 100000}, "max_iterations": 1}]),
        [],
        "use coarser levels or fewer layers in training.levels",
    ),
    ("epsilon-negative", _with("model.epsilon", -0.1), [], "model.epsilon"),
    (  # the memory estimate's area overflowed (an OverflowError)
        "disk-radius-huge",
        _with("mesh", {"kind": "disk", "radius": 1e308}),
        [],
        "mesh.radius: expected a length from 1e-12 to 1e+50",
    ),
    (  # overflowed M_L + Δt ε A: MUMPS failed in the first layer, after an overwrite
        "epsilon-overflows",
        _with("model.epsilon", 1e308),
        [],
        "model.epsilon: expected Δt ε ‖A‖_∞ ≤ 1e+300",
    ),
    ("activation", _with("model.activation", "relu"), [], "model.activation"),
    ("scheme", _with("model.scheme", "dopri5"), [], "model.scheme"),
    ("kernel-type", _with("model.kernel", {"type": "gaussian"}), [], "model.kernel.type"),
    ("lowrank-no-rank", _with("model.kernel", {"type": "lowrank"}), [], "model.kernel.rank"),
    (
        "rank-above-dofs",
        _with("model.kernel", {"type": "lowrank", "rank": 100}),
        [],
        "model.kernel.rank: expected 1 ≤ rank ≤ 9",
    ),
    ("rank-on-dense", _with("model.kernel", {"type": "dense", "rank": 2}), [], "model.kernel.rank"),
    ("degree", _with("model.degree", 7), [], "model.degree"),
    ("degree-float", _with("model.degree", 2.0), [], "model.degree"),  # as layers: 2.0
    ("gain-removed", _with("model.init", {"gain": 1}), [], "model.init.gain: removed"),
    ("variance-negative", _with("model.init", {"variance": -1}), [], "model.init.variance"),
    ("length-zero", _with("model.init", {"correlation_length": 0}), [], "model.init.correlation"),
    ("smoothness-zero", _with("model.init", {"smoothness": 0}), [], "model.init.smoothness"),
    ("tau-negative", _with("model.init", {"depth_correlation": -1}), [], "model.init.depth"),
    ("levels-not-list", _with("training.levels", 2), [], "training.levels"),
    (
        "level-mesh-key",
        _with("training.levels", [{"mesh": {"h": 0.1}, "max_iterations": 1}]),
        [],
        "training.levels.0.mesh.h: unknown key",
    ),
    (  # another kind: not the fine mesh's keys (its cell: was "unknown key cell")
        "level-mesh-other-kind",
        _with("training.levels", [{"mesh": {"kind": "interval", "n": 2}, "max_iterations": 1}]),
        [],
        "training.levels.0.mesh: expected a mesh of the fine mesh's dimension (2D cells",
    ),
    ("level-layers", _with("training.levels", [{"layers": 0}]), [], "training.levels.0.layers"),
    ("level-iterations", _with("training.levels", [{}]), [], "training.levels.0.max_iterations"),
    (  # a key of the whole configuration that fails on a level's mesh: named in the
        # message (was keyed training.levels.0.model.kernel.rank, a key that is not)
        "level-rank",
        _with("training.levels", [{"mesh": {"n": 1}, "max_iterations": 1}]),
        ["--set", "model.kernel={type: lowrank, rank: 9}"],
        "training.levels.0: model.kernel.rank: expected 1 ≤ rank ≤ 4 (the number of dofs), "
        "got 9 (on this coarse level)",
    ),
    (  # a check across sections on a level (a pydantic traceback)
        "level-dt-subnormal",
        _with("training.levels", [{"mesh": {"n": 2}, "layers": 100, "max_iterations": 1}]),
        ["--set", "model.T=1e-307"],
        "training.levels.0: model.T: expected T/layers = Δt ≥ 2.23e-308",
    ),
    ("seed-negative", _with("model.init", {"seed": -1}), [], "model.init.seed"),
    ("image-embedding", _with("model.embedding", {"type": "image"}), [], "model.embedding.type"),
    ("lumping", _with("model.lumping", "diagonal"), [], "model.lumping"),
    (
        "verlet-diffusion",
        _with("model.scheme", "verlet").replace("layers: 2", "layers: 2\n  epsilon: 0.1"),
        [],
        "model.epsilon",
    ),
    (
        "rk4-diffusion",
        _with("model.scheme", "rk4").replace("layers: 2", "layers: 2\n  epsilon: 0.1"),
        [],
        "model.epsilon: the rk4 scheme needs epsilon = 0",
    ),
    ("model-not-mapping", _with("model", "big"), [], "model: expected a mapping"),
    ("unknown-section", _with("modle", {}), [], "modle: unknown key"),
    ("unknown-model-key", _with("model.depth", 3), [], "model.depth: unknown key"),
    ("method", _with("training.method", "newton"), [], "training.method: unknown method"),
    ("max-iterations", _with("training.max_iterations", -1), [], "training.max_iterations"),
    ("alpha-string", _with("training.alpha", "small"), [], "training.alpha: expected a number"),
    ("checkpointing", _with("training.checkpointing", "sometimes"), [], "training.checkpointing"),
    (
        "reverse-needs-verlet",
        _with("training.checkpointing", "reverse"),
        [],
        "training.checkpointing: 'reverse' needs a reversible scheme",
    ),
    ("method-option", _with("training.options", {"gatoll": 1}), [], "training.options.gatoll"),
    ("bounds-name", _with("training.bounds", {"X": 1}), [], "training.bounds.X: not a trainable"),
    ("bounds-negative", _with("training.bounds", {"W": -1}), [], "training.bounds.W: expected"),
    ("bounds-order", _with("training.bounds", {"b": [1, 0]}), [], "training.bounds.b: expected"),
    ("bounds-list", _with("training.bounds", [1, 2]), [], "training.bounds: expected a mapping"),
    (
        "bounds-oneshot",
        _with("training", {"method": "oneshot", "bounds": {"W": 1}}),
        [],
        "training.bounds: method 'oneshot' does not take bounds",
    ),
    ("options-not-mapping", _with("training.options", [1, 2]), [], "training.options"),
    ("width-too-large", _with("parallel.width", 4), [], "parallel.width: expected at most"),
    ("width-times-data", _with("parallel", {"width": 2, "data": 2}), [], "parallel: width × data"),
    ("no-data", _without("data"), [], "data: required key is missing"),
    ("data-name", _with("data", {"name": "mnist"}), [], "data.name"),
    ("data-key", _with("data", {"name": "ellipses", "n_trian": 5}), [], "data.n_trian"),
    (
        "data-file-missing",
        _with("data", {"name": "file", "path": "nope.csv"}),
        [],
        "data.path: file 'nope.csv' does not exist",
    ),
    ("data-n-train", _with("data", {"name": "ellipses", "n_train": -5}), [], "data.n_train"),
    ("mesh-kind", _with("mesh", {"kind": "torus"}), [], "mesh.kind"),
    ("mesh-n", _with("mesh", {"kind": "unit_square", "n": -3}), [], "mesh.n"),
    ("mesh-key", _with("mesh", {"kind": "unit_square", "radius": 1}), [], "mesh.radius"),
    ("mesh-file-missing", _with("mesh", {"kind": "file", "path": "nope.msh"}), [], "mesh.path"),
    (
        "petsc-list",
        _with("petsc", {"pontryx_tao": {"type": ["lmvm"]}}),
        [],
        "petsc.pontryx_tao.type",
    ),
    ("checkpoint-every", _with("output.checkpoint_every", 0), [], "output.checkpoint_every"),
    ("directory-empty", _with("output.directory", ""), [], "output.directory: expected a dir"),
    ("paraview-samples", _with("output.paraview", {"samples": -1}), [], "output.paraview.samples"),
    ("plots-string", _with("output.plots", "yes"), [], "output.plots: expected true or false"),
    ("test-every", _with("training.test_every", -1), [], "training.test_every"),
    ("yaml-syntax", "model:\n  T: 1\n   layers: 2\n", [], "YAML syntax error at line 3"),
    ("yaml-list", "- mesh\n- model\n", [], "top level"),
    ("yaml-empty", "# nothing here\n", [], "is empty"),
    (
        "set-no-equals",
        yaml.safe_dump(BASE),
        ["--set", "model.layers"],
        "--set: expected KEY.PATH=VALUE",
    ),
    ("set-bad-value", yaml.safe_dump(BASE), ["--set", "model.layers=many"], "model.layers"),
    (
        "set-unknown-key",
        yaml.safe_dump(BASE),
        ["--set", "model.width=3"],
        "model.width: unknown key",
    ),
    ("missing-file", None, [], "not found"),
]


@pytest.mark.parametrize(("text", "extra", "needle"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_exit_2_one_line_no_run_directory(capsys, mpi_tmp_path, text, extra, needle):
    cfg = mpi_tmp_path / "bad.yaml"
    if text is not None:
        write(cfg, text)
    run = mpi_tmp_path / "run"
    code, _, err = cli(capsys, "train", cfg, "--output", run, *extra)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("config error: ") and needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert not run.exists()
    assert len(BAD) >= 30


def test_run_directory_errors_name_where_it_was_given(capsys, small, mpi_tmp_path):
    """Keyed output.directory where the configuration gives it (was --output); a
    name too long shown in 60 characters, and for evaluate and analyze exit 2
    keyed by the command (was exit 5, "cannot write the run directory", whole)."""
    code, _, err = cli(capsys, "train", small, "--set", "output.directory=/proc/pontryx-x")
    assert code == 2 and err.startswith("config error: output.directory: cannot create"), err
    long = mpi_tmp_path / ("q" * 300)
    for command in ("evaluate", "analyze"):
        code, _, err = cli(capsys, command, long)
        assert code == 2 and err.startswith(f"config error: {command}: cannot use '"), err
        assert err.count("\n") == 1 and "q" * 61 not in err, err
    code, _, err = cli(capsys, "train", small, "--output", long)
    assert code == 2 and err.startswith("config error: --output: ") and "q" * 61 not in err
    code, _, err = cli(capsys, "check-gradient", small, "--h0", "q" * 5000)
    assert code == 2 and "q" * 61 not in err and err.count("\n") == 1, err


def test_the_directory_key_is_the_callers(small, mpi_tmp_path):
    """train() keys run-directory errors by its ``directory_key`` (default --output):
    the key had been module state, left by the last command line (a library call
    after ``pontryx train`` with output.directory was keyed output.directory)."""
    from pontryx.meshes import InputError
    from pontryx.solver.app.train import train
    from pontryx.solver.config import load_config

    config = load_config(small, ranks=MPI.COMM_WORLD.size)
    for given in ({}, {"directory_key": "output.directory"}):
        with pytest.raises(InputError) as e:
            train(config, Path("/proc/pontryx-x"), quiet=True, **given)
        assert e.value.key == given.get("directory_key", "--output")


def test_status_of_a_solve_to_tolerance():
    """The one-shot KKT solve that runs out of iterations has not converged (exit 4);
    an iterative method that does is at max_iterations (exit 0)."""
    from pontryx.solver.app.run import status_of
    from pontryx.solver.training import method_class

    assert status_of("max_iterations", method_class("oneshot")) == "not_converged"
    assert status_of("max_iterations", method_class("lmvm")) == "max_iterations"
    assert status_of("converged: CONVERGED_GATOL", method_class("oneshot")) == "converged"
    assert status_of("stopped: DIVERGED_LS_FAILURE") == "not_converged"


@pytest.mark.parallel
def test_summary_says_how_the_width_ranks_exchanged(capsys, small, mpi_tmp_path):
    for exchange in ("shared", "mpi"):
        run = mpi_tmp_path / exchange
        code, _, err = cli(
            capsys, "train", small, "--output", run, "--quiet",
            "--set", "training.max_iterations=1", "--set", f"parallel.exchange={exchange}",
        )  # fmt: skip
        assert code == 0, err
        summary = json.loads((run / "summary.json").read_text())
        assert summary["exchange"] == exchange and summary["layout"]["width"] == 2


def test_non_finite_in_a_coarse_level_names_the_level(capsys, small, mpi_tmp_path):
    """A non-finite stop inside training.levels named "iteration 10", an iteration
    the run (0 iterations in summary.json) does not have."""
    run = mpi_tmp_path / "run"
    sets = [
        "training.levels=[{mesh: {n: 2}, max_iterations: 30}]",
        "training.method=sgd",
        "training.options={learning_rate: 1.0e3}",
        "model.activation=softplus",
    ]
    args = [a for s in sets for a in ("--set", s)]
    code, _, err = cli(capsys, "train", small, "--output", run, "--quiet", *args)
    assert code == 3 and err.count("\n") == 1, err
    assert "of coarse level 1/1 (training.levels)" in err, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "non-finite" and summary["iterations"] == 0
    assert "of coarse level 1/1" in summary["reason"]
