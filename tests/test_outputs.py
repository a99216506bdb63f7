"""Run-directory outputs: the portable model.npz (re-run with NumPy alone, as
README.md shows), canonical control arrays, atomic checkpoints, the metrics
log, the run-directory policy and the ParaView/plot writers."""

import json
import math
import re
from pathlib import Path

from mpi4py import MPI

import numpy as np
import pytest

from pontryx.meshes import create_mesh
from pontryx.solver import ContinuumNetwork, WidthSpace
from pontryx.solver.data import load_dataset
from pontryx.solver.outputs import (
    MetricsLog,
    model_io,
    paraview,
    plots,
    read_metrics,
)
from pontryx.solver.outputs.canonical import from_canonical, random_direction, to_canonical

ROOT = Path(__file__).resolve().parents[1]


def _net(kernel="dense", epsilon=0.0, scheme="imex_euler", activation="tanh", comm=None):
    comm = MPI.COMM_WORLD if comm is None else comm
    sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 3}, comm))
    options = {"rank": 3} if kernel == "lowrank" else None
    net = ContinuumNetwork(
        sp,
        2,
        3,
        kernel=kernel,
        kernel_options=options,
        epsilon=epsilon,
        scheme=scheme,
        activation=activation,
        layers=3,
        T=1.5,
    )
    theta = net.init_controls(seed=1, gain=1.0)
    theta["b"][...] = 0.3 * np.sin(7 * sp.x[:, 0] + 3 * sp.x[:, 1])[None, :]
    theta["d"][...] = [0.1, -0.2, 0.3]
    return net, theta


def _inputs(S=6):
    return np.random.default_rng(5).standard_normal((S, 2))


def readme_forward_snippet() -> str:
    """The NumPy forward pass printed in README.md (the block after its marker)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- numpy-forward -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no <!-- numpy-forward --> python block"
    return m.group(1)


def readme_forward_namespace(path, X) -> dict:
    """Run the block as printed (its own imports: nothing is put in its namespace
    but ``path`` and ``X``, whose defining line is replaced); its variables."""
    lines = readme_forward_snippet().splitlines()
    where = [i for i, line in enumerate(lines) if line.startswith("path, X = ")]
    assert len(where) == 1, "the block must define path and X on one line"
    del lines[where[0]]
    ns = {"path": str(path), "X": X}
    exec("\n".join(lines), ns)
    return ns


def run_readme_forward(path, X) -> np.ndarray:
    return readme_forward_namespace(path, X)["Yhat"]


CASES = [
    ("dense", 0.0, "tanh"),
    ("dense", 0.05, "tanh"),
    ("lowrank", 0.0, "sigmoid"),
    ("lowrank", 0.1, "smooth_relu"),
    ("local", 0.0, "softplus"),
    ("local", 0.05, "tanh"),
]


@pytest.mark.parametrize(("kernel", "epsilon", "activation"), CASES)
def test_model_npz_forward_with_numpy_alone(kernel, epsilon, activation, mpi_tmp_path):
    """README's NumPy forward pass on model.npz reproduces pontryx's Ŷ to 1e-10."""
    comm = MPI.COMM_WORLD
    net, theta = _net(kernel, epsilon, activation=activation)
    X = _inputs()
    Yhat = net.forward(theta, np.ascontiguousarray(X.T))
    path = mpi_tmp_path / "model.npz"
    model_io.save_model(
        path, net, theta, task="classification", input_shape=(2,), classes=(0, 1, 2)
    )
    comm.Barrier()
    error = None
    if comm.rank == 0:
        Y_np = run_readme_forward(path, X)
        error = float(np.max(np.abs(Y_np - Yhat)) / max(1.0, np.max(np.abs(Yhat))))
    error = comm.bcast(error, root=0)
    assert error < 1e-10
    net.destroy()


def test_model_file_contents(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    net, theta = _net("dense", 0.05)
    path = mpi_tmp_path / "model.npz"
    model_io.save_model(
        path, net, theta, task="classification", input_shape=(2,), classes=(0, 1, 2)
    )
    comm.Barrier()
    f = model_io.load_model(path)  # allow_pickle=False inside
    N = net.space.N
    assert f["x"].shape == (N, 2) and f["m"].shape == (N,)
    assert f["W"].shape == (3, N, N) and f["b"].shape == (3, N)
    assert f["E"].shape == (N, 2) and f["C"].shape == (N, 3) and f["d"].shape == (3,)
    assert f["cells"].shape == (2 * 9, 3) and f["cells"].max() == N - 1
    assert str(f["scheme"]) == "imex_euler" and str(f["activation"]) == "tanh"
    assert float(f["T"]) == 1.5 and int(f["layers"]) == 3 and float(f["epsilon"]) == 0.05
    assert abs(float(f["m"].sum()) - 1.0) < 1e-12
    A = f["stiffness_data"]
    assert len(f["stiffness_indptr"]) == N + 1 and A.size == f["stiffness_indices"].size
    # the canonical order sorts the dofs by coordinates
    key = np.lexsort(np.round(f["x"], 10).T[::-1])
    assert np.array_equal(key, np.arange(N))
    # loading into the network gives back the controls (this rank's rows)
    back = model_io.controls_from_model(net, f)
    assert all(np.array_equal(back[k], theta[k]) for k in theta)
    net.destroy()


def test_model_file_rejects_mismatch(mpi_tmp_path):
    net, theta = _net("dense")
    path = mpi_tmp_path / "model.npz"
    model_io.save_model(path, net, theta, task="classification", input_shape=(2,))
    MPI.COMM_WORLD.Barrier()
    other, _ = _net("lowrank")
    with pytest.raises(ValueError, match="kernel"):
        model_io.controls_from_model(other, model_io.load_model(path))
    bad = mpi_tmp_path / "bad.npz"
    if MPI.COMM_WORLD.rank == 0:
        np.savez(bad, x=np.zeros(3))
    MPI.COMM_WORLD.Barrier()
    with pytest.raises(ValueError, match="not a pontryx model"):
        model_io.load_model(bad)
    net.destroy()
    other.destroy()


@pytest.mark.parametrize("kernel", ["dense", "lowrank", "local"])
def test_canonical_round_trip_and_direction(kernel):
    net, theta = _net(kernel)
    canon = to_canonical(net, theta)
    back = from_canonical(net, canon)
    assert all(np.array_equal(back[k], theta[k]) for k in theta)
    d1 = random_direction(net, theta, net.trainable, seed=3)
    d2 = random_direction(net, theta, net.trainable, seed=3)
    assert set(d1) == set(net.trainable)
    assert d1.norm() > 0 and d1.dot(d2) == pytest.approx(d1.norm() ** 2)
    # the direction is drawn in canonical order: its gathered arrays do not
    # depend on the number of ranks (compare against a 1-rank network)
    self_net, self_theta = _net(kernel, comm=MPI.COMM_SELF)
    d_self = random_direction(self_net, self_theta, self_net.trainable, seed=3)
    got = to_canonical(net, d1)
    want = to_canonical(self_net, d_self)
    assert all(np.allclose(got[k], want[k], rtol=1e-12, atol=1e-14) for k in got)
    net.destroy()
    self_net.destroy()


def test_metrics_log_resume_truncates(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    d = mpi_tmp_path
    log = MetricsLog(d, active=comm.rank == 0).open()
    for it in range(1, 6):
        log.append(
            {
                "iteration": it,
                "loss": 1.0 / it,
                "misfit": 0.5,
                "train_metric": 0.9,
                "grad_norm": float("nan") if it == 5 else 0.1,
                "stationarity": 0.2,
                "time": 0.1 * it,
                "test_metric": None,
                **({"lr": 0.1} if it > 2 else {}),
            }
        )
    log.close()
    comm.Barrier()
    if comm.rank == 0:
        with open(d / "metrics.jsonl", "a") as f:
            f.write('{"iteration": 6, "lo')  # torn line of a killed run
    comm.Barrier()
    rows = read_metrics(d)
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[4]["grad_norm"] == "nan"
    header = (d / "metrics.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["iteration", "loss", "misfit", "train_metric"] and header[-1] == "lr"
    comm.Barrier()
    log = MetricsLog(d, active=comm.rank == 0).open(keep_until=3)
    log.close()
    comm.Barrier()
    assert [r["iteration"] for r in read_metrics(d)] == [1, 2, 3]
    assert len((d / "metrics.csv").read_text().splitlines()) == 4


@pytest.mark.serial  # the file system of one process
@pytest.mark.parametrize(
    "content, needle",
    [
        (b"\x00\xff garbage\n", "is not UTF-8 text"),
        (b'{"iteration": 1}\n[1, 2]\n', "line 2 is not an iteration's record"),
        (b'{"iteration": 1}\n{"loss": 2}\n', "line 2 is not an iteration's record"),
        (b"[" * 100000 + b"\n", "line 1 is not a record"),
        (b'{"iteration": 1}\nnot a record\n{"iteration": 3}\n', "line 2 is not a JSON line"),
        (b'{"iteration": 1}\n{"iteration": 2, "lo\n', "line 2 is not a JSON line"),
    ],
)
def test_logs_pontryx_did_not_write_are_one_line_errors(tmp_path, content, needle):
    """metrics.jsonl and trajectory.jsonl that pontryx cannot have written are
    InputErrors naming the file (a resumed run refuses them before writing)."""
    from pontryx.meshes import InputError
    from pontryx.solver.outputs.trajectory import FILE, FORMAT, read_trajectory

    (tmp_path / "metrics.jsonl").write_bytes(content)
    with pytest.raises(InputError, match=re.escape(needle)) as e:
        read_metrics(tmp_path)
    assert str(tmp_path / "metrics.jsonl") in str(e.value)
    header = json.dumps({"format": FORMAT}).encode() + b"\n"
    (tmp_path / FILE).write_bytes(content if b"\xff" in content else header + b"[1, 2]\n")
    with pytest.raises(InputError, match=str(tmp_path / FILE)):
        read_trajectory(tmp_path)


def test_kernel_rows_are_at_most_all_rows():
    """output.paraview.kernel_rows: any count, at most the N rows (1e30 allocated
    a linspace of 1e30 points after the training)."""
    from types import SimpleNamespace

    from pontryx.solver.outputs.paraview import kernel_rows

    space = SimpleNamespace(N=9)
    assert kernel_rows(space, 3).tolist() == [1, 4, 7]  # the middles of three parts
    for count in (9, 10, 10**30):  # all N (the rows 0 and N − 1 had never been written)
        assert kernel_rows(space, count).tolist() == list(range(9))
    for count in range(1, 10):
        assert len(set(kernel_rows(space, count).tolist())) == count


def test_trajectory_of_a_diverging_run_is_read(tmp_path):
    """A record with non-finite values (a diverging run's last iterate) is read, so
    that --resume keeps it (analyze refuses to embed it); a torn last line is left out."""
    from pontryx.solver.outputs.trajectory import FILE, FORMAT, read_trajectory

    header = {"format": FORMAT, "dimension": 2, "seed": 0, "shapes": {"W": [1, 2, 2]}}
    row = {"iteration": 1, "method": "sgd", "loss": math.nan, "projection": [math.inf, 1.0]}
    row["norms"] = {"W": [1.0]}
    text = "".join(json.dumps(r) + "\n" for r in (header, row)) + '{"iteration": 2, "me'
    (tmp_path / FILE).write_text(text)
    got, rows = read_trajectory(tmp_path)
    assert got == header and len(rows) == 1 and math.isnan(rows[0]["loss"])


def test_paraview_and_plot_writers(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    data = load_dataset({"name": "ellipses", "n_train": 20, "n_test": 20})
    sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 3}, comm))
    net = ContinuumNetwork(sp, 2, 2, kernel="lowrank", kernel_options={"rank": 2}, layers=3)
    theta = net.init_controls()
    X = np.ascontiguousarray(data.X_test[:2].T)
    paraview.write_states(mpi_tmp_path / "states.bp", net, theta, X, labels=[0, 1])
    rows = paraview.write_controls(mpi_tmp_path / "controls.bp", net, theta, rows=2)
    draw = comm.rank == 0
    plots.plot_decision_boundary(net, theta, data, mpi_tmp_path / "db.png", draw=draw, grid=10)
    plots.plot_features(net, theta, data, mpi_tmp_path / "f.png", draw=draw, samples=10)
    mesh = model_io.mesh_arrays(sp)
    if draw:
        plots.plot_curves(
            [{"iteration": 1, "loss": 1.0, "misfit": 0.9, "train_metric": 0.5, "test_metric": 0.4}],
            mpi_tmp_path / "c.png",
        )
    comm.Barrier()
    assert len(rows) == 2 and all(len(x) == 2 for _, x in rows)
    for name in ("states.bp", "controls.bp"):
        assert (mpi_tmp_path / name / "md.idx").is_file()
    for name in ("db.png", "f.png", "c.png"):
        assert (mpi_tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert mesh["cells"].shape == (18, 3)
    net.destroy()


def test_summary_json_is_plain_json(tmp_path):
    from pontryx.solver.outputs.atomic import write_json

    write_json(tmp_path / "s.json", {"a": np.float64(1.5), "b": np.arange(2), "c": tmp_path})
    assert json.loads((tmp_path / "s.json").read_text()) == {
        "a": 1.5,
        "b": [0, 1],
        "c": str(tmp_path),
    }
