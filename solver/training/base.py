"""The interface every training method implements, and its per-iteration record.

A :class:`Trainer` owns the current controls and advances them by iterations;
:func:`pontryx.solver.training.loop.train` (the one training loop, used by the
library and by ``pontryx train`` alike) calls :meth:`Trainer.iterate` in chunks
and checkpoints :meth:`Trainer.state` between chunks; :meth:`Trainer.restore`
followed by the same chunks continues a run bit-for-bit. Methods that keep
internal state a checkpoint cannot hold (PETSc TAO's quasi-Newton memory)
restart at every chunk boundary in uninterrupted runs too, so resumed and
uninterrupted runs agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import numpy as np

from pontryx.meshes.errors import InputError
from pontryx.solver.adjoint.riesz import l2_weights
from pontryx.solver.model.bounds import Bounds
from pontryx.solver.model.controls import REPLICATED, Controls
from pontryx.solver.training.common import method_options

__all__ = ["Callback", "Record", "Trainer"]


@dataclass
class Record:
    """What every method reports at every iteration (DESIGN.md §3)."""

    iteration: int
    loss: float  # J(θ): misfit + regulariser
    misfit: float  # (1/S) Σ ℓ on the training (mini)batch
    train_metric: float  # accuracy (classification) or RMSE (regression)
    grad_norm: float  # ‖∇J(θ)‖ in the method's metric (L²(M_L) by default; see Trainer)
    stationarity: float  # max_n ‖∂_θ Hⁿ‖ (per unit time): 0 where the maximum principle holds
    time: float = 0.0  # seconds since the trainer was created (excl. restored runs)
    test_metric: float | None = None  # filled by the loop when a test set is given
    extra: dict = field(default_factory=dict)  # method-specific (step size, ρ, R_f, …)
    #: per-layer values, each a list over n = 0 … N_t − 1: "stationarity" ‖∂_θ Hⁿ‖
    #: (every method) and "gap" (msa/emsa: the maximum-principle gap of the sweep)
    layers: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("extra"))
        d.update({f"{k}_layers": [float(x) for x in v] for k, v in d.pop("layers").items()})
        return d


Callback = Callable[[Record], None]


class Trainer:
    """Base class of the training methods.

    Subclasses set ``name`` and ``defaults`` (their options with default values;
    an unknown option is an error keyed by it) and implement :meth:`_iterate`.

    Attributes every trainer has: ``rf`` (the reduced functional), ``controls``
    (updated in place), ``options``, ``iteration`` (completed iterations),
    ``converged`` (a reason when the method met its tolerance, else ``None``),
    ``failed`` (a reason when it cannot go on, else ``None``) and ``on_record``
    (``None``, or a callback the method calls with each record as soon as it
    exists — methods iterating inside PETSc report live through it).
    """

    name: ClassVar[str] = "trainer"
    defaults: ClassVar[dict] = {}
    #: whether the method keeps the controls in a box (``bounds``); the others refuse it
    supports_bounds: ClassVar[bool] = False
    #: whether the method solves a system to a tolerance (then running out of
    #: iterations is ``not_converged``, not ``max_iterations``)
    solves_to_tolerance: ClassVar[bool] = False
    #: whether the method splits the layers over the depth axis of the layout
    #: (only the one-shot solve; the application layer refuses depth > 1 for others)
    depth_parallel: ClassVar[bool] = False

    def __init__(self, rf, controls: Controls, bounds: Bounds | None = None, **options):
        self.rf = rf
        self.controls = controls
        self.options = method_options(self.name, self.defaults, options)
        self.bounds = bounds if bounds else None
        if self.bounds is not None:
            if not self.supports_bounds:
                raise InputError(f"method {self.name!r} does not take bounds", "bounds")
            self.bounds.project(controls)  # start in the admissible set
        self.iteration = 0
        self.converged: str | None = None
        self.failed: str | None = None
        self.on_record: Callback | None = None
        self._t0 = time.perf_counter()

    def record(self, J: float, grad: Controls, **extra) -> Record:
        """A :class:`Record` for the current iteration from the last evaluation of rf."""
        last = self.rf.last
        per_layer = self.rf.layer_stationarity(grad)
        return Record(
            iteration=self.iteration,
            loss=float(J),
            misfit=float(last["misfit"]),
            train_metric=float(self.rf.metric()),
            grad_norm=self.gradient_norm(grad),
            stationarity=float(np.max(per_layer)),
            time=time.perf_counter() - self._t0,
            extra=extra,
            layers={"stationarity": per_layer.tolist()},
        )

    #: the inner product in which the method measures ‖∇J‖ (its option ``metric``
    #: where it has one): "l2" or "euclidean"
    metric = "l2"

    def gradient_norm(self, grad: Controls) -> float:
        """‖∇J‖ over the trainable controls in the method's metric: for ``l2`` the
        L²(M_L) norm of the gradient's Riesz representative, ‖ω^{-1/2}∇J‖₂ — the
        norm TAO's ``gatol`` tests — and for ``euclidean`` the norm of the nodal
        values. With bounds, the norm of the projected gradient (the entries at an
        active bound that point out of the box left out; 0 at a KKT point), which
        is also what TAO's bounded methods test. The progress line and
        ``metrics.csv`` report this norm. Layer by layer: no temporary of the size
        of all controls."""
        net = self.rf.net
        weights = l2_weights(net, net.trainable) if self.metric == "l2" else {}
        local = 0.0
        for name in net.trainable:
            g, th = grad[name], self.controls[name]
            share = 1.0 if name not in REPLICATED or grad.comm.rank == 0 else 0.0
            w = weights.get(name)
            layered = name in net.layer_names
            for block, t in zip(g, th, strict=True) if layered else ((g, th),):
                if self.bounds is not None:
                    out = self.bounds.active(name, t, block)
                    if out is not None:
                        block = np.where(out, 0.0, block)
                local += share * float(np.vdot(block, block / w if w is not None else block))
        return float(np.sqrt(grad.comm.allreduce(local)))

    def iterate(self, n: int) -> Iterator[Record]:
        """Advance by up to n iterations, yielding one Record per iteration."""
        yield from self._iterate(n)

    def _iterate(self, n: int) -> Iterator[Record]:
        raise NotImplementedError

    # -- checkpointing ----------------------------------------------------------
    def state(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit-for-bit: named arrays (local parts)."""
        out = {f"controls/{k}": v.copy() for k, v in self.controls.items()}
        out["iteration"] = np.array(self.iteration)
        return out

    def state_kinds(self) -> dict[str, tuple]:
        """How each entry of :meth:`state` is distributed, for checkpoints that load
        on any layout: ``("control", name)`` (an array shaped like that control),
        ``("flat", names)`` (a flat local vector over those controls, in the
        :meth:`Controls.to_flat` layout), ``("replicated",)`` (the same on every
        rank; the default) or ``("local",)`` (bound to this rank and layout)."""
        return {f"controls/{k}": ("control", k) for k in self.controls}

    #: copies of the controls the method holds (θ, ∇J, its memory, the test
    #: evaluation), for the memory estimate of ``pontryx train``
    memory_copies = 4

    @classmethod
    def copies(cls, options: dict) -> float:
        """:attr:`memory_copies` for these options (e.g. an L-BFGS history size)."""
        return cls.memory_copies

    def memory_bytes(self) -> int:
        """Bytes this rank's solve allocates beyond the controls' copies and the
        sweep's states (e.g. the one-shot's KKT vectors); 0 by default."""
        return 0

    #: whether :meth:`state` at any iteration continues bit for bit; methods whose
    #: internal state restarts at chunk boundaries (TAO) can only resume at those
    resumable_anywhere = True

    def restore(self, state: dict[str, np.ndarray], controls_only: bool = False) -> None:
        """Continue from ``state``; ``controls_only``: take the controls and the
        iteration only (the state came from another method)."""
        for k in self.controls:
            self.controls[k][...] = state[f"controls/{k}"]
        self.iteration = int(state["iteration"])

    def probe(self) -> None:
        """Create and configure the method's PETSc objects once (then free them), so
        that a bad option shows before training starts (none by default)."""

    def destroy(self) -> None:
        """Free the method's PETSc objects (none by default)."""
