"""The interface every training method implements, and its per-iteration record.

A :class:`Trainer` owns the current controls and advances them by iterations.
The driver (CLI, ``train``) calls ``iterate(k)`` in chunks of k iterations and
checkpoints ``state()`` between chunks; ``restore(state)`` followed by the same
chunks continues a run bit-for-bit. Methods that keep internal state a
checkpoint cannot hold (PETSc TAO's quasi-Newton memory) restart at every chunk
boundary in uninterrupted runs too, so resumed and uninterrupted runs agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from pontryx.solver.controls import Controls

__all__ = ["Record", "Trainer"]


@dataclass
class Record:
    """What every method reports at every iteration (DESIGN.md §3)."""

    iteration: int
    loss: float  # J(θ): misfit + regulariser
    misfit: float  # (1/S) Σ ℓ on the training (mini)batch
    train_metric: float  # accuracy (classification) or RMSE (regression)
    grad_norm: float  # ‖∇J(θ)‖
    pontryagin: float  # max_n ‖∂_θ Hⁿ‖
    time: float = 0.0  # seconds since the trainer was created (excl. restored runs)
    test_metric: float | None = None  # filled by the driver when a test set is given
    extra: dict = field(default_factory=dict)  # method-specific (step size, ρ, R_f, …)

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("extra"))
        return d


class Trainer:
    """Base class. Subclasses set ``name`` and implement ``_iterate``."""

    name = "trainer"

    def __init__(self, rf, controls: Controls, **options):
        self.rf = rf
        self.controls = controls
        self.options = options
        self.iteration = 0
        self._t0 = time.perf_counter()

    def record(self, J: float, grad: Controls, **extra) -> Record:
        """A :class:`Record` for the current iteration from the last evaluation of rf."""
        last = self.rf.last
        return Record(
            iteration=self.iteration,
            loss=float(J),
            misfit=float(last["misfit"]),
            train_metric=float(self.rf.metric()),
            grad_norm=grad.norm(),
            pontryagin=self.rf.pontryagin_residual(grad),
            time=time.perf_counter() - self._t0,
            extra=extra,
        )

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

    def restore(self, state: dict[str, np.ndarray]) -> None:
        for k in self.controls:
            self.controls[k][...] = state[f"controls/{k}"]
        self.iteration = int(state["iteration"])


Callback = Callable[[Record], None]
