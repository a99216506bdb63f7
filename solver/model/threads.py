"""The element-wise work of the sweeps on the BLAS threads, in row blocks.

A layer of the dense kernel is one GEMM (two in the adjoint) and O(NS)
element-wise work between them: σ(Z), σ'(Z), the scalings by Δt and M_L, the
products with the costate, the row sums ∂J/∂b = D 1. BLAS runs its GEMMs on T
threads; NumPy's ufuncs run on one, so with T = 2 the element-wise share of
the time doubles. NumPy releases the GIL inside its ufuncs, so a persistent
pool of T threads (:class:`concurrent.futures.ThreadPoolExecutor`) applies the
same ufuncs to contiguous row blocks of the (n × S) multivectors concurrently:
each thread takes one contiguous group of blocks (the calling thread the first),
so a pass costs T − 1 hand-offs to the pool, not one per block. OpenBLAS's idle
threads busy-wait for 2²⁸ cycles after each GEMM, on the very cores this work
needs; :mod:`pontryx.solver`, imported before NumPy, sets
``OPENBLAS_THREAD_TIMEOUT=4`` (they sleep at once) unless the user set it.
Measured with 2 threads (N = 1024, S = 1000, 16 layers, 2-core Xeon, A/B runs):
the sleeping threads took the low-rank gradient from 0.33 to 0.25 s (medians of 9
and 7 runs) and the groups then to 0.21–0.23 s; the dense gradient gained about 5 %.

Every operation run here is element-wise or a reduction along a row (axis 1)
of its block, so the result is **bit-identical** for any number of threads and
any block partition. T is the number of threads of NumPy's BLAS (read through
threadpoolctl at each call, so ``threadpool_limits`` and ``OPENBLAS_NUM_THREADS``
apply); with T = 1 the blocks run in turn in the calling thread, so that a chain
of ufuncs on a block stays in cache instead of streaming whole multivectors
through memory once per ufunc; an array too small to be worth splitting is
processed whole, in the calling thread. (Where the samples are split over the
threads instead, :mod:`pontryx.solver.adjoint.split`, each chunk's sweep runs
with T = 1 and :func:`concurrently` runs the chunks.)
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from pontryx.solver.model import blas

__all__ = [
    "add_into",
    "blas_threads",
    "concurrently",
    "row_blocks",
    "rows",
    "scale_rows",
    "single_threaded_blas",
]

#: Elements per block (≈ 256 KiB of float64: a block's chain of ufuncs stays in cache).
BLOCK_ELEMENTS = 1 << 15
#: Below this many elements an array is processed whole, in the calling thread.
MIN_ELEMENTS = 1 << 16

_lock = threading.Lock()
_state: dict = {"pool": None, "size": 0, "pid": None}


def blas_threads() -> int:
    """The number of threads of NumPy's BLAS (1 if threadpoolctl cannot tell)."""
    return max((lib.num_threads for lib in blas.controllers()), default=1)


@contextlib.contextmanager
def single_threaded_blas():
    """NumPy's BLAS (and MKL, :mod:`.blas`) on one thread inside the block, in this
    thread and in the threads it starts (for many small GEMMs run concurrently on
    the row-block threads instead); restored afterwards."""
    libs = blas.controllers()
    before = [lib.num_threads for lib in libs]
    for lib in libs:
        lib.set_num_threads(1)
    mkl = blas.set_global_threads(1)  # MKL's count in other threads (threadpoolctl: this one's)
    try:
        yield
    finally:
        for lib, n in zip(libs, before):
            lib.set_num_threads(n)
        if mkl is not None:
            blas.set_global_threads(mkl)


def _pool(threads: int) -> ThreadPoolExecutor:
    with _lock:
        if _state["pid"] != os.getpid():  # a forked child has no pool threads
            _state.update(pool=None, size=0, pid=os.getpid())
        if _state["size"] < threads:
            if _state["pool"] is not None:
                _state["pool"].shutdown(wait=True)
            _state["pool"] = ThreadPoolExecutor(threads, thread_name_prefix="pontryx-rows")
            _state["size"] = threads
        return _state["pool"]


def row_blocks(n_rows: int, row_length: int, threads: int) -> list[slice]:
    """Contiguous row blocks covering ``range(n_rows)``: at least ``threads`` of
    them (when there are rows enough), each of about :data:`BLOCK_ELEMENTS`."""
    return list(_blocks(n_rows, row_length, threads, BLOCK_ELEMENTS))


@functools.lru_cache(maxsize=256)
def _blocks(n_rows: int, row_length: int, threads: int, size: int) -> tuple[slice, ...]:
    """:func:`row_blocks`, kept: a sweep asks for the same few partitions every layer."""
    if n_rows <= 1:
        return (slice(0, n_rows),)
    rows_per = max(1, size // max(row_length, 1))
    count = max(threads, -(-n_rows // rows_per))
    count = min(count, n_rows)
    edges = np.linspace(0, n_rows, count + 1).round().astype(int)
    return tuple(slice(int(a), int(b)) for a, b in itertools.pairwise(edges))


def rows(fn, n_rows: int, row_length: int, threads: int | None = None) -> None:
    """Call ``fn(block)`` for contiguous row blocks ``block`` (slices) covering
    ``range(n_rows)``, concurrently on ``threads`` threads (default: the BLAS
    threads; one: in turn, in the calling thread). ``fn`` must only touch rows
    ``block`` of its arrays (element-wise work or sums along rows), so the result
    does not depend on the blocks."""
    if n_rows * row_length < MIN_ELEMENTS:
        fn(slice(0, n_rows))
        return
    T = blas_threads() if threads is None else int(threads)
    blocks = _blocks(n_rows, row_length, T, BLOCK_ELEMENTS)
    if T <= 1:
        for b in blocks:
            fn(b)
        return

    def run(group):  # one task per thread: its blocks in turn (the chains stay in cache)
        for b in group:
            fn(b)

    T = min(T, len(blocks))
    groups = [blocks[len(blocks) * i // T : len(blocks) * (i + 1) // T] for i in range(T)]
    concurrently([lambda g=g: run(g) for g in groups])  # the caller takes the first group


def concurrently(tasks) -> list:
    """The results of the callables ``tasks``, run concurrently, one per thread
    (the calling thread runs the first); an exception of any reaches the caller."""
    tasks = list(tasks)
    futures = [_pool(len(tasks)).submit(t) for t in tasks[1:]]
    try:
        first = tasks[0]()
    finally:
        rest = [f.result() for f in futures]  # waits for all; re-raises their exception
    return [first, *rest]


def scale_rows(m: np.ndarray, X: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """diag(m) X (``out`` may be ``X``), in row blocks on the BLAS threads."""
    if out is None:
        out = np.empty_like(X)
    length = X[0].size if len(X) else 0
    rows(lambda r: np.multiply(m[r, None], X[r], out=out[r]), X.shape[0], length)
    return out


def add_into(Y: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Y += X, in row blocks on the BLAS threads."""
    rows(lambda r: np.add(Y[r], X[r], out=Y[r]), Y.shape[0], Y[0].size if len(Y) else 0)
    return Y
