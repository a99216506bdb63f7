"""The continuous adjoint (optimise-then-discretise), for comparison with the
exact discrete adjoint of :mod:`pontryx.solver.adjoint`.

The costate p_s of DESIGN.md §1,

    −∂_t p = ε Δp + 𝒦(t)*[σ'(z) p],   p(T) = −(1/S) Σ_k c_k ∂ℓ/∂ŷ_k,

is stepped backwards with the UFL form
:func:`pontryx.forms.residual.costate_step_form`, implicit in the diffusion and
explicit in the nonlocal term g = 𝒦*[σ'(z) p] at t_{n+1} (with
z(t_{n+1}⁻) = Kⁿ U^{n+1} + bⁿ):

    F(pⁿ; v) = ∫ (pⁿ − p^{n+1} − Δt g) v dx_L + Δt ε ∫ ∇pⁿ·∇v dx = 0.

F is linear in (pⁿ, p^{n+1}, g), so :class:`CostateStep` assembles its three
derivatives once — B = ∂F/∂pⁿ (= M_L + Δt ε A), N = −∂F/∂p^{n+1} (= M_L) and
G = −∂F/∂g (= Δt M_L) — and steps whole multivectors (one column per sample):
pⁿ = B⁻¹ (N p^{n+1} + G g), with g from the kernel's batched action.
The gradient density −p σ'(z) u is integrated over each layer by the left
rectangle rule: with Dⁿ = −Δt σ'(Zⁿ) ∘ (M_L pⁿ),

    ∂J/∂bⁿ ≈ Dⁿ 1,   ∂J/∂θ_Kⁿ ≈ ∂⟨Dⁿ, K(θ) Uⁿ⟩/∂θ.

It is consistent with the discrete gradient to O(Δt) (measured in the tests),
not equal to it: the discrete adjoint is the exact gradient of the discrete J.
"""

from __future__ import annotations

import dolfinx.fem
import numpy as np
import ufl

from pontryx.forms.residual import costate_step_form
from pontryx.meshes.errors import InputError
from pontryx.solver.adjoint.sweep import Sweep
from pontryx.solver.model.diffusion import DiffusionSolver

__all__ = ["CostateStep", "continuous_adjoint_gradient"]

PREFIX = "pontryx_costate_"


class CostateStep:
    """pⁿ = B⁻¹ (N p^{n+1} + G g) with B, N, G assembled from
    :func:`~pontryx.forms.residual.costate_step_form` (see the module docstring);
    B⁻¹ is a KSP with the prefix ``pontryx_costate_`` (default: MUMPS LU)."""

    def __init__(self, space, dt: float, epsilon: float):
        self.space = space
        V, mesh = space.V, space.mesh
        p, p_next, g = (dolfinx.fem.Function(V) for _ in range(3))
        c = dolfinx.fem.Constant
        F = costate_step_form(
            p, p_next, g, c(mesh, float(dt)), c(mesh, float(epsilon)), space.lumping
        )
        du = ufl.TrialFunction(V)
        self.N, self.G = (space.assemble_matrix(-ufl.derivative(F, f, du)) for f in (p_next, g))
        B = space.assemble_matrix(ufl.derivative(F, p, du))
        what = "the continuous adjoint's costate solve"
        self.solver = DiffusionSolver(space, dt * epsilon, prefix=PREFIX, matrix=B, what=what)

    def __call__(self, p_next: np.ndarray, g: np.ndarray) -> np.ndarray:
        sp = self.space
        return self.solver.solve(sp.matmul(self.N, p_next) + sp.matmul(self.G, g))

    def destroy(self) -> None:
        self.solver.destroy()
        self.N.destroy()
        self.G.destroy()


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
    step = CostateStep(sp, dt, net.epsilon)
    grad = {name: np.zeros_like(controls[name]) for name in net.layer_names}
    for n in reversed(range(net.layers)):
        ctx = K.layer(net.layer_controls(controls, n), n)
        b = controls["b"][n][:, None]
        Z_right = K.apply(ctx, U[n + 1]) + b
        p = step(p, K.apply_adjoint(ctx, sig.df(Z_right) * p))
        D = -dt * sig.df(K.apply(ctx, U[n]) + b) * (m * p)
        g = {name: grad[name][n] for name in net.layer_names}
        g["b"] += D.sum(axis=1)
        K.vjp(ctx, U[n], D, g)
        K.release(ctx)
    step.destroy()
    return grad
