"""Limits instead of exhaustion, and inputs that are refused: the memory estimate
(solver/app/memory.py) refuses runs that would not fit before anything large
exists; YAML input is bounded (size, nesting, aliases) and strict (duplicate
keys); data files with one class or non-integer labels are refused."""

import re
import time
import zipfile
from pathlib import Path

from mpi4py import MPI

import numpy as np
import pytest
from test_cli import SMALL, cli, write

from pontryx.meshes import InputError
from pontryx.solver.app.memory import dofs, estimate, parse_size
from pontryx.solver.config import parse_yaml, validate_config

pytestmark = pytest.mark.cli


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.layers=1000000000", "config error: memory: this run needs about"),
        ("mesh.n=100000", "config error: memory: this run needs about"),
        ("mesh.n=140", "config error: memory: this run needs about"),
        # the sample count in integers (a float made it 9223372036854775808)
        (f"data.n_train={2**63 - 1}", f"{2**63 - 1} samples per rank"),
    ],
)
def test_runs_that_would_not_fit_are_refused_at_once(capsys, mpi_tmp_path, override, needle):
    config = write(mpi_tmp_path / "big.yaml", SMALL)
    start = time.monotonic()
    code, _, err = cli(capsys, "train", config, "--output", mpi_tmp_path / "r", "--set", override)
    assert code == 2 and err.startswith("config error: memory:") and needle in err, err
    assert (
        err.count("\n") == 1 and time.monotonic() - start < 20 and not (mpi_tmp_path / "r").exists()
    )


@pytest.mark.parametrize("override", ["mesh.n=1000000000", "model.layers=1000000000"])
def test_validate_refuses_what_train_refuses(capsys, mpi_tmp_path, override):
    """pontryx validate builds the problem, so it checks the memory first, as train does
    (it ended in std::bad_alloc / vector::reserve from the mesh builder)."""
    config = write(mpi_tmp_path / "big.yaml", SMALL)
    code, _, err = cli(capsys, "validate", config, "--set", override)
    assert code == 2 and err.startswith("config error: memory: this run needs about"), err
    assert err.count("\n") == 1
    if override.startswith("mesh"):
        assert "e+" in err  # a huge size in powers of ten


def test_check_gradient_checks_the_memory_first(capsys, mpi_tmp_path):
    config = write(mpi_tmp_path / "big.yaml", SMALL)
    code, _, err = cli(capsys, "check-gradient", config, "--set", "mesh.n=1000000000")
    assert code == 2 and err.startswith("config error: memory: this run needs about"), err


@pytest.mark.parametrize(
    "override, key",
    [  # the memory estimate reads them before the builders do: tracebacks until mended
        ("mesh.n=abc", "mesh.n"),
        ("mesh.n=null", "mesh.n"),
        ("mesh.n=[3]", "mesh.n"),
        ("mesh.n=1.5", "mesh.n"),
        ("mesh={kind: disk, h: 0}", "mesh.h"),
        ("data.n_train=abc", "data.n_train"),
        ("data.n_train=0", "data.n_train"),
        ("data.name=nope", "data.name"),
        ("data.n_test=100000000000", "memory"),  # a MemoryError in the loader
        ("model.kernel.type=[1, 2]", "model.kernel.type"),  # unhashable type: 'list'
        ("model.degree=true", "model.degree"),  # was accepted as 1
        ("model.init.smoothness=100000000000", "model.init.smoothness"),  # OverflowError
        ("model.init.correlation_length=1e-300", "model.init.correlation_length"),
        ("model.T=" + "1" * 5000, "model.T"),  # more digits than int() reads: a ValueError
    ],
)
def test_values_the_estimate_reads_are_checked_first(capsys, mpi_tmp_path, override, key):
    config = write(mpi_tmp_path / "s.yaml", SMALL)
    code, _, err = cli(capsys, "validate", config, "--set", override)
    assert code == 2 and err.startswith(f"config error: {key}: ") and err.count("\n") == 1, err
    if key == "memory":
        assert "data 93" in err or "use fewer samples (data.n_train, data.n_test)" in err


@pytest.mark.parametrize("damage", ["garbage", "truncated", "damaged", "bytes"])
def test_data_files_the_estimate_counts_are_read_by_the_loader(capsys, mpi_tmp_path, damage):
    """The estimate counts a data file's rows; a file that is not an NPZ archive is
    left to the loader's one-line error (it was a BadZipFile traceback)."""
    path = mpi_tmp_path / "d.npz"
    if MPI.COMM_WORLD.rank == 0:
        np.savez_compressed(path, X=np.ones((300, 2)), y=np.arange(300) % 2)
        whole = bytearray(path.read_bytes())
        if damage == "damaged":
            whole[60:200] = bytes(b ^ 0x55 for b in whole[60:200])
        elif damage == "bytes":
            with zipfile.ZipFile(path, "w") as z:
                z.writestr("X.npy", b"not an array")
                z.writestr("y.npy", b"0 1")
            whole = path.read_bytes()
        data = {"garbage": np.random.default_rng(0).bytes(500), "truncated": whole[:300]}
        path.write_bytes(data.get(damage, bytes(whole)))
    config = write(
        mpi_tmp_path / "c.yaml",
        SMALL.replace(
            "data: {name: ellipses, n_train: 24, n_test: 12}", f"data: {{name: file, path: {path}}}"
        ),
    )
    code, _, err = cli(capsys, "train", config, "--output", mpi_tmp_path / "r")
    assert code == 2 and err.startswith("config error: data.path: cannot read "), err
    assert str(path) in err and err.count("\n") == 1
    assert not (mpi_tmp_path / "r").exists()


INVERSE = Path(__file__).resolve().parents[1] / "examples" / "inverse_1d.yaml"


@pytest.mark.parametrize(
    "observations",
    [
        "{kind: points, points: 60, refine: 40}",  # 2⁴⁰ times the cells: ran until killed
        "{kind: points, points: 10000000000}",  # 10¹⁰ points: a MemoryError
        "{kind: points, points: 60, refine: 100000000000}",  # 2^(10¹¹): an OverflowError
    ],
)
def test_inverse_data_that_would_not_fit_are_refused(capsys, observations):
    code, _, err = cli(capsys, "validate", INVERSE, "--set", f"inverse.observations={observations}")
    assert code == 2 and err.startswith("config error: memory: this run needs about"), err
    assert "pde" in err and "fewer observation points or refinements" in err
    assert err.count("\n") == 1


def test_max_memory(capsys, mpi_tmp_path):
    config = write(mpi_tmp_path / "s.yaml", SMALL)
    code, _, err = cli(capsys, "train", config, "--output", mpi_tmp_path / "r",
                       "--max-memory", "10k")  # fmt: skip
    assert code == 2 and err.startswith("config error: --max-memory: this run needs about")
    code, _, err = cli(capsys, "train", config, "--output", mpi_tmp_path / "r",
                       "--max-memory", "lots")  # fmt: skip
    assert code == 2 and "expected a size such as 8G" in err
    for value in ("-5G", "-1", "-.5", "-inf"):  # argparse had said "expected one argument"
        code, _, err = cli(capsys, "train", config, "--output", mpi_tmp_path / "r",
                           "--max-memory", value)  # fmt: skip
        assert code == 2 and f"expected a size such as 8G, 512M or 1e9 bytes, got '{value}'" in err
    code, _, err = cli(capsys, "train", config, "--output", mpi_tmp_path / "r", "--quiet",
                       "--max-memory", "2G")  # fmt: skip
    assert code == 0, err


def test_dof_prediction_and_parse_size():
    assert dofs({"kind": "unit_square", "n": 8}, 1) == 81
    assert dofs({"kind": "unit_square", "n": 8}, 2) == 289
    assert dofs({"kind": "box", "n": [2, 3, 4]}, 1) == 60
    assert dofs({"kind": "interval", "n": 32}, 3) == 97
    assert 85 <= dofs({"kind": "disk", "h": 0.25}, 1) < 200  # gmsh makes 85 vertices
    assert parse_size("8G") == 8 * 2**30 and parse_size("1.5m") == 1.5 * 2**20
    assert parse_size("1e9") == 1e9 and parse_size("2E3M") == 2000 * 2**20  # as its message says
    for bad in ("-3G", "0e5", "1e999", "1e-400", "e9"):
        with pytest.raises(InputError):
            parse_size(bad)


@pytest.mark.parametrize("n", [3, [2, 5]])
@pytest.mark.parametrize("degree", [1, 2, 3])
@pytest.mark.parametrize("diagonal", ["right", "crossed"])
def test_dof_prediction_is_exact_for_every_diagonal(n, degree, diagonal):
    """crossed diagonals put a vertex at each square's centre: the estimate counts it."""
    import dolfinx.fem

    from pontryx.meshes import create_mesh

    description = {"kind": "unit_square", "n": n, "diagonal": diagonal}
    V = dolfinx.fem.functionspace(create_mesh(description, MPI.COMM_WORLD), ("Lagrange", degree))
    assert dofs(description, degree) == V.dofmap.index_map.size_global


def test_estimate_is_an_upper_range_figure():
    """Against what the problem allocates (controls and one gradient's states): the
    estimate is above and within a factor of a few of it."""
    from mpi4py import MPI

    from pontryx.solver.app.problem import build_problem

    raw = {"mesh": {"kind": "unit_square", "n": 6}, "data": {"name": "ellipses", "n_train": 200},
           "model": {"layers": 6}}  # fmt: skip
    config = validate_config(raw, ranks=MPI.COMM_WORLD.size)
    problem = build_problem(config, MPI.COMM_WORLD)
    controls = sum(v.nbytes for v in problem.controls.values())
    est = estimate(config, MPI.COMM_WORLD.size, copies=1.0)
    assert est["N"] == problem.space.N
    assert controls <= est["bytes"]["controls"] <= 4 * controls
    problem.destroy()


def test_estimate_counts_the_sample_splits_gradients(monkeypatch):
    """With T BLAS threads and the sample split (one width rank, dense, ε = 0) the
    controls part counts 2(T − 1) copies more (the chunks' gradients and Hessian
    actions); with width ranks it does not."""
    from pontryx.solver.model import threads

    raw = {"mesh": {"kind": "unit_square", "n": 6}, "data": {"name": "ellipses", "n_train": 200},
           "parallel": {"width": 1}}  # fmt: skip
    one = estimate(validate_config(raw, ranks=2), 2, copies=4.0)["bytes"]["controls"]
    monkeypatch.setattr(threads, "blas_threads", lambda: 3)
    three = estimate(validate_config(raw, ranks=2), 2, copies=4.0)["bytes"]["controls"]
    assert three == pytest.approx(one * 8 / 4, rel=1e-6)
    raw["parallel"] = {"width": 1, "threads": "rows"}
    assert estimate(validate_config(raw, ranks=2), 2, copies=4.0)["bytes"]["controls"] == one
    raw["parallel"] = {"width": 2}
    wide = validate_config(raw, ranks=2)
    assert estimate(wide, 2, copies=4.0)["bytes"]["controls"] < three


@pytest.mark.parametrize(
    "text, needle",
    [
        ("model: {layers: 2, layers: 3}", "duplicate key 'layers'"),
        (
            "a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
            + "".join(
                f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefg", "bcdefgh")
            )
            + "model: {layers: *h}",
            "values (after expanding aliases)",
        ),
        ("model: " + "[" * 40 + "]" * 40, "nested more than"),
        ("model: " + "[" * 50000 + "]" * 50000, "nested more than"),
        ("x: '" + "a" * (1 << 20) + "'", "larger than"),
        ("model: {layers: " + "1" * 5000 + "}", "model.layers: an integer of 5000 digits"),
        ("model: {layers: 2}\x00", "unacceptable character #x0000"),
    ],
    ids=["duplicate", "alias-bomb", "nesting", "deep-nesting", "size", "digits", "nul"],
)
def test_yaml_hazards_are_one_line(text, needle):
    start = time.monotonic()
    with pytest.raises(InputError, match=re.escape(needle)) as e:
        parse_yaml(text, "c.yaml")
    assert "\n" not in str(e.value) and len(str(e.value)) < 300
    assert time.monotonic() - start < 5


def test_alias_bomb_in_a_config_file_is_refused_quickly(capsys, mpi_tmp_path):
    bomb = "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefg", "bcdefgh")
    )
    config = write(mpi_tmp_path / "bomb.yaml", "a: &a [lol, lol]\n" + bomb + SMALL)
    start = time.monotonic()
    code, _, err = cli(capsys, "validate", config)
    assert code == 2 and "after expanding aliases" in err and time.monotonic() - start < 10


@pytest.mark.parametrize(
    "rows, needle",
    [
        ("x,y,label\n1,2,a\n3,4,a\n5,6,a\n7,8,a\n", "only one class"),
        ("x,y,label\n1,2,0.5\n3,4,1.5\n5,6,0.5\n7,8,1.5\n", "class label 0.5 is not an integer"),
    ],
)
def test_bad_class_labels_are_refused(capsys, mpi_tmp_path, rows, needle):
    data = write(mpi_tmp_path / "d.csv", rows)
    config = write(
        mpi_tmp_path / "c.yaml",
        SMALL.replace(
            "data: {name: ellipses, n_train: 24, n_test: 12}", f"data: {{name: file, path: {data}}}"
        ),
    )
    code, _, err = cli(capsys, "validate", config)
    assert code == 2 and needle in err and err.startswith("config error: data.target"), err


def test_npz_and_csv_labels_agree():
    """Non-integer numeric labels are refused in NPZ files too (the same rule)."""
    from pontryx.solver.data.files import _encode_labels

    with pytest.raises(InputError, match="not an integer"):
        _encode_labels([np.array([0.5, 1.5]), np.array([0.5])])


def test_sizes_are_printed_in_their_unit():
    from pontryx.solver.app.memory import format_bytes

    assert format_bytes(5) == "5 B" and format_bytes(2048) == "2.0 KiB"
    assert format_bytes(5 * 1024**3) == "5.0 GiB" and format_bytes(2 * 1024**4) == "2.0 TiB"
    assert format_bytes(3 * 1024**4 * 10**6) == "3.00e+06 TiB"


@pytest.mark.parametrize(
    "method, option, value, want",
    [  # tracebacks (a str compared with an int, float('abc'), .items() of an int) until mended
        ("lmvm", "gatol", "abc", "expected a finite number, got 'abc'"),
        ("lmvm", "gatol", "null", "expected a finite number, got null"),
        ("ntr", "krylov_max_it", "1e400", "expected an integer, got inf"),
        ("ntr", "krylov_max_it", "100000000000", "expected an integer in 1 … 2147483647"),
        ("cg", "petsc_options", "[1, 2]", "expected a mapping, got a list [1, 2]"),
        ("adam", "beta1", "''", "expected a finite number, got ''"),
        ("sgd", "momentum", "{a: 1}", "expected a finite number, got a mapping"),
        ("langevin", "temperature", "abc", "expected a finite number, got 'abc'"),
        ("emsa", "step_control", "1", "expected true or false, got 1"),
        ("lbfgs", "history", "2.5", "expected an integer, got 2.5"),
        ("oneshot", "restoration", "abc", "expected true or false, got 'abc'"),
    ],
)
def test_method_options_of_another_kind_are_refused(capsys, mpi_tmp_path, method, option,
                                                    value, want):  # fmt: skip
    config = write(mpi_tmp_path / "s.yaml", SMALL)
    sets = ["--set", f"training.method={method}", "--set", f"training.options.{option}={value}"]
    code, _, err = cli(capsys, "validate", config, *sets)
    assert code == 2 and err.startswith(f"config error: training.options.{option}: "), err
    assert want in err and err.count("\n") == 1, err


@pytest.mark.parametrize(
    "sets",
    [
        ["mesh={kind: disk, h: 5e-1, radius: 1e0}", "data.noise=1e-2"],
        ["mesh={kind: rectangle, n: 2, lower: [-1e0, -1e0], upper: [1e0, 2e0]}"],
        ["mesh={kind: box, n: 2, cell: hexahedron}", "model.kernel={type: conv, length: 1e-1}"],
    ],
    ids=["disk", "rectangle", "conv"],
)
def test_exponent_numbers_reach_the_builders(capsys, mpi_tmp_path, sets):
    """``1e-1`` (a string to YAML 1.1) is a number in the mesh and data keys the
    builders check and in the kernel's options too, not only in the schema's."""
    config = write(mpi_tmp_path / "s.yaml", SMALL)
    code, out, err = cli(capsys, "validate", config, *(a for s in sets for a in ("--set", s)))
    assert code == 0 and "valid" in out, err


@pytest.mark.parametrize(
    "layers, want", [(1, "at most 1 depth rank ("), (2, "at most 2 depth ranks")]
)
def test_more_depth_ranks_than_layers(layers, want):
    """The one-shot's depth blocks: one layer a rank at least (grammatical for 1)."""
    from types import SimpleNamespace

    from pontryx.solver.training.kkt import DepthBlocks

    with pytest.raises(InputError, match=re.escape(want)) as e:
        DepthBlocks(SimpleNamespace(size=3, rank=0), layers)
    assert e.value.key == "depth" and e.value.message.endswith("(one layer each), got 3")


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.T=1e-320", "model.T"),  # Δt subnormal: non-finite loss, or 0 and a traceback
        ("training.max_iterations=1000000000000000000000000000000", "training.max_iterations"),
        ("output.checkpoint_every=3000000000", "output.checkpoint_every"),  # TAO: OverflowError
    ],
)
def test_absurd_counts_and_steps_are_refused_before_the_run(capsys, mpi_tmp_path, override, key):
    """Values that overflowed (a traceback after the run directory was made, or a
    non-finite loss at iteration 0): one line, exit 2, nothing written."""
    config = write(mpi_tmp_path / "s.yaml", SMALL)
    code, _, err = cli(capsys, "train", config, "--output", mpi_tmp_path / "r", "--set", override)
    assert code == 2 and err.startswith(f"config error: {key}: ") and err.count("\n") == 1
    assert f"{key}: expected" in err or f"{key}: an integer beyond 64 bits" in err, err
    assert not (mpi_tmp_path / "r").exists()


LONG = "q" * 5000


@pytest.mark.parametrize(
    "sets, key",
    [  # printed whole until mended (lines of 5 000 characters)
        (
            ["training.method=langevin", f"training.options.schedule={LONG}"],
            "training.options.schedule",
        ),
        ([f"training.options.metric={LONG}"], "training.options.metric"),
        ([f"training.options.hessian={LONG}"], "training.options.hessian"),
        (["training.method=tao", f"training.options.type={LONG}"], "training.options.type"),
        ([f"model.kernel.type={LONG}"], "model.kernel"),
        ([f"training.checkpointing={LONG}"], "training.checkpointing"),
    ],
)
def test_long_values_are_shown_in_60_characters(capsys, mpi_tmp_path, sets, key):
    """README: error messages print at most 60 characters of a value."""
    config = write(mpi_tmp_path / "c.yaml", SMALL)
    flags = [a for s in sets for a in ("--set", s)]
    code, _, err = cli(capsys, "validate", config, *flags)
    assert code == 2 and err.startswith(f"config error: {key}"), err[:300]
    assert err.count("\n") == 1 and "q" * 61 not in err, err[:300]


def test_printed_errors_bound_every_long_value():
    """The bound the error printers apply (README: at most 60 characters of a
    value): single- and double-quoted values (Python shows a text with an
    apostrophe in double quotes), unquoted paths and numbers; a file name keeps
    its end, and pontryx's own words and short values are left alone."""
    from pontryx.meshes.errors import bounded

    apostrophe = "q" * 150 + "'" + "r" * 150 + ".csv"
    cases = [
        f"data.path: file '{'q' * 300}.csv' does not exist",
        f'data.path: file "{apostrophe}" cannot be looked up',
        f"evaluate: afile/{'n' * 300}/config.yaml not found (not a run directory)",
        f"unrecognized arguments: --max-memory {'9' * 400}",
        f"model.{'q' * 300}: unknown key",
    ]
    for message in cases:
        out = bounded(message)
        assert max(map(len, re.split(r"[\s'\"]", out))) <= 60, out
        assert len(out) < 160, out
    assert bounded(cases[0]).endswith(".csv' does not exist")
    short = "the lmvm method's PETSc objects: Unable to find requested Tao type 'nosuch'"
    assert bounded(short) == short
