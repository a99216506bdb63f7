"""Truncated preconditioned conjugate gradients (Steihaug 1983, without a trust
region): the inner solve of the LNKS control block.

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

__all__ = ["truncated_cg"]


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
