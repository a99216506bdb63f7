"""Box constraints on the controls: the admissible set Θ = {θ : lo ≤ θ ≤ hi}.

Pontryagin's principle maximises the Hamiltonian over an admissible set of
controls; for the gradient methods the same set makes training a
bound-constrained problem, whose KKT conditions at a minimiser θ* read, entry
by entry,

    ∂J/∂θᵢ = 0 where lo < θᵢ < hi,   ∂J/∂θᵢ ≥ 0 where θᵢ = lo,   ∂J/∂θᵢ ≤ 0 where θᵢ = hi,

i.e. the *projected gradient* (∇J with the entries zeroed that point out of Θ
at an active bound) vanishes. The bounds act on the stored nodal values of a
control (for P1 functions, and the lumped dofs, the same as pointwise bounds on
the function: its values lie between its nodal values). A control is bounded
by a number c (|θ| ≤ c) or a pair [lo, hi] (``None``: no bound on that side).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from mpi4py import MPI

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.model.controls import Controls

__all__ = ["Bounds"]

#: entries this many ulps of a bound inside it are on the bound (:meth:`Bounds.project`)
SNAP = 4


def _limit(v, key: str, default: float) -> float:
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v):
        raise InputError(f"expected a number or null, got {show(v)}", key)
    return float(v)


class Bounds:
    """lo ≤ θ ≤ hi for some of the controls; see the module docstring.

    ``spec``: control name → c > 0 (|θ| ≤ c) or [lo, hi] (lo < hi, ``None`` for
    ±∞); ``names``: the controls that may be bounded (the trainable ones).
    Errors are keyed by the control's name."""

    def __init__(self, spec: Mapping[str, object], names: Iterable[str]):
        names = tuple(names)
        self.limits: dict[str, tuple[float, float]] = {}
        for name, v in dict(spec or {}).items():
            if name not in names:
                raise InputError(
                    f"not a trainable control; expected one of {', '.join(names)}", str(name)
                )
            if isinstance(v, int | float) and not isinstance(v, bool):
                if not (v > 0 and math.isfinite(v)):
                    raise InputError(f"expected a bound c > 0 (|θ| ≤ c), got {show(v)}", name)
                lo, hi = -float(v), float(v)
            elif isinstance(v, list | tuple) and len(v) == 2:
                lo, hi = _limit(v[0], name, -math.inf), _limit(v[1], name, math.inf)
                if not lo < hi:
                    raise InputError(f"expected lower < upper, got [{lo:g}, {hi:g}]", name)
            else:
                raise InputError(
                    f"expected a number c (|θ| ≤ c) or [lower, upper], got {show(v)}", name
                )
            self.limits[name] = (lo, hi)

    def __bool__(self) -> bool:
        return bool(self.limits)

    def __repr__(self) -> str:
        return f"Bounds({self.limits})"

    def project(self, controls: Controls) -> Controls:
        """θ ← P_Θ(θ) (clipped in place) for the bounded controls present; an entry
        within :data:`SNAP` ulps inside a bound is put on it (the map θ = x/√ω
        back from TAO's variables, whose bounds are √ω lo, √ω hi, leaves an entry
        TAO holds at its bound an ulp or two inside: it counted as free in the
        projected gradient, which came out 25–60× TAO's own norm)."""
        for name, (lo, hi) in self.limits.items():
            v = controls.get(name)
            if v is None:
                continue
            np.clip(v, lo, hi, out=v)
            for bound in (lo, hi):
                if math.isfinite(bound):
                    v[np.abs(v - bound) <= SNAP * np.spacing(abs(bound))] = bound
        return controls

    def violation(self, controls: Controls) -> float:
        """max over bounded entries of the distance to [lo, hi] (0 inside). Collective."""
        local = 0.0
        for name, (lo, hi) in self.limits.items():
            v = controls.get(name)
            if v is not None and v.size:
                local = max(local, float(np.max(lo - v)), float(np.max(v - hi)))
        return controls.comm.allreduce(local, op=MPI.MAX)

    def active(self, name: str, theta: np.ndarray, grad: np.ndarray) -> np.ndarray | None:
        """The entries of one block of ``name`` where −∂J/∂θ points out of Θ (at
        lo with ∂J/∂θ > 0, at hi with ∂J/∂θ < 0), or None if it is not bounded."""
        if name not in self.limits:
            return None
        lo, hi = self.limits[name]
        return ((theta <= lo) & (grad > 0)) | ((theta >= hi) & (grad < 0))

    def flat(self, like: Controls) -> tuple[np.ndarray, np.ndarray]:
        """(lower, upper) as flat local vectors in the :meth:`Controls.to_flat` layout
        of ``like`` (±∞ where a control is not bounded)."""
        free = (-math.inf, math.inf)
        out = []
        for side in (0, 1):
            arrays = {k: np.full(v.shape, self.limits.get(k, free)[side]) for k, v in like.items()}
            out.append(Controls(arrays, like.comm).to_flat())
        return out[0], out[1]
