"""Control systems in two state dimensions whose Hamiltonian separates over the controls.

The class of problems the grid solver (:mod:`.scheme`) handles: states u ∈ R²,
controls b in a box Π_i [lo_i, hi_i], and

    u_i' = f_i(u, b_i) = ψ(a_i(u) + b_i),                      i = 1, 2,
    J(b) = ∫_0^T ℓ₀(u) + Σ_i (r_i/2) b_i² dt + g(u(T)),

with ψ increasing (ψ' > 0). The Hamiltonian's minimum then separates into two
one-dimensional problems, min_b [ℓ(u, b) + p·f(u, b)] = ℓ₀(u) + Σ_i min_{b_i}
[(r_i/2) b_i² + p_i ψ(a_i(u) + b_i)].

* :func:`reduced_network` — the continuum network of DESIGN.md §2 on a width mesh
  with two dofs (an interval of one P1 cell), ε = 0, with the kernel W held fixed
  and the bias as the control: IMEX Euler is then u^{n+1} = uⁿ + Δt σ(W M_L uⁿ + bⁿ),
  i.e. a = W M_L u, ψ = σ; the running cost is the regulariser's (α/2)‖b‖²_{M_L}
  (r_i = α m_i) and the terminal cost the squared-error loss ½(Cᵀ M_L u + d − y)²;
* :func:`lqr` — linear dynamics u' = A u + b with quadratic costs (ψ = id), whose
  value function ½ uᵀ P(t) u solves the Riccati equation (:func:`riccati`): the
  solver's test case with a known answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.integrate

from pontryx.meshes.errors import InputError, show

__all__ = ["SeparableSystem", "lqr", "reduced_network", "riccati"]


@dataclass
class SeparableSystem:
    """u_i' = ψ(a_i(u) + b_i), cost ∫ ℓ₀(u) + Σ (r_i/2) b_i² dt + g(u(T)), b ∈ [lo, hi].

    ``a``, ``state_cost``, ``terminal`` take states of shape (2, K) (one column
    per point) and return (2, K), (K,) and (K,); ``psi``, ``dpsi``, ``d2psi`` act
    elementwise."""

    a: Callable[[np.ndarray], np.ndarray]
    psi: Callable[[np.ndarray], np.ndarray]
    dpsi: Callable[[np.ndarray], np.ndarray]
    d2psi: Callable[[np.ndarray], np.ndarray]
    r: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    terminal: Callable[[np.ndarray], np.ndarray]
    state_cost: Callable[[np.ndarray], np.ndarray] | None = None
    name: str = "system"

    def __post_init__(self):
        self.r, self.lo, self.hi = (np.asarray(v, dtype=float) for v in (self.r, self.lo, self.hi))
        if np.any(self.r <= 0):
            raise InputError(f"expected control costs r_i > 0, got {show(self.r.tolist())}", "r")
        if np.any(self.lo > self.hi):
            raise InputError("expected lower ≤ upper bounds of the controls", "bound")

    def velocity(self, u: np.ndarray, b: np.ndarray) -> np.ndarray:
        """f(u, b) for states (2, K) and controls (2, K)."""
        return self.psi(self.a(u) + b)

    def running(self, u: np.ndarray, b: np.ndarray) -> np.ndarray:
        """ℓ(u, b) = ℓ₀(u) + Σ (r_i/2) b_i² for (2, K) arrays."""
        out = 0.5 * np.einsum("i,ik->k", self.r, b * b)
        return out + (self.state_cost(u) if self.state_cost is not None else 0.0)


def reduced_network(
    W, m, C, d, y, alpha: float, bound, activation: str = "tanh"
) -> SeparableSystem:
    """The two-dof network with fixed kernel ``W`` (2×2), lumped mass ``m`` (2,),
    readout ``C`` (2,) and ``d``, target ``y``, regulariser weight ``alpha`` and
    controls |b_i| ≤ ``bound`` (or [lo, hi])."""
    from pontryx.forms.activations import get_activation

    W, m, C = (np.asarray(v, dtype=float) for v in (W, m, C))
    if W.shape != (2, 2) or m.shape != (2,) or C.shape != (2,):
        raise InputError("the reduced network has two states: W 2×2, m and C of length 2", "W")
    if not alpha > 0:
        raise InputError(f"expected α > 0 (the running cost), got {show(alpha)}", "alpha")
    sigma = get_activation(activation)
    K = W * m[None, :]  # W M_L
    c = C * m  # Cᵀ M_L u = c·u
    lo, hi = _box(bound)

    def terminal(u):
        return 0.5 * (c @ u + d - y) ** 2

    return SeparableSystem(
        a=lambda u: K @ u,
        psi=sigma.f,
        dpsi=sigma.df,
        d2psi=sigma.d2f,
        r=alpha * m,
        lo=lo,
        hi=hi,
        terminal=terminal,
        name=f"two-dof network ({activation})",
    )


def _box(bound) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(bound, int | float) and not isinstance(bound, bool):
        if not bound > 0:
            raise InputError(f"expected a bound > 0, got {show(bound)}", "bound")
        return np.full(2, -float(bound)), np.full(2, float(bound))
    lo, hi = (np.asarray(v, dtype=float) for v in bound)
    return np.broadcast_to(lo, 2).copy(), np.broadcast_to(hi, 2).copy()


def lqr(A, r, Q, P_T, bound=1e3) -> SeparableSystem:
    """u' = A u + b, cost ∫ ½uᵀQu + Σ(r_i/2)b_i² dt + ½u(T)ᵀ P_T u(T) (b in a box
    wide enough to stay inactive: then the value function is ½ uᵀP(t)u)."""
    A, Q, P_T = (np.asarray(v, dtype=float) for v in (A, Q, P_T))

    def ident(z):
        return z

    return SeparableSystem(
        a=lambda u: A @ u,
        psi=ident,
        dpsi=np.ones_like,
        d2psi=np.zeros_like,
        r=np.asarray(r, dtype=float),
        lo=np.full(2, -float(bound)),
        hi=np.full(2, float(bound)),
        terminal=lambda u: 0.5 * np.einsum("ik,ij,jk->k", u, P_T, u),
        state_cost=lambda u: 0.5 * np.einsum("ik,ij,jk->k", u, Q, u),
        name="LQR",
    )


def riccati(A, r, Q, P_T, T: float, t: float = 0.0) -> np.ndarray:
    """P(t) of −P' = AᵀP + PA − P R⁻¹ P + Q, P(T) = P_T (R = diag r): the LQR value
    function is V(t, u) = ½ uᵀ P(t) u (integrated backwards to tolerance 1e-12)."""
    A, Q, P_T = (np.asarray(v, dtype=float) for v in (A, Q, P_T))
    Rinv = np.diag(1.0 / np.asarray(r, dtype=float))

    def rhs(s, p):  # s = T − t
        P = p.reshape(2, 2)
        return (A.T @ P + P @ A - P @ Rinv @ P + Q).ravel()

    if T - t <= 0:
        return P_T.copy()
    sol = scipy.integrate.solve_ivp(rhs, (0.0, T - t), P_T.ravel(), rtol=1e-12, atol=1e-12)
    return sol.y[:, -1].reshape(2, 2)
