"""The value function V(t, u) of a two-state control problem on a DOLFINx grid (monotone scheme).

The Hamilton–Jacobi–Bellman equation of min J (Markowich & Portaro derive it for
the width–depth control problem beside the maximum principle; here in reduced
dimension, :mod:`.system`)

    ∂_t V + min_{b ∈ Θ} [ℓ(u, b) + ∇V·f(u, b)] = 0,   V(T, u) = g(u),

is solved backwards on the vertices of a DOLFINx quadrilateral mesh of a rectangle
G = [lo₁, hi₁] × [lo₂, hi₂] (n₁ × n₂ cells of widths h₁, h₂; V_h = Q1, its nodal
values) by the explicit upwind scheme of Crandall & Lions (Math. Comp. 43, 1984):

    V^k = V^{k+1} + Δτ [ℓ₀ + Σ_i min_{b_i} ((r_i/2) b_i² + f_i⁺ D_i⁺V^{k+1} + f_i⁻ D_i⁻V^{k+1})],

f_i = ψ(a_i(u) + b_i), f⁺ = max(f, 0), f⁻ = min(f, 0), D_i^± the one-sided
differences along axis i (D⁺ = 0 on the upper and D⁻ = 0 on the lower edge of G: a
characteristic that leaves G sees no data from outside). The minimum separates
over the components (:class:`~.system.SeparableSystem`); each one-dimensional
minimum is found exactly up to round-off: the best of ``controls`` candidates in
[lo_i, hi_i] and at the kink f_i = 0, then Newton on its branch.

Monotone: for a fixed b the update is V_k ↦ (1 − Δτ Σ|f_i|/h_i) V_k + Δτ Σ
(|f_i|/h_i) V_neighbour + Δτ ℓ, a combination with non-negative weights when the
CFL condition Δτ Σ_i F_i/h_i ≤ 1 holds (F_i = max |f_i| over G × Θ; Δτ is chosen with
the factor ``cfl`` ≤ 1), and a minimum of monotone maps is monotone; it is
consistent and stable, hence converges to the viscosity solution (Barles &
Souganidis 1991). Order 1 in h and Δτ where V is smooth (measured:
tests/test_hjb.py on LQR with its Riccati solution); in general O(√h) for Lipschitz
V. Δτ is tied to h by the CFL condition, so refining the grid refines Δτ too.

V is accurate where the domain of dependence stays in G: points u with
dist(u, ∂G) > (T − t) max|f|. The solver runs on one rank (``comm``, default
COMM_SELF; every rank under mpirun computes the same).
"""

from __future__ import annotations

import math
from pathlib import Path

from mpi4py import MPI

import dolfinx.fem
import dolfinx.geometry
import dolfinx.io
import dolfinx.mesh
import numpy as np
import scipy.optimize

from pontryx.forms.operators import row_sum_form
from pontryx.meshes import errors as chk
from pontryx.meshes.errors import InputError, show

__all__ = ["ValueFunction", "minimise_component"]

#: the most time steps of a value-function solve (each one a sweep over the grid)
MAX_STEPS = 1e9


def _root(psi) -> float | None:
    """z₀ with ψ(z₀) = 0 (None if ψ has no sign change)."""
    lo, hi = float(psi(np.array(-50.0))), float(psi(np.array(50.0)))
    if lo > 0 or hi < 0:
        return None
    if float(psi(np.array(0.0))) == 0.0:
        return 0.0
    return float(scipy.optimize.brentq(lambda z: float(psi(np.array(z))), -50.0, 50.0))


def minimise_component(system, i: int, a, Dp, Dm, candidates: int = 41, newton: int = 4):
    """For every point k: b_k = argmin over [lo_i, hi_i] of
    φ(b) = (r_i/2) b² + ψ⁺(a_k + b) Dp_k + ψ⁻(a_k + b) Dm_k, and φ(b_k).
    Vectorised over the points (arrays a, Dp, Dm of one shape)."""
    psi, r, lo, hi = system.psi, system.r[i], system.lo[i], system.hi[i]
    a, Dp, Dm = (np.asarray(v, dtype=float).ravel() for v in (a, Dp, Dm))
    grid = np.linspace(lo, hi, max(int(candidates), 2))
    z0 = getattr(system, "_z0", "unset")
    if z0 == "unset":
        z0 = system._z0 = _root(psi)
    cands = [np.broadcast_to(grid[:, None], (len(grid), len(a)))]
    if z0 is not None:
        cands.append(np.clip(z0 - a, lo, hi)[None, :])
    B = np.concatenate(cands)  # (candidates, K)

    def phi(b):
        f = psi(a + b)
        return 0.5 * r * b * b + np.where(f >= 0, f * Dp, f * Dm)

    values = phi(B)
    best = np.argmin(values, axis=0)
    cols = np.arange(len(a))
    b, val = B[best, cols], values[best, cols]
    # Newton on the branch of the best candidate (ψ ≥ 0: slope Dp; ψ < 0: Dm)
    up = psi(a + b) >= 0
    D = np.where(up, Dp, Dm)
    if z0 is None:
        left, right = np.full_like(a, lo), np.full_like(a, hi)
    else:
        kink = np.clip(z0 - a, lo, hi)
        left, right = np.where(up, kink, lo), np.where(up, hi, kink)
    for _ in range(newton):
        z = a + b
        g = r * b + D * system.dpsi(z)
        h = r + D * system.d2psi(z)
        step = np.where(h > 0, g / np.where(h > 0, h, 1.0), 0.0)
        trial = np.clip(b - step, left, right)
        tv = phi(trial)
        better = tv < val
        b, val = np.where(better, trial, b), np.where(better, tv, val)
    return b, val


class ValueFunction:
    """V(t_k, ·) at t_k = kΔτ, k = 0 … K, for ``system`` on the grid ``lower`` ×
    ``upper`` with ``n`` cells per axis (an int or two), horizon ``T``.

    ``multiple``: K is a multiple of it (so the layer times t_n = nT/N_t of a
    network with N_t = ``multiple`` layers are time levels); ``cfl`` ≤ 1 the
    fraction of the CFL bound used; ``controls`` the candidates per control
    component. :meth:`solve` fills ``levels`` (K + 1, n₁ + 1, n₂ + 1)."""

    def __init__(
        self,
        system,
        lower,
        upper,
        n,
        T: float,
        *,
        multiple: int = 1,
        cfl: float = 0.9,
        controls: int = 41,
        comm: MPI.Comm = MPI.COMM_SELF,
    ):
        given, n = n, np.broadcast_to(np.asarray(n, dtype=int), 2).copy()
        if np.any(n < 2):
            raise InputError(f"expected at least 2 cells per axis, got {show(given)}", "n")
        lower, upper = (np.array(v) for v in chk.bounds(lower, upper, 2, tuple(n.tolist())))
        if not 0 < cfl <= 1:
            raise InputError(f"expected 0 < cfl ≤ 1, got {show(cfl)}", "cfl")
        if not T > 0:
            raise InputError(f"expected T > 0, got {show(T)}", "T")
        self.system, self.T, self.controls = system, float(T), int(controls)
        self.lower, self.upper, self.n = lower, upper, n
        self.h = (upper - lower) / n
        self.mesh = dolfinx.mesh.create_rectangle(
            comm, [lower, upper], n.tolist(), dolfinx.mesh.CellType.quadrilateral
        )
        self.V = dolfinx.fem.functionspace(self.mesh, ("Lagrange", 1))
        x = self.V.tabulate_dof_coordinates()[:, :2]
        ij = np.rint((x - lower) / self.h).astype(int)
        self._dof_of = np.empty(tuple(n + 1), dtype=np.int64)  # grid (i, j) → dof
        self._dof_of[ij[:, 0], ij[:, 1]] = np.arange(len(x))
        g1 = lower[0] + self.h[0] * np.arange(n[0] + 1)
        g2 = lower[1] + self.h[1] * np.arange(n[1] + 1)
        self.axes = (g1, g2)
        X1, X2 = np.meshgrid(g1, g2, indexing="ij")
        self.nodes = np.stack([X1.ravel(), X2.ravel()])  # (2, N) in grid order
        self._a = system.a(self.nodes)
        self._l0 = (
            system.state_cost(self.nodes) if system.state_cost is not None else np.zeros(X1.size)
        )
        self.speed = np.array(
            [
                np.max(
                    np.maximum(
                        np.abs(system.psi(self._a[i] + system.lo[i])),
                        np.abs(system.psi(self._a[i] + system.hi[i])),
                    )
                )
                for i in range(2)
            ]
        )
        bound = cfl / max(float(np.sum(self.speed / self.h)), 1e-300)
        multiple = max(int(multiple), 1)
        ratio = self.T / (multiple * bound) if bound > 0 else math.inf
        if not ratio <= MAX_STEPS:  # a cfl near 0 asked for more steps than can be taken
            raise InputError(
                f"expected a cfl for which the horizon takes at most {MAX_STEPS:g} time "
                f"steps, got {show(cfl)} ({ratio:.3g} steps)",
                "cfl",
            )
        self.steps = multiple * max(1, math.ceil(ratio))
        self.dt = self.T / self.steps
        self.levels: np.ndarray | None = None
        self.minimisers: np.ndarray | None = None  # b*(t_0, nodes), (2, n₁+1, n₂+1)
        self._tree = None

    # -- the scheme -----------------------------------------------------------------------
    def differences(self, G: np.ndarray):
        """(D₁⁺, D₁⁻, D₂⁺, D₂⁻) of grid values G, zero across the edges of G."""
        h1, h2 = self.h
        d1, d2 = np.diff(G, axis=0) / h1, np.diff(G, axis=1) / h2
        D1p, D1m, D2p, D2m = (np.zeros_like(G) for _ in range(4))
        D1p[:-1], D1m[1:] = d1, d1
        D2p[:, :-1], D2m[:, 1:] = d2, d2
        return D1p, D1m, D2p, D2m

    def step(self, G: np.ndarray, keep: bool = False) -> np.ndarray:
        """V^k from V^{k+1} = G (grid values); ``keep``: store the minimisers."""
        D1p, D1m, D2p, D2m = self.differences(G)
        total = self._l0.copy()
        bs = []
        for i, (Dp, Dm) in enumerate(((D1p, D1m), (D2p, D2m))):
            b, value = minimise_component(self.system, i, self._a[i], Dp, Dm, self.controls)
            total += value
            bs.append(b.reshape(G.shape))
        if keep:
            self.minimisers = np.stack(bs)
        return G + self.dt * total.reshape(G.shape)

    def solve(self) -> np.ndarray:
        """All time levels, from V(T) = g backwards."""
        shape = tuple(self.n + 1)
        levels = np.empty((self.steps + 1, *shape))
        levels[-1] = self.system.terminal(self.nodes).reshape(shape)
        for k in reversed(range(self.steps)):
            levels[k] = self.step(levels[k + 1], keep=(k == 0))
        self.levels = levels
        return levels

    # -- V as DOLFINx functions -----------------------------------------------------------
    def function(self, k: int, name: str = "V") -> dolfinx.fem.Function:
        """Level k as a Q1 Function."""
        f = dolfinx.fem.Function(self.V, name=name)
        f.x.array[self._dof_of.ravel()] = self.levels[k].ravel()
        return f

    def lumped_mass(self) -> np.ndarray:
        """Grid values of the Q1 lumped mass (the quadrature weights of ∫_G · du)."""
        m = dolfinx.fem.assemble_vector(dolfinx.fem.form(row_sum_form(self.V)))
        return m.array[self._dof_of]

    def level(self, t: float) -> int:
        """The time level of t (nearest)."""
        return int(np.clip(round(t / self.dt), 0, self.steps))

    def _cells(self, points: np.ndarray) -> np.ndarray:
        if self._tree is None:
            self._tree = dolfinx.geometry.bb_tree(self.mesh, 2)
        p = np.zeros((len(points), 3))
        p[:, :2] = points
        hits = dolfinx.geometry.compute_colliding_cells(
            self.mesh, dolfinx.geometry.compute_collisions_points(self._tree, p), p
        )
        return p, np.array([hits.links(i)[0] for i in range(len(points))], dtype=np.int32)

    def interpolate(self, k: int, points: np.ndarray) -> np.ndarray:
        """I_h V^k at points (P × 2), clipped into G (DOLFINx evaluation of the Q1 function)."""
        points = np.clip(np.asarray(points, dtype=float), self.lower, self.upper)
        p, cells = self._cells(points)
        return np.ravel(self.function(k).eval(p, cells))

    def value(self, t: float, u) -> float:
        """V_h(t, u)."""
        return float(self.interpolate(self.level(t), np.asarray(u, dtype=float)[None, :])[0])

    def feedback(self, t: float, u) -> np.ndarray:
        """θ*(t, u) = argmin_b [ℓ(u, b) + ∇V·f(u, b)], with the upwind differences of the
        interpolated V at the level after t (the scheme's own minimisation, at u)."""
        u = np.asarray(u, dtype=float)
        k = min(self.level(t) + 1, self.steps)
        h1, h2 = self.h
        e1, e2 = np.array([h1, 0.0]), np.array([0.0, h2])
        pts = np.array([u, u + e1, u - e1, u + e2, u - e2])
        v = self.interpolate(k, pts)
        a = self.system.a(u[:, None])[:, 0]
        b = np.empty(2)
        for i, (hp, hm, h) in enumerate(((v[1], v[2], h1), (v[3], v[4], h2))):
            Dp, Dm = (hp - v[0]) / h, (v[0] - hm) / h
            b[i] = minimise_component(self.system, i, a[i], Dp, Dm, self.controls)[0][0]
        return b

    def write_paraview(self, path: Path, times=None) -> None:
        """V(t, ·) at ``times`` (default: every level) as a VTX time series."""
        times = [k * self.dt for k in range(self.steps + 1)] if times is None else times
        f = dolfinx.fem.Function(self.V, name="V")
        with dolfinx.io.VTXWriter(self.mesh.comm, Path(path), [f], engine="BP4") as w:
            for t in times:
                f.x.array[self._dof_of.ravel()] = self.levels[self.level(t)].ravel()
                w.write(float(t))
