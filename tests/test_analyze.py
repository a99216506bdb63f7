"""Optimiser paths: the trajectory a run records (output.trajectory_every: the
seeded canonical projection, the same on any number of ranks, resumed runs equal
to uninterrupted ones), diffusion maps (Coifman–Lafon, α = 1 recovers the
Laplace–Beltrami eigenfunction whatever the sampling density), and ``pontryx
analyze`` (outputs, one-line errors with exit code 2)."""

import json
import shutil

from mpi4py import MPI

import numpy as np
import pytest
from test_cli import cli, write

from pontryx.meshes import create_mesh
from pontryx.solver import ContinuumNetwork, WidthSpace
from pontryx.solver.adjoint.riesz import RieszMap
from pontryx.solver.analysis import diffusion_map
from pontryx.solver.model.random import canonical_normal
from pontryx.solver.outputs.trajectory import Projection, read_trajectory

CONFIG = """
mesh: {kind: unit_square, n: 3}
model: {layers: 3, T: 2.0}
data: {name: ellipses, n_train: 24, n_test: 12}
training: {method: sgd, max_iterations: 6, test_every: 3, options: {batch_size: 8}}
output: {checkpoint_every: 2, plots: false, paraview: false, trajectory_every: 2}
"""


def test_diffusion_map_of_a_nonuniformly_sampled_curve():
    """Points on a curve, denser at one end: with α = 1 the first diffusion
    coordinate is the Neumann eigenfunction cos(πs) of the arclength s."""
    rng = np.random.default_rng(0)
    s = np.sort(rng.random(300) ** 2)  # density ∝ 1/√s
    Y = np.stack([np.cos(2 * s), np.sin(2 * s), 0.3 * s, 1e-3 * rng.standard_normal(300)], 1)
    L = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(Y[:, :3], axis=0), axis=1))])
    dm = diffusion_map(Y, components=3, epsilon=0.01)
    assert dm.eigenvalues[0] == pytest.approx(1.0)
    assert np.all(np.diff(dm.eigenvalues) <= 1e-12) and dm.eigenvalues[-1] > 0
    assert np.allclose(dm.eigenvectors[:, 0], 1.0)
    assert abs(np.corrcoef(dm.eigenvectors[:, 1], np.cos(np.pi * L / L[-1]))[0, 1]) > 0.99
    biased = diffusion_map(Y, components=3, epsilon=0.01, alpha=0.0)  # the graph Laplacian
    assert abs(np.corrcoef(biased.eigenvectors[:, 1], np.cos(np.pi * L / L[-1]))[0, 1]) < abs(
        np.corrcoef(dm.eigenvectors[:, 1], np.cos(np.pi * L / L[-1]))[0, 1]
    )
    auto = diffusion_map(Y)  # the automatic bandwidth keeps the graph connected
    assert auto.eigenvalues[1] < 0.999
    assert abs(np.corrcoef(auto.eigenvectors[:, 1], L)[0, 1]) > 0.9


@pytest.mark.parametrize("kernel", ["dense", "lowrank"])
def test_projection_is_canonical_and_preserves_l2_norms(kernel):
    """y(θ) and the layerwise norms are the same on 1 and 2 ranks; E‖y‖² = ‖√ω θ‖²."""

    def run(comm):
        sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 4}, comm))
        opts = {"rank": 3} if kernel == "lowrank" else None
        net = ContinuumNetwork(sp, 2, 2, kernel=kernel, kernel_options=opts, layers=3)
        theta = net.init_controls(seed=0)
        draw = canonical_normal(np.random.default_rng(1), net, theta.subset(net.trainable))
        for k in draw:
            theta[k] = draw[k]
        y, norms = Projection(net)(theta)
        x = RieszMap(net, theta.subset(net.trainable)).controls_to_x(theta.subset(net.trainable))
        return y, norms, x.norm()

    y1, n1, x1 = run(MPI.COMM_SELF)
    y2, n2, _x2 = run(MPI.COMM_WORLD)
    assert np.max(np.abs(y1 - y2)) <= 1e-12 * np.max(np.abs(y1))
    for k in n1:
        assert np.allclose(n1[k], n2[k], rtol=1e-12)
    assert 0.6 < np.sum(y1**2) / x1**2 < 1.4  # JL: one draw of a 64-dimensional projection
    total = sum(np.sum(np.square(v)) for v in n1.values())
    assert total == pytest.approx(x1**2, rel=1e-12)  # the norms are those of x = √ω θ


def test_trajectory_resume_and_analyze(capsys, mpi_tmp_path):
    """Two methods from one start, one of them cut at iteration 4 and resumed:
    the trajectories (θ₀, θ₂, θ₄, θ₆) equal an uninterrupted run's; analyze embeds
    both runs into the first run's analysis/ (recorded as pontryx's own)."""
    cfg = write(mpi_tmp_path / "c.yaml", CONFIG)
    sgd, cut, adam = (mpi_tmp_path / d for d in ("sgd", "cut", "adam"))
    assert cli(capsys, "train", cfg, "--output", sgd, "--quiet")[0] == 0
    assert (
        cli(capsys, "train", cfg, "--output", cut, "--quiet", "--set", "training.max_iterations=4")[
            0
        ]
        == 0
    )
    assert cli(capsys, "train", cfg, "--output", cut, "--quiet", "--resume")[0] == 0
    assert (
        cli(capsys, "train", cfg, "--output", adam, "--quiet", "--set", "training.method=adam")[0]
        == 0
    )
    (h1, a), (h2, b) = read_trajectory(sgd), read_trajectory(cut)
    assert h1 == h2 and [r["iteration"] for r in a] == [0, 2, 4, 6]
    assert a == b  # bit for bit, loss and projection
    marker = json.loads((sgd / ".pontryx" / "run.json").read_text())
    assert "trajectory.jsonl" in marker["written"]
    code, out, _ = cli(capsys, "analyze", sgd, adam)
    assert code == 0 and "diffusion map of 8 iterates" in out, out
    assert (sgd / "analysis" / "diffusion_map.png").is_file()
    f = np.load(sgd / "analysis" / "diffusion_map.npz")
    assert f["coordinates"].shape == (8, 3) and list(f["run"]) == [0] * 4 + [1] * 4
    marker = json.loads((sgd / ".pontryx" / "run.json").read_text())
    assert "analysis" in marker["written"]
    code, out, _ = cli(
        capsys,
        "analyze",
        sgd,
        "--features",
        "norms",
        "--json",
        "--output",
        mpi_tmp_path / "elsewhere",
    )
    summary = json.loads(out)
    assert code == 0 and summary["features"] == "norms" and summary["dimension"] == 3 * 2 + 2
    assert (mpi_tmp_path / "elsewhere" / "diffusion_map.npz").is_file()


def test_analyze_bad_input(capsys, mpi_tmp_path):
    cfg = write(mpi_tmp_path / "c.yaml", CONFIG)
    plain = mpi_tmp_path / "plain"
    if MPI.COMM_WORLD.rank == 0:
        plain.mkdir()
    MPI.COMM_WORLD.Barrier()
    none = mpi_tmp_path / "none"
    assert (
        cli(
            capsys,
            "train",
            cfg,
            "--output",
            none,
            "--quiet",
            "--set",
            "output.trajectory_every=0",
            "--set",
            "training.max_iterations=1",
        )[0]
        == 0
    )
    for args, text in (
        ([mpi_tmp_path / "missing"], "is not a directory"),
        ([plain], "is not a pontryx run directory"),
        ([none], "has no trajectory.jsonl: record one with output.trajectory_every"),
        ([none, "--epsilon", "-1"], "--epsilon: expected"),  # flags before files
    ):
        code, _out, err = cli(capsys, "analyze", *args)
        assert code == 2 and text in err and len(err.strip().splitlines()) == 1, err
    code, _, err = cli(capsys, "analyze", none, "--features", "pixels")
    assert code == 2 and "invalid choice" in err


def _tree(directory):
    """Every file's bytes and every folder under ``directory``, read on rank 0 (None
    on the others); compare with :func:`_same`."""
    if MPI.COMM_WORLD.rank != 0:
        return None
    return {
        str(p.relative_to(directory)): p.read_bytes() if p.is_file() else None
        for p in sorted(directory.rglob("*"))
    }


def _same(directory, before) -> bool:
    """Whether ``directory`` is as :func:`_tree` found it, the same answer on every rank."""
    return MPI.COMM_WORLD.bcast(_tree(directory) == before if MPI.COMM_WORLD.rank == 0 else None)


@pytest.fixture
def recorded(capsys, mpi_tmp_path):
    """A finished run with 4 recorded iterates (0, 2, 4, 6)."""
    cfg = write(mpi_tmp_path / "c.yaml", CONFIG)
    run = mpi_tmp_path / "run"
    assert cli(capsys, "train", cfg, "--output", run, "--quiet")[0] == 0
    return run


def test_analyze_refuses_bad_flags_before_writing(capsys, recorded, mpi_tmp_path):
    """Flags out of range and outputs that cannot be directories: one line keyed by
    the flag, exit 2, the run directory byte for byte as it was (its marker too)."""
    if MPI.COMM_WORLD.rank == 0:
        (mpi_tmp_path / "afile").write_text("x")
    MPI.COMM_WORLD.Barrier()
    before = _tree(recorded)
    for flags, key in (
        (["--components", "0"], "--components"),
        (["--components", "4"], "--components"),  # 4 iterates: at most 3
        (["--epsilon", "-1"], "--epsilon"),
        (["--epsilon", "inf"], "--epsilon"),
        (["--epsilon", "1e-300"], "--epsilon"),  # the iterates fall apart
        (["--alpha", "nan"], "--alpha"),
        (["--time", "0"], "--time"),
        (["--time", "-1"], "--time"),
        (["--time", "nan"], "--time"),
        (["--time", "inf"], "--time"),
        (["--output", mpi_tmp_path / "afile"], "--output"),
        (["--output", mpi_tmp_path / "afile" / "below"], "--output"),
        (["--output", "/proc/pontryx-analysis"], "--output"),
        (["--output", mpi_tmp_path / ("a" * 300)], "--output"),  # a name too long: was exit 5
        (["--output", mpi_tmp_path / "new" / ("a" * 300) / "b"], "--output"),
    ):
        code, out, err = cli(capsys, "analyze", recorded, *flags)
        assert code == 2 and err.startswith(f"config error: {key}: "), (flags, err)
        assert err.count("\n") == 1 and "run directory" not in err and not out, err
        assert _same(recorded, before), flags
    code, out, err = cli(capsys, "analyze", recorded, "--components", "3", "--time", "0.5")
    assert code == 0 and "diffusion map of 4 iterates" in out, err
    assert "analysis" in json.loads((recorded / ".pontryx" / "run.json").read_text())["written"]


def test_analyze_keeps_the_users_files(capsys, recorded, mpi_tmp_path):
    """An --output holding a diffusion_map.png or .npz that analyze did not write,
    or a run directory itself, is refused (exit 2, one line, nothing changed: the
    files had been replaced, and a run directory got entries its marker did not
    list); an earlier analysis there is replaced, and a run's own analysis/ named
    with --output is that run's entry, as the default."""
    mine = mpi_tmp_path / "mine"
    other = mpi_tmp_path / "other"
    if MPI.COMM_WORLD.rank == 0:
        mine.mkdir()
        (mine / "diffusion_map.png").write_text("USER DATA")
        other.mkdir()
        np.savez(other / "diffusion_map.npz", x=np.zeros(3))
        alike = mpi_tmp_path / "alike"  # another tool's NPZ with analyze's array names
        alike.mkdir()
        names = ("coordinates", "eigenvalues", "iteration", "runs", "methods", "mydata")
        np.savez(alike / "diffusion_map.npz", **{k: np.zeros(2) for k in names})
    MPI.COMM_WORLD.Barrier()
    for target in (mine, other, mpi_tmp_path / "alike", recorded):
        before = _tree(target)
        code, out, err = cli(capsys, "analyze", recorded, "--output", target)
        assert code == 2 and err.startswith("config error: --output: "), err
        assert err.count("\n") == 1 and not out, err
        assert _same(target, before), target
    again = mpi_tmp_path / "again"
    for _ in range(2):  # an earlier analysis is replaced
        code, out, err = cli(capsys, "analyze", recorded, "--output", again)
        MPI.COMM_WORLD.Barrier()  # rank 0 writes
        assert code == 0 and (again / "diffusion_map.png").exists(), err
    # beside an earlier analysis's NPZ, a figure that is not its own: a user's file, a
    # folder (the NPZ had been rewritten before the figure failed)
    for make in (lambda p: p.write_text("MY FIGURE"), lambda p: p.mkdir()):
        MPI.COMM_WORLD.Barrier()  # every rank has looked at the files before rank 0 changes them
        if MPI.COMM_WORLD.rank == 0:
            png = again / "diffusion_map.png"
            png.unlink()
            make(png)
        MPI.COMM_WORLD.Barrier()
        before = _tree(again)
        code, out, err = cli(capsys, "analyze", recorded, "--output", again)
        assert code == 2 and "diffusion_map.png' exists and is not the output" in err, err
        assert _same(again, before)
        MPI.COMM_WORLD.Barrier()
        if MPI.COMM_WORLD.rank == 0 and (again / "diffusion_map.png").is_dir():
            (again / "diffusion_map.png").rmdir()
            (again / "diffusion_map.png").write_text("")
        MPI.COMM_WORLD.Barrier()
    code, out, err = cli(capsys, "analyze", recorded, "--output", recorded / "analysis")
    MPI.COMM_WORLD.Barrier()
    assert code == 0, err
    assert "analysis" in json.loads((recorded / ".pontryx" / "run.json").read_text())["written"]


def test_analyze_refuses_a_damaged_trajectory(capsys, recorded, mpi_tmp_path):
    """Bytes that are not UTF-8, JSON that is not a record, non-finite values: one line
    naming the file and the line, exit 2, nothing written; a torn last line (a run cut
    while writing it) is left out."""
    lines = (recorded / "trajectory.jsonl").read_text().splitlines(keepends=True)
    nan = json.loads(lines[2])
    nan["projection"][3] = float("nan")
    huge = json.loads(lines[2])  # finite, but its squared distances overflow
    huge["projection"][0], huge["projection"][1] = 1e308, -1e308
    cases = {
        "bytes": (b"\xff\xfe{{{\n", "line 1: not UTF-8 text"),
        "list": (b"[1, 2]\n[3]\n", "line 1: expected the header of a pontryx-trajectory"),
        "record": ((lines[0] + lines[1] + "[3]\n").encode(), "line 3: expected a record"),
        "nan": ((lines[0] + lines[1] + json.dumps(nan) + "\n").encode(), "line 3: projection"),
        "garbage": ((lines[0] + "{{\n" + lines[1]).encode(), "line 2: not a JSON line"),
        "huge": (
            (lines[0] + lines[1] + json.dumps(huge) + "\n").encode(),
            "line 3: projection: a value of magnitude 1e+308, above 1e150",
        ),
        "loss": (
            (lines[0] + lines[1].replace('"loss": ', '"loss": 1e999, "x": ')).encode(),
            "line 2: loss",
        ),
    }
    for name, (data, text) in cases.items():
        run = mpi_tmp_path / name
        if MPI.COMM_WORLD.rank == 0:
            shutil.copytree(recorded, run, symlinks=True)
            (run / "trajectory.jsonl").write_bytes(data)
        MPI.COMM_WORLD.Barrier()
        before = _tree(run)
        code, out, err = cli(capsys, "analyze", run)
        assert code == 2 and err.count("\n") == 1 and not out, (name, err)
        assert f"{run / 'trajectory.jsonl'}, line " in err and text in err, (name, err)
        assert _same(run, before), name
    torn = mpi_tmp_path / "torn"
    if MPI.COMM_WORLD.rank == 0:
        shutil.copytree(recorded, torn, symlinks=True)
        (torn / "trajectory.jsonl").write_text("".join(lines)[:-30])
    MPI.COMM_WORLD.Barrier()
    code, out, err = cli(capsys, "analyze", torn)
    assert code == 0 and "diffusion map of 3 iterates" in out, err
