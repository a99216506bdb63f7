"""Preconditioned conjugate gradients for the one-shot: :func:`truncated_cg`
(Steihaug 1983 without a trust region, the inner solve of the LNKS control
block) and :class:`TrustRegionPath` (Steihaug–Toint, the trust-region step).

For a symmetric operator W and a symmetric positive definite preconditioner
M⁻¹ (here the L-BFGS B_z⁻¹), PCG on W x = g from x₀ = 0,

    r₀ = g, z₀ = M⁻¹ r₀, p₀ = z₀;   κ_k = p_kᵀ W p_k,  α_k = r_kᵀ z_k / κ_k,
    x_{k+1} = x_k + α_k p_k,  r_{k+1} = r_k − α_k W p_k,  β_k = r_{k+1}ᵀ z_{k+1} / r_kᵀ z_k,

stops when ‖r_k‖_{M⁻¹} = √(r_kᵀ z_k) ≤ rtol ‖g‖_{M⁻¹} (the forcing term),
after ``max_it`` iterations, or when κ_k ≤ 0 (negative curvature: W is
indefinite along p_k, as the exact reduced Hessian far from a minimiser); then
it returns x_k, or z₀ = M⁻¹ g if that happens in the first iteration. Every
iterate is a descent direction of the quadratic model ½xᵀWx − gᵀx
(Steihaug, SIAM J. Numer. Anal. 20(3), 1983; Nocedal & Wright Alg. 7.2).
The result is not a fixed linear function of g (the iteration count and the
coefficients depend on g): the outer Krylov method must be a flexible one (FGMRES).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TrustRegionPath", "truncated_cg"]


def truncated_cg(W, M_inv, g: np.ndarray, dot, rtol: float, max_it: int):
    """(x, iterations, reason) of truncated PCG on W x = g (module docstring);
    reason is ``rtol``, ``max_it`` or ``negative_curvature``. ``W``, ``M_inv``: θ
    parts to θ parts; ``dot`` the (global) inner product."""
    x = np.zeros_like(g)
    r = g.copy()
    z = M_inv(r)
    rz = dot(r, z)
    if not rz > 0:
        return z, 0, "rtol"
    stop = rtol * math.sqrt(rz)
    p = z.copy()
    for k in range(max_it):
        Wp = W(p)
        kappa = dot(p, Wp)
        if not kappa > 0:
            return (z if k == 0 else x), k, "negative_curvature"
        alpha = rz / kappa
        x += alpha * p
        r -= alpha * Wp
        z = M_inv(r)
        rz_new = dot(r, z)
        if not rz_new > 0 or math.sqrt(rz_new) <= stop:
            return x, k + 1, "rtol"
        p *= rz_new / rz
        p += z
        rz = rz_new
    return x, max_it, "max_it"


class TrustRegionPath:
    """The Steihaug–Toint path of preconditioned CG on min m(p) = gᵀp + ½ pᵀWp
    subject to ‖p‖_M ≤ Δ (Steihaug 1983; Toint 1981; Conn, Gould & Toint,
    *Trust-Region Methods*, SIAM 2000, Alg. 7.5.1): from p₀ = 0,

        r₀ = −g, z₀ = M⁻¹ r₀, d₀ = z₀;   κ_k = d_kᵀ W d_k,  α_k = r_kᵀ z_k / κ_k,
        p_{k+1} = p_k + α_k d_k,  r_{k+1} = r_k − α_k W d_k,  d_{k+1} = z_{k+1} + β_k d_k,

    stopped when ‖r_k‖_{M⁻¹} ≤ rtol ‖g‖_{M⁻¹} (inside the region: the inexact
    Newton step), after ``max_it`` iterations, when p_k + α_k d_k leaves the region
    (then p_k + τ d_k on its boundary) or at negative curvature κ_k ≤ 0 (then
    p_k + τ d_k on the boundary, τ > 0: the step follows the direction of negative
    curvature instead of stopping, which is what turns an indefinite W into
    descent). M is the preconditioner's matrix (M⁻¹ SPD: the L-BFGS inverse); the
    M-norms come from the recurrences ‖p_{k+1}‖²_M = ‖p_k‖²_M + 2α_k p_kᵀMd_k +
    α_k² d_kᵀMd_k, p_{k+1}ᵀMd_{k+1} = β_k (p_kᵀMd_k + α_k d_kᵀMd_k),
    d_{k+1}ᵀMd_{k+1} = r_{k+1}ᵀz_{k+1} + β_k² d_kᵀMd_k (no products with M).
    The ‖p_k‖_M increase along the path and m(p_k) decreases, so the solution
    for a smaller radius is the same path cut at that radius: :meth:`point`
    gives it with its model decrease without new products with W (the retries
    of a rejected trust-region step)."""

    def __init__(self, W, M_inv, g: np.ndarray, dot, radius: float, rtol: float, max_it: int):
        self.dot, self.radius = dot, float(radius)
        # segments: (d_k, α_k or None (to the boundary), ‖p_k‖²_M, p_kᵀMd_k, d_kᵀMd_k,
        #            m(p_k), gᵀd_k + p_kᵀWd_k, κ_k)
        self.segments: list[tuple] = []
        self.iterations, self.reason = 0, "max_it"
        self._zero = np.zeros_like(g)
        r = -g.copy()
        z = M_inv(r)
        rz = dot(r, z)
        if not rz > 0:
            self.reason = "rtol"
            return
        stop = rtol * math.sqrt(rz)
        p, Wp = np.zeros_like(g), np.zeros_like(g)
        d = z.copy()
        pp, pd, dd, m = 0.0, 0.0, rz, 0.0
        for k in range(max_it):
            Wd = W(d)
            self.iterations = k + 1
            kappa = dot(d, Wd)
            slope = dot(g, d) + dot(p, Wd)  # d/dτ m(p + τd) at τ = 0
            if not kappa > 0:
                self.segments.append((d, None, pp, pd, dd, m, slope, kappa))
                self.reason = "negative_curvature"
                return
            alpha = rz / kappa
            self.segments.append((d.copy(), alpha, pp, pd, dd, m, slope, kappa))
            pp_new = pp + 2 * alpha * pd + alpha**2 * dd
            if pp_new >= self.radius**2:
                self.reason = "boundary"
                return
            p += alpha * d
            Wp += alpha * Wd
            m = dot(g, p) + 0.5 * dot(p, Wp)
            r -= alpha * Wd
            z = M_inv(r)
            rz_new = dot(r, z)
            if not rz_new > 0 or math.sqrt(rz_new) <= stop:
                self.reason = "rtol"
                self.segments.append((None, None, pp_new, 0.0, 0.0, m, 0.0, 0.0))
                return
            beta = rz_new / rz
            pd = beta * (pd + alpha * dd)
            dd = rz_new + beta**2 * dd
            pp, rz = pp_new, rz_new
            d = z + beta * d
        self.segments.append((None, None, pp, 0.0, 0.0, m, 0.0, 0.0))

    def point(self, radius: float | None = None):
        """(p, m(p), ‖p‖_M, on the boundary) for the trust region ``radius`` ≤ the
        path's (default: the path's own)."""
        radius = self.radius if radius is None else min(float(radius), self.radius)
        p = self._zero
        for d, alpha, pp, pd, dd, m, slope, kappa in self.segments:
            if d is None:  # the end of the path, inside the region
                return p, m, math.sqrt(max(pp, 0.0)), False
            end = None if alpha is None else pp + 2 * alpha * pd + alpha**2 * dd
            if end is None or end >= radius**2:
                # τ > 0 with ‖p + τd‖²_M = Δ²: dd τ² + 2 pd τ + (pp − Δ²) = 0
                tau = (-pd + math.sqrt(max(pd**2 + dd * (radius**2 - pp), 0.0))) / dd
                return p + tau * d, m + tau * slope + 0.5 * tau**2 * kappa, radius, True
            p = p + alpha * d
        return p, 0.0, 0.0, False
