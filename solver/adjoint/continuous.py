"""The continuous adjoint (optimise-then-discretise), for comparison with the
exact discrete adjoint of :mod:`pontryx.solver.adjoint`.

The costate p_s of DESIGN.md §1,

    −∂_t p = ε Δp + 𝒦(t)*[σ'(z) p],   p(T) = −(1/S) Σ_k c_k ∂ℓ/∂ŷ_k,

is stepped backwards, implicit in the diffusion and explicit in the nonlocal
term at t_{n+1} (with z(t_{n+1}⁻) = Kⁿ U^{n+1} + bⁿ) — the batched evaluation of
:func:`pontryx.forms.residual.costate_step_form` —

    (M_L + Δt ε A) pⁿ = M_L (p^{n+1} + Δt K*ⁿ[σ'(Kⁿ U^{n+1} + bⁿ) ∘ p^{n+1}]),

and the gradient density −p σ'(z) u is integrated over each layer by the left
rectangle rule: with Dⁿ = −Δt σ'(Zⁿ) ∘ (M_L pⁿ),

    ∂J/∂bⁿ ≈ Dⁿ 1,   ∂J/∂θ_Kⁿ ≈ ∂⟨Dⁿ, K(θ) Uⁿ⟩/∂θ.

It is consistent with the discrete gradient to O(Δt) (measured in the tests),
not equal to it: the discrete adjoint is the exact gradient of the discrete J.
"""

from __future__ import annotations

import numpy as np

from pontryx.meshes.errors import InputError
from pontryx.solver.adjoint.sweep import Sweep
from pontryx.solver.model.diffusion import DiffusionSolver

__all__ = ["continuous_adjoint_gradient"]


def continuous_adjoint_gradient(net, controls, X, misfit_fn):
    """Gradient of the misfit w.r.t. the layer controls (kernel and b) by the
    continuous adjoint; X is (n_in × S_local). Returns a dict name → array."""
    if net.scheme.n_states != 1:
        raise InputError(f"the {net.scheme.name} scheme has two states", "scheme")
    sp, K, sig, dt = net.space, net.kernel, net.activation, net.dt
    m = sp.m[:, None]
    Yhat, U = Sweep(net, controls).forward(X, keep=range(net.layers + 1))
    _, G, _ = misfit_fn(Yhat)
    p = -(controls["C"] @ G)  # p(T) = −Σ_k c_k ∂ℓ/∂ŷ_k (the 1/S is inside G)
    solver = DiffusionSolver(sp, dt * net.epsilon) if net.epsilon > 0 else None
    grad = {name: np.zeros_like(controls[name]) for name in net.layer_names}
    for n in reversed(range(net.layers)):
        ctx = K.layer(net.layer_controls(controls, n), n)
        b = controls["b"][n][:, None]
        Z_right = K.apply(ctx, U[n + 1]) + b
        rhs = p + dt * K.apply_adjoint(ctx, sig.df(Z_right) * p)
        p = solver.apply_inverse_times_mass(rhs) if solver else rhs
        D = -dt * sig.df(K.apply(ctx, U[n]) + b) * (m * p)
        g = {name: grad[name][n] for name in net.layer_names}
        g["b"] += D.sum(axis=1)
        K.vjp(ctx, U[n], D, g)
        K.release(ctx)
    if solver:
        solver.destroy()
    return grad
