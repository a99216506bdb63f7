"""L-BFGS in the controls' Hilbert space with a strong-Wolfe line search, in 2m + 3 copies.

The method ``lbfgs`` minimises J(θ) with the limited-memory BFGS update
(Nocedal 1980; Liu & Nocedal 1989) written for a Hilbert space with inner
product (a, b)_ω = Σ ω a b — by default the L²(M_L) inner product of the
regulariser (``metric: l2``; ω: kernel.weights() for layer controls, m for b,
E and C, 1 for d), the Euclidean one of the nodal values for ``metric:
euclidean``. The gradient ∇_θJ is a dual vector, its Riesz representative is
ω⁻¹∇_θJ. With sₖ = θₖ₊₁ − θₖ (primal) and yₖ = ∇J(θₖ₊₁) − ∇J(θₖ) (dual),
ρₖ = 1/⟨yₖ, sₖ⟩ (duality pairing), the direction dₖ = −Hₖ∇J(θₖ) comes from the
two-loop recursion (Nocedal & Wright 2006, Alg. 7.4)

    q ← ∇J;  for i = k−1 … k−m:  aᵢ = ρᵢ⟨q, sᵢ⟩,  q ← q − aᵢ yᵢ
    r ← γₖ ω⁻¹ q,   γₖ = ⟨y, s⟩ / (y, y)_{ω⁻¹}  (newest pair; Shanno's scaling)
    for i = k−m … k−1:  bᵢ = ρᵢ⟨yᵢ, r⟩,  r ← r + (aᵢ − bᵢ) sᵢ;    d = −r,

whose initial metric H₀ = γω⁻¹ is the Riesz map: the iteration is that of the
continuous problem, not of the nodal values (Schwedes et al. 2017; on the tests'
problem 16 and 33 iterations on n = 8 and 32 interval meshes against 57 and 115
for ``metric: euclidean``). The step α satisfies the strong Wolfe conditions
J(θ + αd) ≤ J(θ) + c₁α⟨∇J, d⟩ and |⟨∇J(θ + αd), d⟩| ≤ c₂|⟨∇J, d⟩| (bracketing
and zoom with safeguarded cubic interpolation, Nocedal & Wright Alg. 3.5–3.6),
first trial α = 1 (α = min(1, 1/‖∇J‖) on the first step and after a reset); a
non-finite J at a trial counts as a failed decrease. It ensures ⟨y, s⟩ > 0, so
H stays positive definite.

Memory. The method holds θ, the direction d and the m pairs (sᵢ, yᵢ); during
the line search the pair being formed holds θₖ (as s) and −∇J(θₖ) (as y),
finished in place as s = θₖ₊₁ − θₖ, y = ∇J(θₖ₊₁) − ∇J(θₖ); with the gradient
of the current evaluation and the reduced functional's previous one that is
2m + 4 copies of the controls at the peak — 14 for the default m = 5
(``history``), against about 17 + 4m + 6 for TAO's ``lmvm`` (measured in
benchmarks/memory.py). Every operation runs layer by layer: no temporary of
the size of all controls.

Options: ``history`` m (default 5), ``gatol`` (stop when ‖∇J‖ ≤ gatol, the
norm of the metric, as TAO's), ``grtol`` (‖∇J‖ ≤ grtol·|J|, default 0: off),
``c1``, ``c2`` (Wolfe constants, 1e-4 and 0.9), ``max_evals`` (evaluations per
line search, default 20), ``metric``. A line search that fails restarts from
steepest descent with the memory cleared; if that fails too the method stops
(``stopped: DIVERGED_LS_FAILURE``). Converged reasons are TAO's spellings,
``CONVERGED_GATOL`` and ``CONVERGED_GRTOL``.

Bounds (``training.bounds``): the projected variant (as TAO's BLMVM): the
direction is computed from the gradient with the entries at an active bound
removed, and zeroed there; the step backtracks (α ← α/2) along the projection
arc P_Θ(θ + αd) until the Armijo condition on it holds (Bertsekas 1982); a pair
with ⟨y, s⟩ ≤ 0 is not stored. ``gatol`` then tests the projected gradient.

Checkpoints hold θ and the pairs (shaped like the controls: they load on any
layout) and ρ; a resumed run recomputes J and ∇J at θ and continues
bit-for-bit on the same layout, after any iteration.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.adjoint.riesz import check_metric, l2_weights
from pontryx.solver.model.controls import REPLICATED, Controls
from pontryx.solver.training.base import Trainer

__all__ = ["LBFGS", "strong_wolfe"]

LS_FAILURE = "DIVERGED_LS_FAILURE"


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _cubic_min(a, fa, ga, b, fb, gb):
    """The minimiser of the cubic interpolating (f, f') at a and b, or None."""
    d1 = ga + gb - 3 * (fa - fb) / (a - b)
    disc = d1 * d1 - ga * gb
    if disc < 0:
        return None
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = gb - ga + 2 * d2
    if denom == 0:
        return None
    x = b - (b - a) * (gb + d2 - d1) / denom
    return x if math.isfinite(x) else None


def strong_wolfe(phi, f0, g0, alpha, c1=1e-4, c2=0.9, max_evals=20):
    """A step α > 0 with φ(α) ≤ φ(0) + c₁αφ'(0) and |φ'(α)| ≤ c₂|φ'(0)| (Nocedal &
    Wright 2006, Alg. 3.5 and 3.6), φ'(0) = g0 < 0; ``phi(α)`` returns (φ, φ') and
    may return a non-finite φ (then α is too long). Returns (α, φ(α), evals, ok):
    the last α evaluated — the accepted one when ``ok``, else the last trial
    (``ok`` False: no Wolfe point within ``max_evals``)."""
    evals = 0

    def value(a):
        nonlocal evals
        evals += 1
        f, g = phi(a)
        return (f, g) if math.isfinite(f) and math.isfinite(g) else (math.inf, math.nan)

    def armijo(a, f):
        return f <= f0 + c1 * a * g0

    def curvature(g):
        return abs(g) <= -c2 * g0

    def zoom(lo, flo, glo, hi, fhi, ghi):
        a, f = hi, fhi
        while evals < max_evals:
            width = hi - lo
            a = None
            if math.isfinite(fhi) and math.isfinite(ghi):
                a = _cubic_min(lo, flo, glo, hi, fhi, ghi)
            inner = (min(lo, hi) + 0.1 * abs(width), max(lo, hi) - 0.1 * abs(width))
            if a is None or not inner[0] <= a <= inner[1]:
                a = lo + 0.5 * width  # bisection when the cubic is unusable
            f, g = value(a)
            if not armijo(a, f) or f >= flo:
                hi, fhi, ghi = a, f, g
            else:
                if curvature(g):
                    return a, f, True
                if g * (hi - lo) >= 0:
                    hi, fhi, ghi = lo, flo, glo
                lo, flo, glo = a, f, g
        return a, f, False

    prev, fprev, gprev = 0.0, f0, g0
    a, f = alpha, math.inf
    while evals < max_evals:
        f, g = value(a)
        if not armijo(a, f) or (evals > 1 and f >= fprev):
            a, f, ok = zoom(prev, fprev, gprev, a, f, g)
            return a, f, evals, ok
        if curvature(g):
            return a, f, evals, True
        if g >= 0:
            a, f, ok = zoom(a, f, g, prev, fprev, gprev)
            return a, f, evals, ok
        prev, fprev, gprev = a, f, g
        a = 4.0 * a  # expand: φ still decreasing at α
    return a, f, evals, False


class LBFGS(Trainer):
    """Memory-lean L-BFGS in the L²(M_L) metric, resumable after any iteration."""

    name = "lbfgs"
    defaults: ClassVar[dict] = {
        "history": 5,
        "gatol": 1e-8,
        "grtol": 0.0,
        "c1": 1e-4,
        "c2": 0.9,
        "max_evals": 20,
        "metric": "l2",
    }
    memory_copies = 14  # 2m + 4 at the default m = 5 (see copies())
    supports_bounds = True

    @classmethod
    def copies(cls, options: dict) -> float:
        """Copies of θ held at the peak: θ, d, 2m pairs, two gradients."""
        m = options.get("history", cls.defaults["history"])
        return 2 * m + 4 if isinstance(m, int) and not isinstance(m, bool) else cls.memory_copies

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        o = self.options
        m = o["history"]
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise InputError(f"expected an integer ≥ 1, got {show(m)}", "history")
        for key, ok, want in (
            ("gatol", _number(o["gatol"]) and o["gatol"] >= 0, "≥ 0"),
            ("grtol", _number(o["grtol"]) and o["grtol"] >= 0, "≥ 0"),
            ("c1", _number(o["c1"]) and 0 < o["c1"] < 1, "0 < c1 < 1"),
            ("c2", _number(o["c2"]) and _number(o["c1"]) and o["c1"] < o["c2"] < 1, "c1 < c2 < 1"),
        ):
            if not ok:
                raise InputError(f"expected {want}, got {show(o[key])}", key)
        n = o["max_evals"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InputError(f"expected an integer ≥ 1, got {show(n)}", "max_evals")
        self.m = m
        self.metric = check_metric(o["metric"])
        self.names = tuple(rf.net.trainable)
        self.theta = controls.subset(self.names)
        self.layered = frozenset(rf.net.layer_names)
        self.w = l2_weights(rf.net, self.names) if self.metric == "l2" else None
        self.pairs: list[tuple[Controls, Controls]] = []  # (s, y), oldest first
        self.rho: list[float] = []
        self.d: Controls | None = None
        self.fresh = True  # the next step is a first (or restarted) one
        self._at: tuple[float, Controls] | None = None  # (J, ∇J) at θ
        self.sweeps = 0

    # -- the space: pairings and the Riesz map, layer by layer -------------------
    def _blocks(self, name, *arrays):
        if name in self.layered:
            return zip(*arrays, strict=True)
        return (arrays,)

    def _share(self, name) -> float:
        return 1.0 if name not in REPLICATED or self.theta.comm.rank == 0 else 0.0

    def _pair(self, a: Controls, b: Controls) -> float:
        """⟨a, b⟩ over the trainable controls: the duality pairing (the Euclidean
        sum over the global arrays)."""
        local = sum(self._share(k) * float(np.vdot(a[k], b[k])) for k in self.names)
        return float(self.theta.comm.allreduce(local))

    def _axpy(self, c: float, x: Controls, out: Controls) -> None:
        """out ← out + c x in place (temporaries of one layer at most)."""
        for name in self.names:
            for xb, ob in self._blocks(name, x[name], out[name]):
                ob += c * xb

    def _riesz(self, q: Controls) -> None:
        """q ← ω⁻¹ q in place."""
        if self.w is None:
            return
        for name in self.names:
            for (block,) in self._blocks(name, q[name]):
                block /= self.w[name]

    def _dual_norm2(self, g: Controls) -> float:
        """(g, g)_{ω⁻¹} = ‖ω⁻¹g‖²_ω."""
        local = 0.0
        for name in self.names:
            for (block,) in self._blocks(name, g[name]):
                scaled = block if self.w is None else block / self.w[name]
                local += self._share(name) * float(np.vdot(block, scaled))
        return float(self.theta.comm.allreduce(local))

    # -- evaluations ---------------------------------------------------------------
    def _evaluate(self) -> tuple[float, Controls]:
        self.sweeps += 1
        J, grad = self.rf.value_and_gradient(self.controls)
        return float(J), grad

    def _direction(self, g: Controls) -> None:
        """d ← −H g by the two-loop recursion (steepest descent −ω⁻¹g without pairs)."""
        d = self.d
        for name in self.names:
            np.copyto(d[name], g[name])
        self._mask(d, g)
        a = []
        for (s, y), rho in zip(reversed(self.pairs), reversed(self.rho), strict=True):
            a.append(rho * self._pair(s, d))
            self._axpy(-a[-1], y, d)
        self._riesz(d)
        if self.pairs:
            s, y = self.pairs[-1]
            gamma = self._pair(y, s) / self._dual_norm2(y)
            for name in self.names:
                d[name] *= gamma
        for (s, y), rho, ai in zip(self.pairs, self.rho, reversed(a), strict=True):
            self._axpy(ai - rho * self._pair(y, d), s, d)
        for name in self.names:
            np.negative(d[name], out=d[name])
        self._mask(d, g)

    def _mask(self, d: Controls, g: Controls) -> None:
        """With bounds: d ← 0 on the entries at an active bound (−∇J points out of Θ)."""
        if self.bounds is None:
            return
        for name in self.names:
            for db, tb, gb in self._blocks(name, d[name], self.theta[name], g[name]):
                act = self.bounds.active(name, tb, gb)
                if act is not None:
                    db[act] = 0.0

    def _projected_search(self, J: float, alpha: float, s: Controls, y: Controls):
        """Backtracking on the projection arc θ(α) = P_Θ(θₖ + αd), α ← α/2, until
        J(θ(α)) ≤ J(θₖ) + c₁⟨∇J(θₖ), θ(α) − θₖ⟩ (Bertsekas 1982; as TAO's BLMVM);
        ``s`` holds θₖ, ``y`` −∇J(θₖ). Returns (α, J, ∇J, evaluations, ok)."""
        c1, budget = self.options["c1"], self.options["max_evals"]
        for evals in range(1, budget + 1):
            self._move(alpha, s)
            self.bounds.project(self.theta)
            Ja, ga = self._evaluate()
            local = 0.0
            for name in self.names:
                for tb, sb, yb in self._blocks(name, self.theta[name], s[name], y[name]):
                    local -= self._share(name) * float(np.vdot(yb, tb - sb))
            decrease = float(self.theta.comm.allreduce(local))
            if math.isfinite(Ja) and Ja <= J + c1 * decrease:
                return alpha, Ja, ga, evals, True
            alpha *= 0.5
        return alpha, None, None, budget, False

    def _slot(self) -> tuple[Controls, Controls]:
        """The arrays of the pair being formed: the oldest pair's when m are held."""
        if len(self.pairs) == self.m:
            self.rho.pop(0)
            return self.pairs.pop(0)
        return self.theta.zeros_like(), self.theta.zeros_like()

    def _move(self, alpha: float, start: Controls) -> None:
        """θ ← start + α d, layer by layer."""
        for name in self.names:
            for th, st, di in self._blocks(name, self.theta[name], start[name], self.d[name]):
                np.multiply(di, alpha, out=th)
                th += st

    def _converged(self, J: float, gnorm: float) -> str | None:
        if gnorm <= self.options["gatol"]:
            return "CONVERGED_GATOL"
        if gnorm <= self.options["grtol"] * abs(J):
            return "CONVERGED_GRTOL"
        return None

    def _step(self):
        """One iteration from θ and (J, ∇J) = ``self._at`` (taken, so that the old
        gradient is freed once it is stored as −y): the new (J, ∇J, α, evaluations),
        or None when no step was found (θ is back at θₖ)."""
        J, g = self._at
        self._at = None
        if self.d is None:
            self.d = self.theta.zeros_like()
        while True:
            self._direction(g)
            slope = self._pair(g, self.d)
            if slope < 0:
                alpha0 = min(1.0, 1.0 / math.sqrt(self._dual_norm2(g))) if self.fresh else 1.0
                s, y = self._slot()
                for name in self.names:
                    np.copyto(s[name], self.theta[name])  # θₖ
                    np.negative(g[name], out=y[name])  # −∇J(θₖ)
                del g  # the reduced functional keeps its own reference until the next one
                trial: dict = {}

                def phi(a, s=s, trial=trial):
                    self._move(a, s)
                    trial["J"], trial["g"] = self._evaluate()
                    return trial["J"], self._pair(trial["g"], self.d)

                o = self.options
                if self.bounds is None:
                    alpha, _, evals, ok = strong_wolfe(
                        phi, J, slope, alpha0, o["c1"], o["c2"], o["max_evals"]
                    )
                    trial_J, trial_g = trial.get("J"), trial.get("g")
                else:
                    alpha, trial_J, trial_g, evals, ok = self._projected_search(J, alpha0, s, y)
                if ok:
                    Jn, gn = trial_J, trial_g
                    for name in self.names:
                        np.subtract(self.theta[name], s[name], out=s[name])  # θₖ₊₁ − θₖ
                        y[name] += gn[name]  # ∇J(θₖ₊₁) − ∇J(θₖ)
                    sy = self._pair(y, s)
                    if sy > 0:  # (strong Wolfe ensures it but for round-off; bounds do not)
                        self.pairs.append((s, y))
                        self.rho.append(1.0 / sy)
                        self.fresh = False
                    return Jn, gn, alpha, evals
                for name in self.names:  # back to θₖ and ∇J(θₖ)
                    np.copyto(self.theta[name], s[name])
                    np.negative(y[name], out=y[name])
                g = y
            if self.fresh:
                return None  # steepest descent found no step either
            self.pairs, self.rho, self.fresh = [], [], True  # restart from steepest descent

    def _iterate(self, n):
        if self._at is None:
            self._at = self._evaluate()
            if self.iteration == 0:
                J, g = self._at
                self.converged = self._converged(J, self.gradient_norm(g))
                del g
        self.failed = None
        for _ in range(n):
            if self.converged:
                return
            out = self._step()
            if out is None:
                self.failed = LS_FAILURE
                return
            J, g, alpha, evals = out
            self._at = (J, g)
            self.iteration += 1
            rec = self.record(J, g, step=alpha, line_search=evals, sweeps=self.sweeps)
            del g
            self.converged = self._converged(J, rec.grad_norm)
            yield rec

    # -- checkpointing -------------------------------------------------------------
    def state(self):
        out = super().state()
        for i, (s, y) in enumerate(self.pairs):
            out.update({f"lbfgs/s{i}/{k}": v.copy() for k, v in s.items()})
            out.update({f"lbfgs/y{i}/{k}": v.copy() for k, v in y.items()})
        out["lbfgs/rho"] = np.array(self.rho, dtype=float)
        out["lbfgs/fresh"] = np.array(self.fresh)
        out["lbfgs/sweeps"] = np.array(self.sweeps)  # the metrics' count goes on after a resume
        return out

    def state_kinds(self):
        kinds = super().state_kinds()
        for i in range(len(self.pairs)):
            for k in self.names:
                kinds[f"lbfgs/s{i}/{k}"] = ("control", k)
                kinds[f"lbfgs/y{i}/{k}"] = ("control", k)
        return kinds

    def restore(self, state, controls_only=False):
        super().restore(state)
        self._at, self.converged, self.failed = None, None, None
        self.pairs, self.rho, self.fresh = [], [], True
        if controls_only or "lbfgs/rho" not in state:
            return
        rho = [float(r) for r in np.atleast_1d(state["lbfgs/rho"])]
        for i in range(min(len(rho), self.m)):
            pair = tuple(
                Controls({k: np.array(state[f"lbfgs/{v}{i}/{k}"]) for k in self.names},
                         self.theta.comm)
                for v in "sy"
            )  # fmt: skip
            self.pairs.append(pair)
        self.rho = rho[: len(self.pairs)]
        self.fresh = bool(state["lbfgs/fresh"])
        self.sweeps = int(state.get("lbfgs/sweeps", 0))  # absent in older checkpoints
