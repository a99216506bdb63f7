"""Taylor tests (as pyadjoint's ``taylor_test``), first and second order.

For a direction δθ and steps h_i = h_0 / 2^i, the remainders

    r⁰_i = |J(θ + h_i δθ) − J(θ)|,
    r¹_i = |J(θ + h_i δθ) − J(θ) − h_i ⟨∇J(θ), δθ⟩|,
    r²_i = |J(θ + h_i δθ) − J(θ) − h_i ⟨∇J(θ), δθ⟩ − ½ h_i² ⟨δθ, ∇²J(θ) δθ⟩|

decay like O(h), O(h²) and O(h³) when ∇J and ∇²J·δθ are exact; the observed
rates log₂(r_i / r_{i+1}) are the test (r¹: ≥ 1.95, r²: ≥ 2.9 for a pass).
:func:`taylor_test_map` does the same for a vector-valued map and its
directional derivative (the tangent-linear sweep: rate 2).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

__all__ = ["TaylorResult", "first_step", "taylor_test", "taylor_test_map"]


def _rates(r):
    """log₂(r_i / r_{i+1}); ±inf or nan where a remainder is 0 (round-off) or not finite."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return [float(np.log2(np.float64(a) / np.float64(b))) for a, b in itertools.pairwise(r)]


@dataclass
class TaylorResult:
    h: list[float]
    r0: list[float]
    r1: list[float]
    r2: list[float] = field(default_factory=list)

    @property
    def rates0(self) -> list[float]:
        return _rates(self.r0)

    @property
    def rates(self) -> list[float]:
        return _rates(self.r1)

    @property
    def rates2(self) -> list[float]:
        return _rates(self.r2)

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


def taylor_test(
    rf, controls, direction, h0: float = 1e-2, steps: int = 4, hessian: bool = False
) -> TaylorResult:
    """Taylor remainders of ``rf`` at ``controls`` along ``direction`` (a Controls
    with a subset of the trainable names); with ``hessian`` also the
    second-order remainders r² from :meth:`ReducedFunctional.hessian_action`."""
    J0, grad = rf.value_and_gradient(controls)
    dJ = grad.subset(direction.keys()).dot(direction)
    d2J = None
    if hessian:
        d2J = rf.hessian_action(controls, direction).subset(direction.keys()).dot(direction)
    hs, r0, r1, r2 = [], [], [], []
    for i in range(steps):
        h = h0 / 2**i
        Jh = rf(controls.copy().axpy(h, direction))
        hs.append(h)
        r0.append(abs(Jh - J0))
        r1.append(abs(Jh - J0 - h * dJ))
        if hessian:
            r2.append(abs(Jh - J0 - h * dJ - 0.5 * h * h * d2J))
    return TaylorResult(hs, r0, r1, r2)


def first_step(rf, controls, direction, start: float = 1.0, steps: int = 4, tol: float = 0.05):
    """The first step h₀ of a Taylor test chosen from the problem: the largest
    h = start·2^{-k} where the expansion has entered its asymptotic range — the
    second-order remainders r¹(h), r¹(h/2), r¹(h/4) fall at rate 2 ± ``tol`` (the
    quadratic term dominates the cubic one) — and where r¹ of the test's last
    step h/2^{steps−1} still stands well above round-off (10⁴ ε |J|). The test
    from h₀ then takes ``steps`` steps h₀ … h₀/2^{steps−1} and checks their
    ``steps − 1`` rates; a gradient with a relative error η fails once the steps
    reach h ≈ η. ``None`` if no k ≤ 40 qualifies. One forward sweep per k."""
    J0, grad = rf.value_and_gradient(controls)
    dJ = grad.subset(direction.keys()).dot(direction)
    floor = 1e4 * np.finfo(float).eps * max(abs(J0), 1e-300)
    r = []
    for k in range(43):
        h = start * 2.0**-k
        Jh = rf(controls.copy().axpy(h, direction))
        r.append(abs(Jh - J0 - h * dJ) if np.isfinite(Jh) else np.nan)
        if len(r) >= 3 and all(np.isfinite(r[-3:])) and min(r[-3:]) > 0:
            rates = np.log2(np.array(r[-3:-1]) / np.array(r[-2:]))
            if np.all(np.abs(rates - 2.0) < tol):
                return start * 2.0 ** -(k - 2) if r[-3] / 4.0 ** (steps - 1) > floor else None
    return None


def taylor_test_map(F, x0, dx, dF, h0: float = 1e-2, steps: int = 4, norm=None) -> list[float]:
    """Rates of ‖F(x0 + h dx) − F(x0) − h dF‖ for a map F and its directional
    derivative dF at x0 (``x0.copy().axpy(h, dx)`` moves the point; ``norm``
    defaults to the Euclidean norm of the array F returns)."""
    norm = norm or (lambda a: float(np.linalg.norm(a)))
    F0 = F(x0)
    r = [norm(F(x0.copy().axpy(h0 / 2**i, dx)) - F0 - (h0 / 2**i) * dF) for i in range(steps)]
    return _rates(r)
