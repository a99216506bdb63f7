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
from collections.abc import Mapping
from dataclasses import dataclass, field

from mpi4py import MPI

import numpy as np

from pontryx.meshes.errors import InputError, integer, positive, show
from pontryx.solver.model.controls import Controls

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
        """The smallest rate of r¹, and NaN if a remainder is not finite or a rate is
        NaN (0/0), so that ``min_rate >= 1.95`` fails there."""
        rates = self.rates
        if not all(np.isfinite(self.r1)) or any(np.isnan(rates)):
            return float("nan")
        return min(rates)

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
    integer(steps, "steps", 2, why=" (a rate needs two remainders)")
    positive(h0, "h0")
    if not isinstance(hessian, bool | np.bool_):
        raise InputError(f"expected true or false, got {show(hessian)}", "hessian")
    if not callable(getattr(rf, "value_and_gradient", None)):
        raise InputError(f"expected a ReducedFunctional, got {show(rf)}", "rf")
    if isinstance(direction, Mapping) and not isinstance(direction, Controls):
        direction = Controls(direction, getattr(controls, "comm", MPI.COMM_WORLD))  # (arrays)
    elif not callable(getattr(direction, "dot", None)):  # Controls, or a vector like them
        raise InputError(f"expected Controls, got {show(direction)}", "direction")
    trainable = getattr(getattr(rf, "net", None), "trainable", None)  # (a network's)
    unknown = (
        sorted(set(direction) - set(trainable)) if trainable and hasattr(direction, "keys") else []
    )
    if unknown:
        raise InputError(
            f"{', '.join(unknown)}: not trainable (trainable: {', '.join(trainable)})",
            "direction",
        )
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


#: the round-off floor of :func:`first_step`, in units of ε |J|
FLOOR = 1e5


def first_step(
    rf, controls, direction, start: float = 1.0, steps: int = 4, tol: float = 0.05, kmax: int = 60
):
    """The first step h₀ of a Taylor test chosen from J alone, not from the
    gradient under test. On h_k = start·2^{-k} (one forward sweep each, down to
    round-off) the second differences

        q_k = |J(θ + 2h_k δθ) − 2J(θ + h_k δθ) + J(θ)| = |⟨δθ, ∇²J δθ⟩| h_k² + O(h_k³)

    show where the expansion is in its asymptotic range: there q falls at rate
    log₂(q_{k−1}/q_k) = 2 ± ``tol``, as the second remainder r¹(h_k) ≈ ½q_k of an
    exact gradient does, and J's own noise (round-off, an inexact inner solve)
    or a kink would break it. The test's ``steps`` steps h₀ … h₀/2^{steps−1} are
    the *deepest* such window: every rate of q in it within 2 ± ``tol`` and ½q at
    its last step above the round-off floor :data:`FLOOR` ε |J|. A gradient whose
    directional derivative is off by e adds e·h to r¹ and moves the rates from 2
    once e ≳ 0.04 r¹(h_last)/h_last, so a window near round-off detects errors
    far smaller than the test's own steps (tests/test_cli_commands.py). ``None``
    if no window qualifies for k ≤ ``kmax``."""
    J0 = rf(controls)
    floor = FLOOR * np.finfo(float).eps * max(abs(J0), 1e-300)
    J, q, ok = [], [], []  # J(θ + h_k δθ), q_k, and whether the rate into q_k is 2 ± tol
    for k in range(kmax + 1):
        J.append(rf(controls.copy().axpy(start * 2.0**-k, direction)))
        q.append(abs(J[k - 1] - 2.0 * J[k] + J0) if k else np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.log2(q[k - 1] / q[k]) if k >= 2 else np.nan
        ok.append(bool(np.isfinite(rate) and abs(rate - 2.0) < tol))
        if k >= 1 and np.isfinite(q[k]) and not 0.5 * q[k] > floor:
            break  # round-off from here on
    for last in range(len(q) - 1, 0, -1):
        k0 = last - (steps - 1)
        if k0 < 0:
            break
        if 0.5 * q[last] > floor and all(ok[max(k0, 2) : last + 1]):
            return start * 2.0**-k0
    return None


def taylor_test_map(F, x0, dx, dF, h0: float = 1e-2, steps: int = 4, norm=None) -> list[float]:
    """Rates of ‖F(x0 + h dx) − F(x0) − h dF‖ for a map F and its directional
    derivative dF at x0 (``x0.copy().axpy(h, dx)`` moves the point; ``norm``
    defaults to the Euclidean norm of the array F returns)."""
    norm = norm or (lambda a: float(np.linalg.norm(a)))
    F0 = F(x0)
    r = [norm(F(x0.copy().axpy(h0 / 2**i, dx)) - F0 - (h0 / 2**i) * dF) for i in range(steps)]
    return _rates(r)
