"""The library of the kernels' GEMMs (solver/model/blas.py, ``parallel.blas``):
MKL's products equal NumPy's for every memory order the kernels pass; J, ∇J and
∇²J·dθ of the dense and low-rank kernels agree with NumPy's BLAS to round-off
(on 1 and 2 ranks, 1 and 2 threads) and are Taylor-tested; MKL follows the BLAS
thread limits, in the threads that run sample chunks too; a library that cannot
be loaded is a one-line error keyed ``parallel.blas``. The MKL tests are skipped
where MKL is not installed (``pip install 'pontryx[mkl]'``; the test extra
installs it on x86-64 Linux)."""

import json

import numpy as np
import pytest
from test_adjoint import _direction, _problem
from test_cli import SMALL, cli, write
from threadpoolctl import threadpool_info, threadpool_limits

from pontryx.meshes.errors import InputError
from pontryx.solver.adjoint.taylor import taylor_test
from pontryx.solver.app.problem import use_blas
from pontryx.solver.model import blas, threads

needs_mkl = pytest.mark.skipif(not blas.available("mkl"), reason="Intel MKL is not installed")


@pytest.fixture
def library():
    """Switch the library inside a test; NumPy's again afterwards."""
    yield blas.use
    blas.use("numpy")


def _operands(rng, m, k, n):
    A, B = rng.standard_normal((m, k)), rng.standard_normal((k, n))
    return [
        (A, B),
        (np.ascontiguousarray(A.T).T, B),  # Fortran order: a transposed view
        (A, np.ascontiguousarray(B.T).T),
        (np.asfortranarray(A), np.asfortranarray(B)),
        (A[:, : k // 2], B[: k // 2]),  # a column slice: neither order, np.matmul's
        (A[:1], B),  # one row: both orders
    ]


def test_numpy_is_the_default_and_unknown_names_are_refused():
    assert blas.current() == "numpy" and blas.available("numpy")
    assert not blas.available("atlas")
    with pytest.raises(ValueError, match="numpy, mkl"):
        blas.use("atlas")
    assert blas.current() == "numpy"


@needs_mkl
def test_mkl_products_equal_numpys(library):
    library("mkl")
    assert blas.current() == "mkl"
    rng = np.random.default_rng(0)
    for m, k, n in [(7, 5, 3), (40, 64, 33), (1, 9, 4)]:
        for A, B in _operands(rng, m, k, n):
            expected = np.matmul(A, B)
            out = np.empty_like(expected)
            assert blas.matmul(A, B, out=out) is out
            np.testing.assert_allclose(out, expected, rtol=1e-13, atol=1e-13)
            np.testing.assert_allclose(blas.matmul(A, B), expected, rtol=1e-13, atol=1e-13)
    ints = np.arange(6).reshape(2, 3)  # not float64: NumPy's product
    assert np.array_equal(blas.matmul(ints, ints.T), ints @ ints.T)


@needs_mkl
def test_mkl_follows_the_blas_thread_limits(library):
    library("mkl")
    mkl = [i for i in threadpool_info() if i["internal_api"] == "mkl"]
    assert mkl, "threadpoolctl does not see MKL"
    with threadpool_limits(1, user_api="blas"):
        assert threads.blas_threads() == 1
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["internal_api"] == "mkl")
        with threads.single_threaded_blas():
            assert threads.blas_threads() == 1


def _mkl_threads_in_a_new_thread() -> int:
    """MKL's thread count as a thread started now sees it (the sample chunks' pool)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(blas._state["lib"].MKL_Get_Max_Threads).result()


@needs_mkl
def test_mkl_threads_of_the_chunk_threads(library):
    """threadpoolctl sets MKL's count of the calling thread only; the sample chunks run
    in other threads, which must get one thread inside single_threaded_blas (else
    two chunks run 2 MKL threads each on 2 cores) and NumPy's count otherwise."""
    library("mkl")
    with threadpool_limits(2, user_api="blas"):
        blas.set_global_threads(2)
        assert _mkl_threads_in_a_new_thread() == 2
        with threads.single_threaded_blas():
            assert _mkl_threads_in_a_new_thread() == 1
        assert _mkl_threads_in_a_new_thread() == 2


@needs_mkl
@pytest.mark.parametrize("kernel,options", [("dense", {}), ("lowrank", {"rank": 3})])
@pytest.mark.parametrize("T", [1, 2])
def test_mkl_gradient_and_hessian_equal_numpys(library, comm, kernel, options, T):
    net, theta, rf = _problem(comm, kernel, options)
    direction = _direction(theta, net.trainable)
    with threadpool_limits(T, user_api="blas"):
        J0, g0 = rf.value_and_gradient(theta)
        g0, H0 = g0.copy(), rf.hessian_action(theta, direction).copy()
        library("mkl")
        J1, g1 = rf.value_and_gradient(theta)
        H1 = rf.hessian_action(theta, direction)
        assert abs(J1 - J0) <= 1e-13 * abs(J0)
        for k in g0:
            scale = max(np.abs(g0[k]).max(), 1e-300)
            assert np.abs(g1[k] - g0[k]).max() <= 1e-12 * scale, k
            scale = max(np.abs(H0[k]).max(), 1e-300)
            assert np.abs(H1[k] - H0[k]).max() <= 1e-12 * scale, k
        result = taylor_test(rf, theta, direction, h0=1e-3)
        assert result.min_rate >= 1.95, result.table()


def test_an_unavailable_library_is_an_input_error(monkeypatch):
    def missing():
        raise blas.BlasUnavailable("Intel MKL not found: install it with pip install 'x[mkl]'")

    monkeypatch.setattr(blas, "_state", {**blas._state, "name": "numpy", "dgemm": None})
    monkeypatch.setattr(blas, "_load_mkl", missing)
    with pytest.raises(InputError) as err:
        use_blas("mkl")
    assert err.value.key == "blas" and "MKL not found" in str(err.value)
    assert blas.current() == "numpy"


@needs_mkl
def test_train_with_mkl_records_it_and_matches_numpy(library, capsys, mpi_tmp_path):
    """``parallel.blas: mkl`` from the command line: summary.json says which library
    ran the GEMMs, and the training follows NumPy's run to round-off."""
    small = write(mpi_tmp_path / "small.yaml", SMALL)
    summaries = {}
    for name in ("numpy", "mkl"):
        run = mpi_tmp_path / name
        code, _, err = cli(
            capsys, "train", small, "--output", run, "--quiet", "--set", f"parallel.blas={name}"
        )
        assert code == 0, err
        summaries[name] = json.loads((run / "summary.json").read_text())
        assert summaries[name]["blas"] == name
    a, b = (summaries[k]["train"]["loss"] for k in ("numpy", "mkl"))
    assert abs(a - b) <= 1e-8 * abs(a), (a, b)


@needs_mkl
@pytest.mark.serial
def test_mkl_under_an_ilp64_interface_layer():
    """MKL_INTERFACE_LAYER=ILP64 made MKL read cblas_dgemm's 32-bit sizes as 64-bit
    ones (a segmentation fault after the run directory was opened): pontryx sets
    the LP64 layer it calls with."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np; from pontryx.solver.model import blas; blas.use('mkl');"
        "A = np.arange(6.0).reshape(2, 3); B = np.ones((3, 2));"
        "assert np.array_equal(blas.matmul(A, B), A @ B); print('ok')"
    )
    env = dict(os.environ, MKL_INTERFACE_LAYER="ILP64", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-800:]
