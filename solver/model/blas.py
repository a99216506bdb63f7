"""The library that runs the kernels' GEMMs: NumPy's BLAS or Intel MKL.

The dense and low-rank kernels spend most of a sweep in three GEMMs per layer
(forward W(M_L U), adjoint WᵀD and D(M_L U)ᵀ). NumPy's wheels bring OpenBLAS; PyPI's
``mkl`` package (``pip install 'pontryx[mkl]'``) brings Intel's MKL, whose DGEMM
ran at 1.14–1.33× OpenBLAS's rate on one thread of a 2-core Xeon (AVX-512;
N = 256 … 1024; benchmarks/RESULTS.md, peers): the library PyTorch's CPU wheels
use, so that with it both frameworks are timed on the same GEMM.

:func:`use` ("numpy", the default, or "mkl"; ``parallel.blas`` in the YAML) picks
the library for the whole process; :func:`matmul` is ``np.matmul(A, B, out=out)``
for 2-D float64 operands, run by that library (with "mkl": ``cblas_dgemm`` through
ctypes, the operands' memory order given as transposition flags, so ``W.T`` is no
copy). Thread counts: MKL starts on as many threads as NumPy's BLAS has
(``OPENBLAS_NUM_THREADS``), and threadpoolctl sees it once it is loaded, so
``threadpool_limits(T, user_api="blas")`` and :func:`~.threads.blas_threads`
cover it as they cover OpenBLAS. MKL's OpenMP threads would spin 200 ms after each
call (``KMP_BLOCKTIME``) on the cores the row-block threads need between the GEMMs;
:func:`use` sets ``KMP_BLOCKTIME=0`` (they sleep at once) unless the user set it,
as :mod:`pontryx.solver` sets ``OPENBLAS_THREAD_TIMEOUT`` for OpenBLAS.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import site
import sys
import sysconfig
from pathlib import Path

import numpy as np

__all__ = [
    "LIBRARIES",
    "BlasUnavailable",
    "available",
    "controllers",
    "current",
    "matmul",
    "set_global_threads",
    "use",
]

LIBRARIES = ("numpy", "mkl")
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_state: dict = {"name": "numpy", "dgemm": None, "lib": None, "global": None, "controllers": None}


class BlasUnavailable(RuntimeError):
    """The library asked for cannot be loaded (its message says how to install it)."""


def _load_mkl():
    """``cblas_dgemm`` of MKL's single dynamic library (libmkl_rt), looked for in
    the lib/ of the install schemes' data directories (where pip puts the files of
    PyPI's ``mkl``: the venv, /usr/local for a system install, the user base for
    ``--user``), then by the loader."""
    roots = [sysconfig.get_path("data"), sys.prefix, sys.base_prefix, site.getuserbase()]
    names = []
    for root in dict.fromkeys(roots):  # in order, once each
        names += [str(p) for p in sorted(Path(root, "lib").glob("libmkl_rt.so*"))]
    found = ctypes.util.find_library("mkl_rt")
    names += [found] if found else []
    os.environ.setdefault("KMP_BLOCKTIME", "0")
    for name in names:
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        # 32-bit integers in the calls below: the LP64 interface, whatever
        # MKL_INTERFACE_LAYER says (ILP64 read them as 64-bit: a segmentation fault)
        with contextlib.suppress(AttributeError):
            lib.MKL_Set_Interface_Layer.argtypes = [ctypes.c_int]
            lib.MKL_Set_Interface_Layer(0)  # MKL_INTERFACE_LP64
        f = lib.cblas_dgemm
        c_int, c_double, ptr = ctypes.c_int, ctypes.c_double, ctypes.c_void_p
        f.argtypes = [c_int] * 6 + [c_double, ptr, c_int, ptr, c_int, c_double, ptr, c_int]
        f.restype = None
        _state["lib"] = lib
        return f
    raise BlasUnavailable("Intel MKL not found: install it with pip install 'pontryx[mkl]'")


def use(name: str) -> None:
    """Run :func:`matmul` with ``name`` ("numpy" or "mkl") from now on, in this process."""
    if name not in LIBRARIES:
        raise ValueError(f"expected one of {', '.join(LIBRARIES)}, got {name!r}")
    if name == "mkl" and _state["dgemm"] is None:
        _state["dgemm"] = _load_mkl()
        _follow_numpy_threads()
    _state["name"] = name


def controllers() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process
    (NumPy's, and MKL once :func:`use` has loaded it); found once, empty if
    threadpoolctl cannot tell."""
    libs = _state["controllers"]
    if libs is None:
        try:
            from threadpoolctl import ThreadpoolController

            libs = ThreadpoolController().select(user_api="blas").lib_controllers
        except Exception:  # pragma: no cover - threadpoolctl unavailable or failing
            libs = []
        _state["controllers"] = libs
    return libs


def _follow_numpy_threads() -> None:
    """MKL on as many threads as NumPy's BLAS (``OPENBLAS_NUM_THREADS``, or a
    ``threadpool_limits`` around the call), not on MKL's own default of all cores."""
    _state["controllers"] = None  # threadpoolctl sees MKL from now on
    numpy_blas = [lib.num_threads for lib in controllers() if lib.internal_api != "mkl"]
    set_global_threads(max(numpy_blas, default=1))  # every thread's, this one's too


def set_global_threads(n: int) -> int | None:
    """Set MKL's global thread count — that of every thread without a count of its
    own — to ``n`` and return the previous one (None, and nothing set, if MKL is
    not loaded). threadpoolctl sets MKL's count of the *calling* thread only
    (``MKL_Set_Num_Threads_Local``), so threads started elsewhere (the sample
    chunks' pool, :mod:`pontryx.solver.adjoint.split`) follow this one:
    :func:`~.threads.single_threaded_blas` sets it to 1 around the chunks."""
    lib = _state["lib"]
    if lib is None:
        return None
    previous = _state["global"]
    lib.MKL_Set_Num_Threads(int(n))
    _state["global"] = int(n)
    return previous


def available(name: str) -> bool:
    """Whether :func:`use` can run ``name`` here (loads MKL if it is installed; the
    library in use stays)."""
    if name not in LIBRARIES:
        return False
    previous = current()
    try:
        use(name)
    except BlasUnavailable:
        return False
    use(previous)
    return True


def current() -> str:
    """The library :func:`matmul` runs on ("numpy" or "mkl")."""
    return _state["name"]


def _operand(X: np.ndarray):
    """(transposed?, leading dimension) of a 2-D array in row-major terms, or None
    when its memory is neither C- nor Fortran-contiguous."""
    if X.flags.c_contiguous:
        return False, max(X.shape[1], 1)
    if X.flags.f_contiguous:
        return True, max(X.shape[0], 1)
    return None


def matmul(A: np.ndarray, B: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``A @ B`` into ``out`` (a new array if None), by the library of :func:`use`.
    MKL runs 2-D float64 products whose operands are C- or Fortran-contiguous
    (transposed views included) into a C-contiguous ``out``; anything else, and
    "numpy", is ``np.matmul``."""
    dgemm = _state["dgemm"] if _state["name"] == "mkl" else None
    if dgemm is None or A.ndim != 2 or B.ndim != 2:
        return np.matmul(A, B, out=out)
    if out is None:
        out = np.empty((A.shape[0], B.shape[1]), np.result_type(A, B))
    a, b = _operand(A), _operand(B)
    m, k = A.shape
    n = B.shape[1]
    if (
        a is None
        or b is None
        or not (A.dtype == B.dtype == out.dtype == np.float64)
        or not out.flags.c_contiguous
        or out.shape != (m, n)
        or B.shape[0] != k
        or min(m, n, k) == 0
        or np.may_share_memory(out, A)
        or np.may_share_memory(out, B)
    ):
        return np.matmul(A, B, out=out)
    (ta, lda), (tb, ldb) = a, b
    dgemm(
        _ROW_MAJOR, _TRANS if ta else _NO_TRANS, _TRANS if tb else _NO_TRANS, m, n, k,
        1.0, A.ctypes.data, lda, B.ctypes.data, ldb, 0.0, out.ctypes.data, max(n, 1),
    )  # fmt: skip
    return out
