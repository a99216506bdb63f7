"""Element-wise work in row blocks on the BLAS threads (solver/model/threads.py):
the blocks cover the rows, exceptions reach the caller, and a gradient with the
element-wise work forced onto 2 threads in many small blocks is bit-identical to
the serial one, for every kernel (on 1 and 2 ranks). The samples split over the
threads (solver/adjoint/split.py): J, ∇J and ∇²J·dθ equal one sweep's to
round-off, deterministic, Taylor-tested (rates 2 and 3), on a data axis of any
size; one sweep where the split cannot run."""

import itertools

import numpy as np
import pytest
from test_adjoint import KERNELS, _problem

from pontryx.meshes import create_mesh
from pontryx.solver import ContinuumNetwork, Layout, ReducedFunctional, WidthSpace, shard
from pontryx.solver.adjoint import split
from pontryx.solver.adjoint.taylor import taylor_test
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
    monkeypatch.setattr(split, "eligible", lambda *args, **kw: 1)  # one sweep, row blocks
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


def _two_threads(monkeypatch):
    """blas_threads() says 2 (BLAS itself is set to 1 inside the split) and the
    size thresholds let a small problem split."""
    monkeypatch.setattr(threads, "blas_threads", lambda: 2)
    monkeypatch.setattr(threads, "MIN_ELEMENTS", 0)
    monkeypatch.setattr(split, "MIN_COLUMNS", 4)


def _data_problem(comm, kernel, options, scheme="imex_euler", S=41, epsilon=0.0, **kw):
    """A network on one width rank and this rank's shard of S samples (a data axis
    over all ranks), α, β, γ, δ > 0."""
    layout = Layout.create(comm, data=comm.size)
    sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 3}, layout.width))
    net = ContinuumNetwork(
        sp,
        2,
        3,
        kernel=kernel,
        kernel_options=dict(options),
        scheme=scheme,
        layers=4,
        train_embedding=True,
        epsilon=epsilon,
    )
    theta = net.init_controls(seed=0, gain=1.0)
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((S, 2)), rng.integers(0, 3, S)
    part = shard(S, layout.data.rank, layout.data.size)
    rf = ReducedFunctional(
        net, X[part], y[part], alpha=1e-2, beta=1e-2, gamma=1e-3, delta=1e-2, layout=layout, **kw
    )
    return net, theta, rf


@pytest.mark.parametrize("kernel,options", [("dense", {}), ("lowrank", {"rank": 3})])
@pytest.mark.parametrize("scheme", ["imex_euler", "midpoint", "verlet", "rk4"])
def test_sample_split_equals_one_sweep(kernel, options, scheme, comm, monkeypatch):
    net, theta, rf = _data_problem(comm, kernel, options, scheme)
    d = theta.subset(net.trainable).zeros_like()
    rng = np.random.default_rng(5)
    for k in d:
        d[k][...] = rng.standard_normal(d[k].shape)
    d["d"][...] = comm.bcast(d["d"])
    J1, g1 = rf.value_and_gradient(theta)
    g1, F1, H1 = g1.copy(), rf(theta), rf.hessian_action(theta, d)
    _two_threads(monkeypatch)
    J2, g2 = rf.value_and_gradient(theta)
    assert rf._split is not None and rf._split.T == 2  # the split ran
    assert J2 == pytest.approx(J1, rel=1e-13) and rf(theta) == pytest.approx(F1, rel=1e-13)
    scale = max(float(np.abs(g1[k]).max()) for k in g1)
    for name in g1:
        assert np.allclose(g2[name], g1[name], rtol=0, atol=1e-13 * scale), name
    H2 = rf.hessian_action(theta, d)
    scale = max(float(np.abs(H1[k]).max()) for k in H1)
    for name in H1:
        assert np.allclose(H2[name], H1[name], rtol=0, atol=1e-13 * scale), name
    g2 = g2.copy()
    J3, g3 = rf.value_and_gradient(theta)  # reused workspaces and spare arrays
    assert J3 == J2
    for name in g2:
        assert np.array_equal(g3[name], g2[name]), name
    assert taylor_test(rf, theta, d, h0=1e-3).min_rate >= 1.95
    rates2 = taylor_test(rf, theta, d, h0=3e-2, hessian=True).rates2
    assert max(rates2) > 2.9, rates2  # third order (midpoint: faster, then round-off)


def test_sample_split_only_where_it_can_run(comm, monkeypatch):
    _two_threads(monkeypatch)
    _, _, rf = _data_problem(comm, "local", {})  # a kernel with PETSc products
    assert split.eligible(rf.net, 40) == 1
    _, _, rf = _data_problem(comm, "dense", {}, epsilon=0.1)  # PETSc's diffusion solves
    assert split.eligible(rf.net, 40) == 1
    net, _, rf = _data_problem(comm, "dense", {})
    assert split.eligible(net, 40) == 2 and split.eligible(net, 7) == 1  # 4 columns a chunk
    assert split.eligible(net, 40, noise=object()) == 1  # paths per column: one sweep
    monkeypatch.setattr(split, "SHARED_BYTES", 8)  # a layer too large to stream twice
    assert split.eligible(net, 40) == 1
    monkeypatch.undo()
    _two_threads(monkeypatch)
    if comm.size > 1:  # width ranks: their collectives cannot run from two threads
        sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 3}, comm))
        wide = ContinuumNetwork(sp, 2, 3, kernel="dense", layers=2)
        assert split.eligible(wide, 40) == 1
    monkeypatch.setattr(threads, "blas_threads", lambda: 1)
    assert split.eligible(net, 40) == 1


def test_concurrently_returns_in_order_and_raises():
    assert threads.concurrently([lambda: 1, lambda: 2, lambda: 3]) == [1, 2, 3]

    def fail():
        raise ValueError("task failed")

    with pytest.raises(ValueError, match="task failed"):
        threads.concurrently([lambda: 1, fail])


def test_sample_split_reuses_the_networks_arrays(comm, monkeypatch):
    """Minibatch functionals of one network share its chunk workspaces and spares."""
    _two_threads(monkeypatch)
    net, theta, rf = _data_problem(comm, "dense", {})
    a, b = rf.batch(slice(0, 16)), rf.batch(slice(4, 20))
    a.value_and_gradient(theta)
    b.value_and_gradient(theta)
    assert a._split.workspaces[0] is net.workspace
    assert a._split.workspaces[1] is b._split.workspaces[1] and a._split.spares is b._split.spares
    assert net.workspace.lent == 0 and a._split.workspaces[1].nbytes > 0


def test_threads_rows_is_one_sweep_bit_identical(comm, monkeypatch):
    """``parallel.threads: rows`` reaches the training and test functionals (and
    their minibatches): one sweep, its element-wise work in row blocks on 2
    threads (BLAS itself on one here) bit-identical to one thread."""
    from pontryx.solver.app.problem import build_problem
    from pontryx.solver.config import validate_config

    raw = {
        "mesh": {"kind": "unit_square", "n": 3},
        "model": {"layers": 2},
        "data": {"name": "ellipses", "n_train": 80, "n_test": 40},
        "parallel": {"width": 1, "threads": "rows"},
    }
    p = build_problem(validate_config(raw, ranks=comm.size), comm)
    assert p.rf.threads == p.rf_test.threads == p.rf.batch(slice(0, 8)).threads == "rows"
    J1, g1 = p.rf.value_and_gradient(p.controls)
    g1 = g1.copy()
    _two_threads(monkeypatch)
    J2, g2 = p.rf.value_and_gradient(p.controls)
    assert p.rf._sample_split() is None and J1 == J2
    for name in g1:
        assert np.array_equal(g1[name], g2[name]), name
    p.rf.threads = "samples"
    assert p.rf._sample_split() is not None


def test_threads_rows_with_real_blas_threads(comm):
    """``rows`` with OpenBLAS really on 1 and on 2 threads (threadpoolctl): its
    threaded GEMMs sum in another order than its one-thread GEMMs, so J and ∇J
    agree to round-off, and are bit-identical from call to call on 2 threads (the
    README's promise for ``parallel.threads: rows``)."""
    from threadpoolctl import threadpool_limits

    sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 16}, comm))
    net = ContinuumNetwork(sp, 2, 3, layers=3, train_embedding=True)
    theta = net.init_controls(seed=0, gain=1.0)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 2)), rng.integers(0, 3, 300)
    rf = ReducedFunctional(net, X, y, alpha=1e-2, beta=1e-2, delta=1e-2, threads="rows")
    results = []
    for T in (1, 2, 2):
        with threadpool_limits(T):
            J, g = rf.value_and_gradient(theta)
            results.append((J, g.copy()))
    (J1, g1), (J2, g2), (J3, g3) = results
    assert J2 == J3 and all(np.array_equal(g2[k], g3[k]) for k in g2)
    assert J2 == pytest.approx(J1, rel=1e-13)
    for k in g1:
        assert np.allclose(g2[k], g1[k], rtol=1e-12, atol=1e-13 * np.abs(g1[k]).max()), k
