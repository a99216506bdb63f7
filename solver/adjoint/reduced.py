"""The reduced functional J(θ) of a continuum network, in the spirit of pyadjoint.

    J(θ) = (1/S) Σ_s ℓ(ŷ_s(θ), y_s) + R(θ),
    R(θ) = (α/2) Δt Σ_n ‖θⁿ‖²  +  (β/2) Δt Σ_n ‖(θ^{n+1} − θⁿ)/Δt‖²  +  (γ/2) Δt Σ_n |θⁿ|²_{H¹}
           + (δ/2) (‖E‖²_{M_L} + ‖C‖²_{M_L} + |d|²)

(DESIGN.md §1, the time integrals by the rectangle rule, the lumped L² norms of
:meth:`ContinuumNetwork.regularisation_weights`; γ: the H¹ seminorm in width,
|f|²_{H¹} = fᵀ A f for a field f ∈ V_h (b, the low-rank factors, the local
kernel's fields) and ∫∫ |∇_x w|² + |∇_y w|² ≈ tr(Wᵀ A W M_L) + tr(M_L W A Wᵀ)
for the dense kernel w(x, y): with γ > 0 the continuum problem controls the
kernels' gradients, so minimisers do not sharpen without bound as h → 0 and
trained networks can converge in width), over the layer controls
θⁿ = (Kⁿ, bⁿ); δ (0 in DESIGN.md's J) on the embedding and readout where they
are trained, Σ_j ∫ e_j² + Σ_k ∫ c_k² + |d|² — without it, on separable data the
cross-entropy falls along a ray of growing readout and J has no minimiser. ``rf(θ)`` evaluates J
(one forward sweep); :meth:`ReducedFunctional.value_and_gradient` adds the exact
gradient of the discrete J (one adjoint sweep, Allreduces over the data
ranks); :meth:`ReducedFunctional.hessian_action` the exact Hessian action ∇²J·dθ
(a tangent sweep and a second-order adjoint sweep, :mod:`.sweep`);
with noise in depth (``noise``, :mod:`pontryx.solver.model.noise`) J is the mean
over M fixed paths of every sample, (1/S) Σ_s (1/M) Σ_p ℓ(ŷ_s^{(p)}, y_s) + R, and
these are its exact pathwise derivatives;
:meth:`ReducedFunctional.derivative` returns the last gradient, optionally as
its L²(M_L) Riesz representative ω⁻¹∇J (``apply_riesz``, :mod:`.riesz`).
"""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import Mapping

from mpi4py import MPI

import numpy as np

from pontryx.meshes.errors import InputError, integer, nonnegative, show, show_dtype
from pontryx.solver.adjoint import split
from pontryx.solver.adjoint.riesz import RieszMap
from pontryx.solver.adjoint.sweep import Sweep
from pontryx.solver.model.controls import Controls
from pontryx.solver.model.loss import LOSSES
from pontryx.solver.model.threads import rows

#: Values per Allreduce of the data-rank gradient sum (8 MiB): MPI takes a temporary
#: of the message's size, which for a whole dense ∂J/∂W (N_t·n·N values) is mapped
#: afresh by the C allocator and page-faulted at every call; in chunks it is reused.
#: Measured (2 ranks, 128 MiB): 0.127 s in one call, 0.074 s in 8 MiB chunks.
SUM_CHUNK = 1 << 20

__all__ = ["ReducedFunctional", "Regulariser", "layer_gradient_norms"]


_scratch = threading.local()


def _buffers(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three work arrays of ``size`` values of the calling thread (kept, grown as needed)."""
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None or bufs[0].size < size:
        bufs = _scratch.bufs = tuple(np.empty(size) for _ in range(3))
    return tuple(b[:size] for b in bufs)


def _quadratic_terms(theta, wa, wb, grad, layers, va, vb) -> None:
    """The α and β terms of the layers ``layers`` of one control (``theta``: all
    L layers): with dˡ = θˡ⁺¹ − θˡ,

        va[l] = row sums of (wa ∘ θˡ) ∘ θˡ,   vb[l] = row sums of (wb ∘ dˡ) ∘ dˡ,
        grad[l] ← ((grad[l] + wb ∘ dˡ⁻¹) + wa ∘ θˡ) − wb ∘ dˡ

    for the terms present (wa, wb: the weights ω scaled by αΔt and β/Δt, None: no
    such term; dˡ for l ∈ ``layers``, l + 1 < L; ``grad`` None: the values only).
    One pass over row blocks on the BLAS threads (one hand-off to the threads per
    control: per layer, at N = 256 the hand-offs made two threads slower than one);
    a block runs its rows through the layers in order, its chain of ufuncs in cache
    and wb ∘ dˡ carried to layer l + 1. Every row is one block's, so the results do
    not depend on the blocks or the threads (:func:`~pontryx.solver.model.threads.rows`)."""
    L, n = theta.shape[0], theta.shape[1]
    length = theta[0][0].size if n else 0
    inside = np.zeros(L, dtype=bool)
    inside[list(layers)] = True

    def rowsum(p, q, out):  # Σ_j p_ij q_ij of the block's rows
        np.einsum("ij,ij->i", p.reshape(len(out), -1), q.reshape(len(out), -1), out=out)

    def block(r):
        shape = theta[0][r].shape
        A, D, carried = (buf.reshape(shape) for buf in _buffers(math.prod(shape)))
        held = False  # carried = wb ∘ dˡ⁻¹ of these rows
        for l in range(L):
            x = theta[l][r]
            g = None if grad is None else grad[l][r]
            if held and g is not None:
                np.add(g, carried, out=g)
            held = False
            if not inside[l]:
                continue
            if wa is not None:
                a = np.multiply(wa[r], x, out=A)
                rowsum(a, x, va[l][r])
                if g is not None:
                    np.add(g, a, out=g)
            if wb is not None and l + 1 < L:
                d = np.subtract(theta[l + 1][r], x, out=D)
                a = np.multiply(wb[r], d, out=carried)
                rowsum(a, d, vb[l][r])
                if g is not None:
                    np.subtract(g, a, out=g)
                    held = True

    if n:
        rows(block, n, length)


class Regulariser:
    """R(θ) above. The α and β terms run in row blocks on the BLAS threads through
    all layers (:func:`_quadratic_terms`) with work arrays of one block per thread:
    no temporary of a layer's or of all controls' size (γ's H¹ terms take a few
    of one layer's size).
    R is quadratic: its Hessian action is its gradient at dθ."""

    def __init__(self, net, alpha: float, beta: float, gamma: float = 0.0, delta: float = 0.0):
        self.net, self.alpha, self.beta = net, float(alpha), float(beta)
        self.gamma, self.delta = float(gamma), float(delta)
        self.weights = net.regularisation_weights()
        self._scaled: dict = {}  # name → ((αΔt, β/Δt), αΔt ω, β/Δt ω)

    def outer(self, theta, grad=None) -> float:
        """This width rank's part of (δ/2)(‖E‖²_{M_L} + ‖C‖²_{M_L} + |d|²) over the
        trained embedding and readout in ``theta`` (the replicated d counted on
        width rank 0); adds δ M_L E, δ M_L C, δ d to ``grad`` if given."""
        if not self.delta:
            return 0.0
        net, local = self.net, 0.0
        for name in ("E", "C", "d"):
            if name not in net.trainable or name not in theta:
                continue
            th = theta[name]
            a = th if name == "d" else net.space.m[:, None] * th
            if name != "d" or net.space.comm.rank == 0:
                local += 0.5 * self.delta * float(np.vdot(a, th))
            if grad is not None:
                grad[name] += self.delta * a
        return local

    def smoothness(self, name: str, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """(½|θ|²_{H¹}, its gradient) of one layer's control ``name`` (this width
        rank's part of the value; see the module docstring). Collective."""
        sp = self.net.space
        if name in self.net.kernel.full_axis:  # w(x, y): ∇ in x and in y
            AW = sp.matmul(sp.A, theta)  # (A W) rows
            WA = np.asarray((sp.stiffness_csr @ theta.T).T)  # (W A) rows, A symmetric
            m_rows, m_cols = sp.m[:, None], sp.allgather(sp.m)[None, :]
            grad = AW * m_cols + m_rows * WA
            return 0.5 * float(np.vdot(theta, grad)), grad
        flat = theta.reshape(theta.shape[0], -1)
        grad = sp.matmul(sp.A, flat).reshape(theta.shape)
        return 0.5 * float(np.vdot(theta, grad)), grad

    def __call__(self, controls, grad: Controls | None = None, layers=None) -> float:
        """R(θ) (summed over the width ranks); adds ∂R/∂θ to ``grad`` if given.
        ``layers``: only the terms of these layers (α‖θⁿ‖², γ|θⁿ|²_{H¹} and the
        difference θⁿ⁺¹ − θⁿ; δ's with the last layer), so that blocks of layers on
        different ranks add up to R."""
        alpha, beta, gamma = self.alpha, self.beta, self.gamma
        if alpha == 0 and beta == 0 and gamma == 0 and self.delta == 0:
            return 0.0
        net = self.net
        dt, L = net.dt, net.layers
        layers = range(L) if layers is None else layers
        local = self.outer(controls, grad) if L - 1 in layers else 0.0  # one block adds it
        for name, w in self.weights.items():
            th = controls[name]
            g = grad[name] if grad is not None else None
            if gamma:
                for n in layers:
                    value, gs = self.smoothness(name, th[n])
                    local += gamma * dt * value
                    if g is not None:
                        g[n] += gamma * dt * gs
            wa, wb = self._scaled_weights(name, w)
            if wa is None and (wb is None or L < 2):
                continue
            va, vb = np.zeros(th.shape[:2]), np.zeros(th.shape[:2])
            _quadratic_terms(th, wa, wb, g, layers, va, vb)
            for n in layers:  # the layers' sums in order: the same for any blocks
                local += 0.5 * (float(va[n].sum()) if wa is not None else 0.0)
                local += 0.5 * (float(vb[n].sum()) if wb is not None and n + 1 < L else 0.0)
        return net.space.sum(local)

    def _scaled_weights(self, name: str, w: np.ndarray):
        """(αΔt ω, β/Δt ω) of control ``name`` (None where α or β is 0), kept until α
        or β changes: (αΔt/2)‖θⁿ‖²_ω = ½⟨αΔt ω θⁿ, θⁿ⟩ with gradient αΔt ω θⁿ, and
        likewise for β."""
        dt = self.net.dt
        key = (self.alpha * dt, self.beta / dt)
        kept = self._scaled.get(name)
        if kept is None or kept[0] != key:
            kept = (key, *(w * c if c else None for c in key))
            self._scaled[name] = kept
        return kept[1], kept[2]

    def own(self, name: str, theta: np.ndarray, grad: np.ndarray | None = None) -> float:
        """This width rank's part of (α/2) Δt ‖θⁿ‖² + (γ/2) Δt |θⁿ|²_{H¹}, the terms of
        one layer's control ``name`` (``theta``: that layer's array) that involve no
        other layer; adds their gradient to ``grad`` (the layer's gradient array)
        if given. Collective in width when γ > 0."""
        dt, local = self.net.dt, 0.0
        if self.alpha:
            a = self.weights[name] * theta
            local += 0.5 * self.alpha * dt * float(np.vdot(a, theta))
            if grad is not None:
                grad += self.alpha * dt * a
        if self.gamma:
            value, gs = self.smoothness(name, theta)
            local += self.gamma * dt * value
            if grad is not None:
                grad += self.gamma * dt * gs
        return local

    def layer(self, n: int, theta: dict, frozen, grad: dict) -> float:
        """This width rank's part of the terms of R that involve layer n, with the
        neighbouring layers held at ``frozen`` (a block of a Jacobi/Gauss–Seidel
        sweep); adds their gradient to ``grad``. Not summed over ranks."""
        net, beta = self.net, self.beta
        dt, L = net.dt, net.layers
        neighbours = [k for k in (n - 1, n + 1) if 0 <= k < L] if beta and L > 1 else []
        local = 0.0
        for name in net.layer_names:
            w, th = self.weights[name], theta[name]
            local += self.own(name, th, grad[name])
            for k in neighbours:
                d = th - frozen[name][k]
                a = w * d
                local += 0.5 * beta / dt * float(np.vdot(a, d))
                grad[name] += beta / dt * a
        return local


def layer_gradient_norms(net, grad) -> np.ndarray:
    """‖∂J/∂θⁿ‖ for n = 0 … N_t−1 (Euclidean over all layer controls, all ranks)."""
    local = np.zeros(net.layers)
    for name in net.layer_names:
        for n, g in enumerate(grad[name]):  # layer by layer: no control-sized temporary
            local[n] += float(np.vdot(g, g))
    return np.sqrt(net.space.sum(local))


def _weight(name: str, doc: str) -> property:
    """A weight of :class:`Regulariser` read and set through the reduced functional
    (set as a float)."""

    def get(self) -> float:
        return getattr(self.regulariser, name)

    def set(self, value: float) -> None:
        setattr(self.regulariser, name, nonnegative(value, name))

    return property(get, set, doc=doc)


def _samples(net, X, y, task, weights, empty=False):
    """(X as float (S_local × n_in), y as int64 labels 0 … n_out − 1 or float
    (S_local × n_out)) after checking them and the regulariser's weights; a bad
    one is an :class:`InputError` keyed ``X``, ``y``, ``task`` or the weight."""
    if not isinstance(task, str) or task not in LOSSES:
        raise InputError(f"expected one of {', '.join(LOSSES)}, got {show(task)}", "task")
    for name, w in weights.items():
        nonnegative(w, name)
    if np.iscomplexobj(X):
        raise InputError("expected real numbers, got complex ones", "X")
    try:
        X = np.asarray(X, dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise InputError("expected a numeric array (S_local × n_in) of floats", "X") from None
    if X.ndim != 2 or X.shape[1] != net.n_in or (X.shape[0] == 0 and not empty):
        raise InputError(f"expected shape (S_local, {net.n_in}), got {X.shape}", "X")
    if not np.isfinite(X).all():
        raise InputError("has non-finite values", "X")
    S = len(X)
    yv = np.asarray(y)
    if yv.dtype.kind not in "iuf":  # not bool, complex, object or text
        raise InputError(f"expected numbers, got an array of {show_dtype(yv.dtype)}", "y")
    if task == "classification":
        if yv.shape != (S,):
            raise InputError(f"expected {S} labels (one per row of X), got shape {yv.shape}", "y")
        f = yv.astype(float)
        bad = ~(np.isfinite(f) & (f == np.floor(f)) & (f >= 0) & (f < net.n_out))
        if bad.any():
            raise InputError(
                f"expected class labels 0 … {net.n_out - 1}, got {yv[bad][0].item()!r}", "y"
            )
        return X, yv.astype(np.int64)
    if yv.shape not in ((S, net.n_out), (S,) if net.n_out == 1 else ()):
        raise InputError(f"expected shape ({S}, {net.n_out}), got {yv.shape}", "y")
    yv = yv.astype(float).reshape(S, net.n_out)
    if not np.isfinite(yv).all():
        raise InputError("has non-finite values", "y")
    return X, yv


class ReducedFunctional:
    """θ ↦ J(θ) for a network, a local block of samples and a loss.

    ``X`` (S_local × n_in) and ``y`` hold this data group's samples (class
    labels 0 … n_out − 1, or targets S_local × n_out; checked, as are ``task``
    and the weights α, β, γ, δ ≥ 0: an :class:`InputError` keyed by the
    argument, raised on every data rank); ``S`` is
    the global number of samples (default: the sum over the data ranks).
    ``layout`` gives the data communicator (``None``: no data split);
    ``checkpoint`` the storage of the adjoint sweep (:func:`.sweep.storage`);
    ``threads``: how the BLAS threads share J, ∇J and ∇²J·dθ, ``"samples"`` (the sample
    split of :mod:`.split` where it can run) or ``"rows"`` (one sweep; equal to one
    thread's results up to the round-off of OpenBLAS's threaded GEMMs, its
    element-wise work bit-identical for any number of threads).
    """

    def __init__(
        self,
        net,
        X,
        y,
        task="classification",
        *,
        alpha=0.0,
        beta=0.0,
        gamma=0.0,
        delta=0.0,
        layout=None,
        S=None,
        checkpoint=None,
        noise=None,
        ids=None,
        threads="samples",
    ):
        if threads not in ("samples", "rows"):
            raise InputError(f"expected 'samples' or 'rows', got {show(threads)}", "threads")
        if not callable(getattr(net, "check_controls", None)):
            raise InputError(f"expected a ContinuumNetwork, got {show(net)}", "net")
        self.threads, self._split = threads, None
        self.net = net
        if layout is not None and not isinstance(getattr(layout, "data", None), MPI.Comm):
            raise InputError(f"expected a Layout or None, got {show(layout)}", "layout")
        self.layout = layout
        self.data_comm = layout.data if layout is not None else MPI.COMM_SELF
        weights = {"alpha": alpha, "beta": beta, "gamma": gamma, "delta": delta}
        try:  # every data rank checks its samples; all raise the first rank's error
            # (no local samples: a data rank's empty share, of a minibatch too, with S given)
            empty = layout is not None or S is not None
            problem, X, y = None, *_samples(net, X, y, task, weights, empty=empty)
        except InputError as e:
            problem = e
        except Exception as e:  # anything else too: no rank left waiting below
            problem = InputError(f"{type(e).__name__}: {e}", "X, y")
        problem = next((e for e in self.data_comm.allgather(problem) if e is not None), None)
        if problem is not None:
            raise problem
        self.X = np.ascontiguousarray(X.T)
        self.task = task
        self.y = y if task == "classification" else np.ascontiguousarray(y.T)
        self.regulariser = Regulariser(net, alpha, beta, gamma, delta)
        total = self.data_comm.allreduce(self.X.shape[1])
        if S is not None:
            why = " (the global number of samples: at least the data ranks' samples)"
            integer(S, "S", max(total, 1), why=why)
        if total == 0 and S is None:
            raise InputError("no samples on any data rank", "X")
        self.S = int(S) if S is not None else total
        self.checkpoint = checkpoint
        Sweep(net, None, checkpoint)  # check the storage strategy now
        self._loss = LOSSES[task]
        self.last = None
        self._grad = None
        self._set_noise(noise, ids)

    # -- noise in depth ---------------------------------------------------------------
    def _set_noise(self, noise, ids) -> None:
        """M paths per sample: the sweep's columns are (sample, path) pairs, sample-major
        (the inputs repeated M times), and the misfit is their mean (1/(S M)) Σ ℓ."""
        self.noise = noise
        self.paths = noise.samples if noise is not None else 1
        self.epoch = 0
        self.keep_noise = True  # full functionals keep drawn increments (batches do not)
        self._increments = None
        if ids is None:  # the contiguous shards of the data ranks, in rank order
            offset = self.data_comm.exscan(self.S_local)
            offset = int(offset) if self.data_comm.rank > 0 and offset is not None else 0
            ids = offset + np.arange(self.S_local)
        self.ids = np.asarray(ids, dtype=np.int64)  # global sample indices
        M = self.paths
        self._Xc = self.X if M == 1 else np.ascontiguousarray(np.repeat(self.X, M, axis=1))
        axis = 0 if self.task == "classification" else 1
        self._yc = self.y if M == 1 else np.repeat(self.y, M, axis=axis)

    def redraw(self, epoch: int) -> None:
        """Take the noise paths of ``epoch`` if ``model.noise.resample`` is set (the
        stochastic methods call this with the iteration number); else nothing."""
        if self.noise is not None and self.noise.resample:
            self.epoch = int(epoch)

    def increments(self):
        """g ΔWⁿ of this functional's columns (:mod:`~pontryx.solver.model.noise`), or None."""
        if self.noise is None:
            return None
        inc = self._increments
        if inc is None or inc.epoch != self.epoch:
            inc = self.noise.paths(self.ids, self.epoch, self.net.dt, cache=self.keep_noise)
            self._increments = inc
        return inc

    def deterministic(self) -> ReducedFunctional:
        """The same functional without noise in depth (itself if it has none)."""
        return self if self.noise is None else self.with_noise(None)

    def with_noise(self, noise, epoch: int = 0) -> ReducedFunctional:
        """The same samples and regulariser with ``noise`` (a
        :class:`~pontryx.solver.model.noise.DepthNoise`, or None) at ``epoch``."""
        rf = self._like(self.X.T, self._y_rows(), self.ids, noise)
        rf.epoch, rf.keep_noise = int(epoch), False
        return rf

    def _y_rows(self):
        return self.y if self.task == "classification" else self.y.T

    def _like(self, X, y, ids, noise) -> ReducedFunctional:
        rf = ReducedFunctional(
            self.net,
            X,
            y,
            self.task,
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
            delta=self.delta,
            S=self.data_comm.allreduce(len(X)),
            checkpoint=self.checkpoint,
            noise=noise,
            ids=ids,
            threads=self.threads,
        )
        rf.layout, rf.data_comm, rf.epoch = self.layout, self.data_comm, self.epoch
        return rf

    alpha = _weight("alpha", "α of the regulariser.")
    beta = _weight("beta", "β of the regulariser.")
    gamma = _weight("gamma", "γ of the regulariser (H¹ in width).")
    delta = _weight("delta", "δ of the regulariser (embedding and readout).")

    @property
    def S_local(self) -> int:
        return self.X.shape[1]

    def misfit(self, Yhat):
        """(local part of (1/S) Σ ℓ, ∂/∂Ŷ, statistic) for outputs Ŷ of this rank's
        samples (with noise in depth: of their M paths each, (1/(S M)) Σ ℓ)."""
        return self.misfit_of(Yhat, self._yc)

    _misfit = misfit

    def sweep(self, controls: Controls, workspace=None) -> Sweep:
        self.net.check_controls(controls)
        return Sweep(
            self.net, controls, self.checkpoint, noise=self.increments(), workspace=workspace
        )

    def _sample_split(self):
        """The :class:`~.split.SampleSplit` of this functional's columns over the
        BLAS threads, or None where :func:`.split.eligible` says one sweep."""
        if self.threads == "rows":
            return None
        columns = self._Xc.shape[1]
        T = split.eligible(self.net, columns, self.noise)
        if T < 2:
            return None
        current = self._split
        if current is None or current.T != T:
            current = self._split = split.SampleSplit(self.net, columns, T)
        return current

    def _chunk_misfit(self, chunks):
        def misfit(Yhat, k):
            return self.misfit_of(Yhat, self._yc[..., chunks.chunks[k]])

        return misfit

    def misfit_of(self, Yhat, y):
        """:meth:`misfit` for outputs Ŷ of the columns whose targets are ``y``."""
        return self._loss.value(Yhat, y, self.S * self.paths)

    def riesz(self, like: Controls, metric: str = "l2") -> RieszMap:
        """The Riesz map x = √ω θ for controls shaped like ``like``."""
        return RieszMap(self.net, like, metric)

    def _controls(self, controls, key: str = "controls") -> Controls:
        """``controls`` as :class:`Controls` (a mapping of arrays is taken as one, on
        the network's width communicator); an InputError keyed ``key`` otherwise."""
        if isinstance(controls, Controls):
            return controls
        if not isinstance(controls, Mapping):
            raise InputError(f"expected Controls, got {show(controls)}", key)
        return Controls(controls, self.net.space.comm)

    def __call__(self, controls: Controls) -> float:
        """J(θ) (forward sweep only)."""
        controls = self._controls(controls)
        chunks = self._sample_split()
        if chunks is None:
            Yhat = self.sweep(controls).forward(self._Xc)[0]
            misfit, _, stat = self.misfit(Yhat)
        else:
            misfit, stat = chunks.forward(
                lambda ws: self.sweep(controls, ws), self._Xc, self._chunk_misfit(chunks)
            )
        misfit, stat = self.data_comm.allreduce(np.array([misfit, stat]), op=MPI.SUM)
        self.last = {"misfit": misfit, "stat": stat}
        return misfit + self.regulariser(controls)

    def value_and_gradient(self, controls: Controls):
        """(J(θ), ∇J(θ)) with one forward and one adjoint sweep."""
        controls = self._controls(controls)
        spare = self._spare_gradient()
        chunks = self._sample_split()
        if chunks is None:
            res = self.sweep(controls).gradient(self._Xc, self.misfit, out=spare)
            local, misfit, stat = res.gradient, res.misfit, res.stat
        else:
            local, misfit, stat = chunks.gradient(
                lambda ws: self.sweep(controls, ws), self._Xc, self._chunk_misfit(chunks), spare
            )
        J, grad, misfit, stat = self.reduce(controls, local, misfit, stat)
        self.last = {"misfit": misfit, "stat": stat, "J": J, "gradient": grad}
        self._grad = grad
        return J, grad

    def _spare_gradient(self) -> dict | None:
        """The arrays of the previous gradient if nothing outside this object holds
        it, its arrays or views of them (by reference counts, as NumPy's own elision
        of temporaries), else None: the next gradient is written into them instead
        of into freshly mapped memory, whose first-touch page faults cost about
        8 ms of system time per 8 MiB layer of the dense ∂J/∂W (N = 1024, measured).
        This object's own references (``_grad``, ``last["gradient"]``) are dropped."""
        g, self._grad = self._grad, None
        if self.last is not None and "gradient" in self.last:
            self.last = {k: v for k, v in self.last.items() if k != "gradient"}
        if g is None or sys.getrefcount(g) > 2:  # g and getrefcount's argument
            return None
        arrays = dict(g)
        del g
        for name in list(arrays):  # the dict's and getrefcount's references
            if sys.getrefcount(arrays[name]) > 2:
                return None
        return arrays

    def trajectory(self, controls: Controls, sensitivities: bool = False):
        """The gradient sweep keeping every state and costate (Pontryagin methods),
        with ``sensitivities`` also ∂Ŷ_k/∂Uⁿ: the :class:`~.sweep.SweepResult`
        (local, not reduced)."""
        controls = self._controls(controls)
        self.net.check_controls(controls)
        sweep = Sweep(self.net, controls, noise=self.increments())
        return sweep.gradient(self._Xc, self.misfit, trajectory=True, sensitivities=sensitivities)

    def hessian_action(self, controls: Controls, direction: Controls) -> Controls:
        """∇²J(θ) · dθ over the trainable controls (names missing from
        ``direction`` do not move): one tangent and one second-order adjoint sweep,
        summed over the data ranks, plus the regulariser's Hessian."""
        controls = self._controls(controls)
        self.net.check_controls(controls)
        direction = self._controls(direction, "direction")
        self.net.check_controls(direction, names=list(direction), key="direction")

        def hvp(Yhat, V):
            return self._loss.hvp(Yhat, V, self.S * self.paths)

        chunks = self._sample_split()
        if chunks is None:
            res = self.sweep(controls).hessian_action(self._Xc, self.misfit, hvp, direction)
            H = res.hessian_action
        else:
            sweep = lambda ws: self.sweep(controls, ws)  # noqa: E731
            H = chunks.hessian(sweep, self._Xc, self._chunk_misfit(chunks), hvp, direction)
        self._data_sum(H)
        full = direction.copy()
        for name in self.net.trainable:
            if name not in full:
                full[name] = np.zeros_like(controls[name])
        self.regulariser(full, H)
        return H

    def _data_sum(self, grad: Controls, *scalars):
        """Sum a local gradient (in place, Allreduces of at most :data:`SUM_CHUNK`
        values of each control array: no packing copies) and scalars over the
        data ranks."""
        comm = self.data_comm
        if comm.size == 1:
            return scalars
        for k in grad:
            a = grad[k]
            if a.flags.c_contiguous:
                flat = a.reshape(-1)
                for i in range(0, flat.size, SUM_CHUNK):
                    comm.Allreduce(MPI.IN_PLACE, flat[i : i + SUM_CHUNK], op=MPI.SUM)
            else:  # pragma: no cover - controls are contiguous
                a[...] = comm.allreduce(a, op=MPI.SUM)
        return tuple(comm.allreduce(np.array(scalars, dtype=float), op=MPI.SUM))

    def reduce(self, controls, grad: Controls, misfit: float, stat: float):
        """Sum a local gradient, misfit and statistic over the data ranks and add
        the regulariser: returns (J, ∇J, misfit, stat). With several data ranks
        each one adds R's terms of its own contiguous block of layers before the
        sum, so R is not computed twice."""
        comm = self.data_comm
        if comm.size > 1:
            L = self.net.layers
            lo, hi = (L * comm.rank) // comm.size, (L * (comm.rank + 1)) // comm.size
            R = self.regulariser(controls, grad, layers=range(lo, hi))
            misfit, stat, R = self._data_sum(grad, misfit, stat, R)
        else:
            R = self.regulariser(controls, grad)
        J = misfit + R
        return float(J), grad, float(misfit), float(stat)

    def derivative(self, apply_riesz: bool = False) -> Controls:
        """∇J at the θ of the last :meth:`value_and_gradient` call; with
        ``apply_riesz`` its L²(M_L) Riesz representative ω⁻¹ ∇J."""
        g = self._grad
        if not apply_riesz:
            return g
        riesz = self.riesz(g)
        return riesz.controls_to_theta(riesz.controls_to_theta(g))

    def layer_stationarity(self, grad: Controls | None = None) -> np.ndarray:
        """‖∂_θ Hⁿ‖ = ‖∂J/∂θⁿ‖ / Δt for every layer n (∂_θ Hⁿ = −∂J/∂θⁿ; per unit
        time, so that it measures the continuous Hamiltonian's θ-derivative): 0
        where θⁿ is a stationary point of the layer Hamiltonian, as the maximum
        principle requires of an interior maximiser."""
        g = grad if grad is not None else self._grad
        return np.asarray(layer_gradient_norms(self.net, g)) / self.net.dt

    def stationarity(self, grad: Controls | None = None) -> float:
        """max_n ‖∂_θ Hⁿ‖ (:meth:`layer_stationarity`)."""
        return float(np.max(self.layer_stationarity(grad)))

    def metric(self, stat: float | None = None) -> float:
        """Accuracy (classification) or root-mean-square error (regression), over
        the M paths of every sample with noise in depth."""
        if stat is None and self.last is None:
            raise InputError("no evaluation yet: call J(θ) or value_and_gradient first", "metric")
        stat = self.last["stat"] if stat is None else stat
        count = self.S * self.paths
        if self.task == "classification":
            return stat / count
        return float(np.sqrt(stat / (count * self.y.shape[0])))

    def batch(self, index) -> ReducedFunctional:
        """The same functional on a subset of the local samples (a minibatch, with
        the same noise paths); S becomes the global size of the minibatch."""
        rf = self._like(self.X.T[index], self._y_rows()[index], self.ids[index], self.noise)
        rf.keep_noise = False
        return rf
