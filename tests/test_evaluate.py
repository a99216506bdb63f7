"""``pontryx evaluate`` checks model.npz as README's "The model file" promises:
every 0-d metadata entry and the mesh (``x``, ``m``, ``cells``) against the
network rebuilt from config.yaml (real numbers to round-off, strings equal), the
noise entries against ``model.noise``, the class labels (numbers or strings,
distinct, sorted; the run's own on its data) — one line naming the file and the
entry, exit 2 — and any non-finite value anywhere in the file: exit 3."""

from pathlib import Path

from mpi4py import MPI

import numpy as np
import pytest
from test_cli import cli

SMALL = """
mesh: {kind: unit_square, n: 3}
model: {layers: 2, T: 1.0}
data: {name: ellipses, n_train: 20, n_test: 10}
training: {method: lmvm, max_iterations: 2}
output: {checkpoint_every: 1, plots: false, paraview: false}
"""


@pytest.fixture
def run(capsys, mpi_tmp_path) -> Path:
    config = mpi_tmp_path / "small.yaml"
    if MPI.COMM_WORLD.rank == 0:
        config.write_text(SMALL)
    MPI.COMM_WORLD.Barrier()
    out = mpi_tmp_path / "run"
    assert cli(capsys, "train", config, "--output", out, "--quiet")[0] == 0
    return out


def _with(run: Path, good: dict, change: dict) -> None:
    arrays = {k: v for k, v in {**good, **change}.items() if v is not None}
    MPI.COMM_WORLD.Barrier()  # every rank has read the previous file
    if MPI.COMM_WORLD.rank == 0:
        np.savez(run / "model.npz", **arrays)
    MPI.COMM_WORLD.Barrier()


def _nan_at_0(a):
    a = a.astype(float)
    a.flat[0] = np.nan
    return a


def test_evaluate_checks_every_entry_against_config(capsys, run):
    with np.load(run / "model.npz") as f:
        good = {k: f[k] for k in f.files}
    model = str(run / "model.npz")
    code, out, err = cli(capsys, "evaluate", run)  # the untouched file, on any ranks
    assert code == 0 and "accuracy" in out, err
    mismatches = (
        ({"dt": np.array(0.7)}, "dt: the file has 0.7, the network has 0.5"),
        ({"dt": good["dt"] * (1 + 1e-6)}, "dt: the file has 0.5000005, the network has 0.5"),
        ({"task": np.array("regression")}, "task: the file has 'regression'"),
        ({"task": np.array("bogus")}, "task: the file has 'bogus'"),
        ({"cell_type": np.array("tetrahedron")}, "cell_type: the file has 'tetrahedron'"),
        ({"cell_type": np.array("bogus")}, "cell_type: the file has 'bogus'"),
        ({"embedding": np.array("linear")}, "embedding: the file has 'linear'"),
        ({"smooth_relu_delta": np.array(-1.0)}, "smooth_relu_delta: the file has -1.0"),
        ({"kernel_rank": np.array(5)}, "kernel_rank: the file has 5, the network has 0"),
        ({"noise_amplitude": np.array(0.5)}, "noise_amplitude: the file has 0.5"),
        ({"noise_seed": np.array(3)}, "noise_seed: the network of config.yaml has no noise"),
        ({"m": good["m"] * 1.001}, "m: differs from the mesh of config.yaml"),
        ({"x": good["x"][::-1]}, "x: differs from the mesh of config.yaml"),
        ({"x": good["x"] * 2}, "x: differs from the mesh of config.yaml"),
        ({"cells": good["cells"][::-1] % 3}, "cells: differs from the cells"),
        ({"classes": np.array([0, 0])}, "classes: expected distinct labels in increasing order"),
        ({"classes": np.array([1, 0])}, "classes: expected distinct labels in increasing order"),
        ({"classes": np.array(["a", "b"])}, "classes: the file has a list ['a', 'b'], the data"),
        ({"classes": np.array([0.5, 1.5])}, "classes: the file has a list [0.5, 1.5]"),
        ({"classes": np.array([True, False])}, "classes: expected numbers or strings, got bool"),
        ({"input_shape": np.array([2, 1])}, "input_shape: the file has a list [2, 1]"),
    )
    for change, needle in mismatches:
        _with(run, good, change)
        code, out, err = cli(capsys, "evaluate", run)
        assert code == 2 and err.startswith(f"config error: evaluate: {model}: {needle}"), err
        assert err.count("\n") == 1 and not out, err
    # round-off is no mismatch
    _with(run, good, {"dt": good["dt"] * (1 + 1e-14), "m": good["m"] * (1 + 1e-14)})
    assert cli(capsys, "evaluate", run)[0] == 0
    for key in ("m", "x", "dt", "noise_amplitude", "classes", "T", "d"):
        _with(run, good, {key: _nan_at_0(good[key])})
        code, out, err = cli(capsys, "evaluate", run)
        assert code == 3 and f"{model} holds non-finite values (in {key})" in err, (key, err)
        assert err.count("\n") == 1 and not out, err
    _with(run, good, {})
    assert cli(capsys, "evaluate", run)[0] == 0
