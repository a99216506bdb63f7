"""Taylor test of a reduced functional (as pyadjoint's ``taylor_test``).

For a direction δθ and steps h_i = h_0 / 2^i, the remainders

    r⁰_i = |J(θ + h_i δθ) − J(θ)|,   r¹_i = |J(θ + h_i δθ) − J(θ) − h_i ⟨∇J(θ), δθ⟩|

decay like O(h) and O(h²) when ∇J is the exact gradient; the observed rates
log₂(r_i / r_{i+1}) of r¹ are the test (≥ 1.95 for a pass).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TaylorResult", "taylor_test"]


@dataclass
class TaylorResult:
    h: list[float]
    r0: list[float]
    r1: list[float]

    @property
    def rates0(self) -> list[float]:
        return [float(np.log2(a / b)) for a, b in zip(self.r0[:-1], self.r0[1:])]

    @property
    def rates(self) -> list[float]:
        return [float(np.log2(a / b)) for a, b in zip(self.r1[:-1], self.r1[1:])]

    @property
    def min_rate(self) -> float:
        return min(self.rates)

    def table(self) -> str:
        lines = [f"{'h':>10} {'|J(θ+hδ)−J|':>14} {'rate':>6} {'|…−h⟨∇J,δ⟩|':>14} {'rate':>6}"]
        r0, r1 = [None, *self.rates0], [None, *self.rates]
        for i, h in enumerate(self.h):
            a = f"{r0[i]:6.2f}" if r0[i] is not None else " " * 6
            b = f"{r1[i]:6.2f}" if r1[i] is not None else " " * 6
            lines.append(f"{h:10.3e} {self.r0[i]:14.6e} {a} {self.r1[i]:14.6e} {b}")
        return "\n".join(lines)


def taylor_test(rf, controls, direction, h0: float = 1e-2, steps: int = 4) -> TaylorResult:
    """Taylor remainders of ``rf`` at ``controls`` along ``direction``
    (a Controls with a subset of the trainable names)."""
    J0, grad = rf.value_and_gradient(controls)
    dJ = grad.subset(direction.keys()).dot(direction)
    hs, r0, r1 = [], [], []
    for i in range(steps):
        h = h0 / 2**i
        Jh = rf(controls.copy().axpy(h, direction))
        hs.append(h)
        r0.append(abs(Jh - J0))
        r1.append(abs(Jh - J0 - h * dJ))
    return TaylorResult(hs, r0, r1)
