"""A rank's samples split over its threads: a data axis inside the rank.

With T BLAS threads, one sweep over all S samples runs its GEMMs on T threads,
and OpenBLAS's threaded GEMM at these shapes (N ≤ 1024 rows, S ≲ 1000 columns)
reaches only 55–85 % of T times its one-thread rate, while the element-wise work
between the GEMMs needs the row-block threads of :mod:`~pontryx.solver.model.threads`.
Instead, the columns are cut into T contiguous chunks s ∈ 𝒮_k and thread k runs
the whole forward and adjoint sweep of its chunk with BLAS on one thread and a
workspace of its own; the chunks' misfits and gradients are then summed in chunk
order,

    J_data = Σ_k (1/S) Σ_{s ∈ 𝒮_k} ℓ_s,      ∇J_data = Σ_k ∇_θ (1/S) Σ_{s ∈ 𝒮_k} ℓ_s,

exactly as the data ranks sum theirs (:meth:`.reduced.ReducedFunctional.reduce`),
so the split changes the results by round-off only (the order of the sample
sums), and for a fixed T they are deterministic. Measured with 2 threads on a
2-core Xeon (dense kernel, N_t = 16, A/B against one sweep in the same run;
``benchmarks/gradient_cost.py`` layouts ``threads`` and ``rows``, RESULTS.md):
N = 529, S = 1000: J 0.74–0.76×, ∇J 0.91–0.97×; N = 256: ∇J 0.82–0.91×. At
N = 1024 each chunk streams its own 8 MiB layer of W where one threaded GEMM
shares it: 0.82–1.09× in ten runs, a median of about 1, no gain — hence
:data:`SHARED_BYTES`.

Used by :class:`~.reduced.ReducedFunctional` for J, ∇J and the Hessian action
∇²J·dθ (``threads="samples"``,
the default; ``parallel.threads`` in the YAML) when :func:`eligible`: more than
one BLAS thread, one width rank (the width axis's collectives cannot run from
two threads), a kernel of plain NumPy products (``Kernel.threadsafe``: dense,
low rank), no diffusion in width (ε = 0: its solves are PETSc's), no noise in
depth, a kernel layer of at most :data:`SHARED_BYTES` and at least
:data:`MIN_COLUMNS` samples per chunk. The Pontryagin trajectories (whose states
and costates the layer solves read whole) and everything else run unsplit, on
the row-block threads.
"""

from __future__ import annotations

import itertools
import math
import weakref

import numpy as np

from pontryx.solver.model import threads
from pontryx.solver.model.workspace import Workspace

__all__ = ["MIN_COLUMNS", "SHARED_BYTES", "SampleSplit", "eligible", "runs"]

#: The fewest samples (sweep columns) of a chunk: below, one sweep on T threads.
MIN_COLUMNS = 32
#: The largest kernel layer (bytes of its controls) the chunks' sweeps stream each
#: on their own: above, one sweep whose threaded GEMMs share each layer's operand.
SHARED_BYTES = 4 << 20


def runs(threadsafe: bool, width_ranks: int, epsilon: float, noise: bool, layer_bytes) -> bool:
    """Whether the split can run for a network of this kind, whatever its samples
    and threads: a ``threadsafe`` kernel, one width rank, ε = 0, no noise in depth
    and a kernel layer of at most :data:`SHARED_BYTES` (also the memory estimate's
    rule, :func:`pontryx.solver.app.memory.estimate`)."""
    return (
        threadsafe
        and width_ranks == 1
        and epsilon == 0
        and not noise
        and layer_bytes <= SHARED_BYTES
    )


def eligible(net, columns: int, noise=None) -> int:
    """The number of chunks T to split ``columns`` sweep columns into (1: no split)."""
    T = threads.blas_threads()
    if T < 2:
        return 1
    layer_bytes = 8 * sum(math.prod(s) for s in net.kernel.shapes().values())
    threadsafe = getattr(net.kernel, "threadsafe", False)
    if not runs(threadsafe, net.space.comm.size, net.epsilon, noise is not None, layer_bytes):
        return 1
    if net.space.n * columns < threads.MIN_ELEMENTS:
        return 1
    return max(1, min(T, columns // MIN_COLUMNS))


class SampleSplit:
    """The T column chunks of ``columns`` samples of a functional on ``net``.
    Chunk 0 sweeps in the network's workspace and writes into the caller's spare
    arrays, which receive the sum; chunks 1 … T − 1 take a workspace and a spare
    gradient each from the network's pool (:func:`_pool`), so that functionals of
    one network (minibatches) reuse them from one call to the next."""

    def __init__(self, net, columns: int, T: int):
        edges = [columns * k // T for k in range(T + 1)]
        self.chunks = [slice(a, b) for a, b in itertools.pairwise(edges)]
        pool = _pool(net, T)
        self.workspaces = [net.workspace, *pool["workspaces"][: T - 1]]
        self.spares = pool["spares"]

    @property
    def T(self) -> int:
        return len(self.chunks)

    def _run(self, work) -> list:
        """``work(k)`` for every chunk k, concurrently, BLAS on one thread."""
        with threads.single_threaded_blas():
            return threads.concurrently([lambda k=k: work(k) for k in range(self.T)])

    def forward(self, make_sweep, X, misfit):
        """(misfit, stat) summed over the chunks: each chunk's forward sweep of its
        columns of X, its misfit by ``misfit(Ŷ_k, k)``."""

        def work(k):
            c = self.chunks[k]
            Yhat = make_sweep(self.workspaces[k]).forward(X[:, c])[0]
            m, _, stat = misfit(Yhat, k)
            return m, stat

        parts = self._run(work)
        return float(sum(p[0] for p in parts)), float(sum(p[1] for p in parts))  # in order

    def gradient(self, make_sweep, X, misfit, out=None):
        """(gradient, misfit, stat) summed over the chunks (the gradient in
        chunk 0's arrays, ``out`` if given)."""
        spares = [out, *(self.spares.get(k) for k in range(self.T - 1))]

        def work(k):
            c = self.chunks[k]
            sweep = make_sweep(self.workspaces[k])
            return sweep.gradient(X[:, c], lambda Y: misfit(Y, k), out=spares[k])

        results = self._run(work)
        grad = results[0].gradient
        for r in results[1:]:  # on the T threads again, in row blocks
            for name, a in grad.items():
                _add(a, r.gradient[name])
        for k, r in enumerate(results[1:]):
            self.spares[k] = dict(r.gradient)
        misfit_sum = float(sum(r.misfit for r in results))  # in chunk order
        return grad, misfit_sum, float(sum(r.stat for r in results))

    def hessian(self, make_sweep, X, misfit, hvp, direction):
        """∇²J_data · dθ summed over the chunks: each chunk's tangent and
        second-order adjoint sweeps (:meth:`.sweep.Sweep.hessian_action`, whose
        arrays are fresh, not pooled); ``hvp(Ŷ_k, V)`` the loss Hessian's action."""

        def work(k):
            c = self.chunks[k]
            sweep = make_sweep(self.workspaces[k])
            return sweep.hessian_action(X[:, c], lambda Y: misfit(Y, k), hvp, direction)

        results = self._run(work)
        H = results[0].hessian_action
        for r in results[1:]:
            for name, a in H.items():
                _add(a, r.hessian_action[name])
        return H


_POOLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _pool(net, T: int) -> dict:
    """The workspaces and spare gradients of chunks 1 … T − 1 of ``net``'s sweeps
    (kept with the network, dropped with it)."""
    pool = _POOLS.setdefault(net, {"workspaces": [], "spares": {}})
    while len(pool["workspaces"]) < T - 1:
        pool["workspaces"].append(Workspace())
    return pool


def _add(a: np.ndarray, b: np.ndarray) -> None:
    """a += b (in row blocks on the BLAS threads for arrays of rows)."""
    if a.ndim >= 2 and a.flags.c_contiguous and b.flags.c_contiguous:
        threads.add_into(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]))
    else:
        a += b
