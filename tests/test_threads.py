"""Element-wise work in row blocks on the BLAS threads (solver/model/threads.py):
the blocks cover the rows, exceptions reach the caller, and a gradient with the
element-wise work forced onto 2 threads in many small blocks is bit-identical to
the serial one, for every kernel (on 1 and 2 ranks)."""

import itertools

import numpy as np
import pytest
from test_adjoint import KERNELS, _problem

from pontryx.solver.model import threads


def test_row_blocks_cover_the_rows():
    for n, length, T in [(1, 5, 2), (7, 3, 2), (1000, 1000, 2), (64, 1 << 20, 4), (5, 1, 8)]:
        blocks = threads.row_blocks(n, length, T)
        assert blocks[0].start == 0 and blocks[-1].stop == n
        assert all(a.stop == b.start for a, b in itertools.pairwise(blocks))
        assert len(blocks) >= min(T, n) and all(b.stop > b.start for b in blocks)
    assert threads.row_blocks(100, 100, 1) == [slice(0, 100)]


def test_rows_equal_serial_and_raise():
    rng = np.random.default_rng(0)
    Z, Q = rng.standard_normal((300, 700)), rng.standard_normal((300, 700))

    def chain(out, sums):
        def block(r):
            d = np.tanh(Z[r], out=out[r])
            d *= Q[r]
            sums[r] = d.sum(axis=1)

        return block

    serial, s1 = np.empty_like(Z), np.empty(300)
    chain(serial, s1)(slice(0, 300))
    threaded, s2 = np.empty_like(Z), np.empty(300)
    threads.rows(chain(threaded, s2), 300, 700, threads=2)
    assert np.array_equal(serial, threaded) and np.array_equal(s1, s2)

    def fail(r):
        raise ValueError("block failed")

    with pytest.raises(ValueError, match="block failed"):
        threads.rows(fail, 300, 700, threads=2)


@pytest.mark.parametrize("kernel,options", KERNELS)
@pytest.mark.parametrize("scheme", ["imex_euler", "midpoint"])
def test_threaded_gradient_is_bit_identical(kernel, options, scheme, comm, monkeypatch):
    _, theta, rf = _problem(comm, kernel=kernel, options=options, scheme=scheme, S=40)
    J1, g1 = rf.value_and_gradient(theta)
    g1 = g1.copy()
    monkeypatch.setattr(threads, "blas_threads", lambda: 2)
    monkeypatch.setattr(threads, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(threads, "BLOCK_ELEMENTS", 24)  # blocks of a row or two
    J2, g2 = rf.value_and_gradient(theta)
    assert J1 == J2
    for name in g1:
        assert np.array_equal(g1[name], g2[name]), name


def test_single_threaded_blas_restores():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2):
        before = threads.blas_threads()
        with threads.single_threaded_blas():
            assert threads.blas_threads() == 1
        assert threads.blas_threads() == before


def test_openblas_threads_sleep_when_pontryx_comes_first():
    """pontryx.solver, imported before NumPy, tells OpenBLAS's idle threads to sleep at
    once (OPENBLAS_THREAD_TIMEOUT=4) unless the user set a value; after NumPy it is
    too late and nothing is set."""
    import os
    import subprocess
    import sys

    code = "import {0}; import os; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
    launcher = ("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_")  # the child starts MPI alone
    env = {
        k: v
        for k, v in os.environ.items()
        if k != "OPENBLAS_THREAD_TIMEOUT" and not k.startswith(launcher)
    }

    def run(first, **extra):
        out = subprocess.run(
            [sys.executable, "-c", code.format(first)],
            env={**env, **extra}, capture_output=True, text=True, check=True,
        )  # fmt: skip
        return out.stdout.strip()

    assert run("pontryx.solver") == "4"
    assert run("pontryx.solver", OPENBLAS_THREAD_TIMEOUT="28") == "28"
    assert run("numpy, pontryx.solver") == "None"
