"""A priori bounds of every quantity an HJB study computes, checked before it starts.

The value-function grid (:mod:`.scheme`), the closed-loop steps and the open-loop
functional (:mod:`.compare`) are finite when these bounds are: with U₀ the largest
coordinate of the grid G (the initial states are inside it), β = max |b_i| the
control box, K = W M_L, c = C M_L (M_L the lumped masses m_i), Δt = T/N_t, and
|σ| ≤ S for a bounded activation (tanh, sigmoid) or |σ(z)| ≤ 1 + |z| otherwise,

* the states: |u(t)| ≤ U = U₀ + T S, or U = (U₀ + T (1 + β)) (1 + Δt ‖K‖_∞)^{N_t}
  for an unbounded σ (explicit Euler's growth); U ≤ :data:`MAGNITUDE`;
* the activation arguments: |K u + b| ≤ ‖K‖_∞ U + β ≤ :data:`MAGNITUDE`
  (σ(z) and z² — smooth_relu squares it — finite);
* the terminal residual: |cᵀu + d − y| ≤ ‖c‖₁ U + |d| + |y| =: E ≤ :data:`MAGNITUDE`
  (the terminal cost ½E² finite);
* the running cost over the horizon: R = T Σ_i (α m_i / 2) β² ≤ :data:`VALUE`;
* the gradient of the open-loop cost J(b): T (E ‖c‖₁ (1 + Δt ‖K‖_∞)^{N_t} + α Σ m_i β)
  ≤ :data:`MAGNITUDE` (the residual back through the adjoint steps, σ' ≤ 1, plus the
  regulariser's; TAO squares its norm);
* the value function: 0 ≤ V ≤ ½E² + R by the maximum principle of the monotone
  scheme (its update is a convex combination of V^{k+1} plus Δτ ℓ at the best
  control, ≤ ℓ at any candidate), so the upwind differences are at most
  (½E² + R)·2/h; times the speeds F_i (and σ', σ'' ≤ 5 in Newton's step) at most
  :data:`VALUE`.

The grid itself is an extent of :func:`pontryx.meshes.errors.bounds` (coordinates of
magnitude at most 1e50, widths at least 1e-12, cells resolved in float64).

Each bound names the input that dominates it (the largest factor), under the
argument names of :class:`~.compare.ReducedNetwork` (``W``, ``C``, ``d``, ``y``,
``alpha``, ``bound``, ``T``, ``width_mesh``) or of the grid (``grid.lower``, ``grid.upper``,
``grid.n``): the caller maps them to its configuration keys.
"""

from __future__ import annotations

import math

import numpy as np

from pontryx.meshes import errors as chk
from pontryx.meshes.errors import InputError

__all__ = ["MAGNITUDE", "VALUE", "check_ranges"]

#: The largest magnitude of a state, an activation argument or a residual (its
#: square stays below 1e300, far from float64's overflow at 1.8e308).
MAGNITUDE = 1e150
#: The largest cost, value or upwind difference term.
VALUE = 1e300


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


def _sci(x: float) -> str:
    return "inf" if not math.isfinite(x) else f"{x:.3g}".replace("e+", "e")


def _sup(psi) -> float | None:
    """sup |σ| of a monotone σ when it is bounded (tanh, sigmoid), else None."""
    with np.errstate(all="ignore"):
        ends = np.abs(np.asarray(psi(np.array([-1e100, 0.0, 1e100])), dtype=float))
    return float(ends.max()) if np.all(np.isfinite(ends)) and ends.max() <= 1e3 else None


def check_ranges(reduced, lower, upper, n, T: float) -> None:
    """Raise :class:`InputError` unless every quantity of the study of ``reduced`` on
    the grid ``lower`` × ``upper`` with ``n`` cells per axis over the horizon ``T``
    stays finite (the bounds of the module docstring). Nothing is computed on the
    grid: this runs before it is built."""
    lower, upper = tuple(float(v) for v in lower), tuple(float(v) for v in upper)
    try:
        chk.bounds(lower, upper, 2, tuple(int(k) for k in np.broadcast_to(n, 2)))
    except InputError as e:
        raise e.under("grid") from None
    lower, upper = np.array(lower), np.array(upper)
    h = float(np.min((upper - lower) / np.broadcast_to(np.asarray(n, dtype=float), 2)))
    system = reduced.system
    m = np.asarray(reduced.space.to_canonical(reduced.space.m), dtype=float)
    kn = float(np.max(np.sum(np.abs(reduced.W * m[None, :]), axis=1)))
    cn = float(np.sum(np.abs(reduced.C * m)))
    # K = W M_L and c = C M_L: blamed on the width mesh where its masses dominate
    # (W = 1 on an interval of length 10⁴⁰ is the mesh's doing, not the kernel's)
    heaviest = float(np.max(m))
    with np.errstate(over="ignore"):  # inf is a size too
        wn, cw = float(np.max(np.sum(np.abs(reduced.W), axis=1))), float(np.sum(np.abs(reduced.C)))
    w_key = "W" if wn >= heaviest else "width_mesh"
    c_key = "C" if cw >= heaviest else "width_mesh"
    d, y, alpha, mass = abs(reduced.d), abs(reduced.y), reduced.alpha, float(np.sum(m))
    beta = float(max(np.max(np.abs(system.lo)), np.max(np.abs(system.hi))))
    T, N = float(T), reduced.layers
    U0 = float(np.abs(np.concatenate([lower, upper])).max())
    grid = "grid.lower" if np.abs(lower).max() >= np.abs(upper).max() else "grid.upper"
    S = _sup(system.psi)
    growth = N * math.log1p(T / N * kn)  # log of explicit Euler's (1 + Δt ‖W M_L‖)^{N_t}
    given = (
        f"(grid corners up to {_sci(U0)}, T = {_sci(T)}, N_t = {N}, ‖W M_L‖ = {_sci(kn)}, "
        f"‖C M_L‖₁ = {_sci(cn)}, |d| = {_sci(d)}, |y| = {_sci(y)}, |b| ≤ {_sci(beta)}, "
        f"α = {_sci(alpha)}, Σ m_i = {_sci(mass)})"
    )

    def check(what: str, value: float, limit: float, blame: dict[str, float]) -> None:
        if not value <= limit:  # also NaN
            raise InputError(
                f"{what} can reach {_sci(value)} in magnitude {given}; expected at most "
                f"{_sci(limit)} (a finite computation)",
                _largest(blame),
            )

    # the states: |u(t)| ≤ U
    if S is not None:
        U = U0 + T * S
        states = {grid: _log(U0), "T": _log(T * S)}
    else:
        U = (U0 + T * (1.0 + beta)) * _exp(growth)
        push = "bound" if beta > 1.0 else "T"
        states = {grid: _log(U0), push: _log(T * (1.0 + beta)), w_key: growth}
    check("the states u(t)", U, MAGNITUDE, states)
    u_key = _largest(states)
    # the activation arguments: |W M_L u + b| ≤ Z (also the speeds of an unbounded σ)
    Z = kn * U + beta
    speed = "bound" if beta >= kn * U else _largest({w_key: _log(kn), u_key: _log(U)})
    check("the activation arguments W M_L u + b", Z, MAGNITUDE, {speed: 0.0})
    # the terminal residual: |Cᵀ M_L u + d − y| ≤ E
    E = cn * U + d + y
    if cn * U >= d + y:
        terms = {c_key: _log(cn), u_key: _log(U)}
    else:
        terms = {"d": _log(d), "y": _log(y)}
    check("the terminal residual Cᵀ M_L u + d − y", E, MAGNITUDE, terms)
    # the running cost over the horizon
    R = 0.5 * T * alpha * mass * beta * beta
    running = {
        "alpha": _log(alpha),
        "bound": 2 * _log(beta),
        "T": _log(T),
        "width_mesh": _log(mass),
    }
    check("the running cost T (α/2) Σ m_i b_i²", R, VALUE, running)
    # the gradient of J(b): the residual times C M_L back through the adjoint steps
    # (σ' ≤ 1), and α Δt m_i b_i; over the N_t layers at most T times these
    back, reg = E * cn * _exp(growth), alpha * mass * beta
    if back >= reg:
        blame = _merge((_largest(terms), _log(E)), (c_key, _log(cn)), (w_key, growth))
    else:
        blame = {k: v for k, v in running.items() if k != "T"}
    check("the gradient of the open-loop cost J(b)", T * (back + reg), MAGNITUDE, blame)
    # the value function, 0 ≤ V ≤ ½E² + R (the scheme's maximum principle), and its
    # upwind differences (≤ 2V/h) times the speeds (and σ', σ'' ≤ 5 in Newton's step)
    F = S if S is not None else 1.0 + Z
    Vb = 0.5 * E * E + R
    cost = _largest(terms) if 0.5 * E * E >= R else _largest(running)
    blame = _merge((cost, _log(Vb)), ("grid.n", -_log(h)), (speed, _log(F)))
    check("the upwind differences of V times the speeds", 10.0 * Vb / h * max(F, 1.0), VALUE, blame)


def _largest(logs: dict[str, float]) -> str:
    """The key of the largest (logarithmic) contribution."""
    return max(logs, key=lambda k: logs[k])


def _merge(*pairs: tuple[str, float]) -> dict[str, float]:
    """(key, contribution) pairs as a mapping, a repeated key keeping its largest."""
    out: dict[str, float] = {}
    for key, value in pairs:
        out[key] = max(out.get(key, -math.inf), value)
    return out


def _exp(x: float) -> float:
    return math.exp(x) if x < 709.0 else math.inf
