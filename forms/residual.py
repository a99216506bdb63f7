"""The model in UFL: every depth scheme's layer residual for one sample, its
discrete adjoint by ``ufl.derivative``/``ufl.adjoint``, the continuous costate
step and the Hamiltonian density (DESIGN.md §1–3).

Notation: u ∈ V_h one sample's state, dx_L the lumped measure (the nodal
quadrature whose weights are the lumped masses m_i, :func:`.operators.lumped_measure`,
so ∫ f v dx_L = Σ_i m_i f(x_i) v(x_i)), S_c = (M_L + cΔtεA)⁻¹M_L. The nonlocal
term enters as a coefficient: z = 𝒦u + b (or 𝒦*u + b) is the kernel's action,
a double integral UFL does not express (the local kernel's 𝒦 = M_L⁻¹L is itself
the UFL form :func:`.kernels.local_operator`). A layer is a sequence of steps,
each a :class:`Preactivation` z = 𝒦y + b or a :class:`Solve` F(y; v) = 0
(affine in y):

* IMEX Euler:  F(u; v) = ∫ (u − uⁿ − Δt σ(z)) v dx_L + Δt ε ∫ ∇u·∇v dx,  z = 𝒦uⁿ + b;
* IMEX midpoint: z₁ = 𝒦uⁿ + b,
  F₁(u*; v) = ∫ (u* − uⁿ − ½Δt σ(z₁)) v dx_L + ½Δt ε ∫ ∇u*·∇v dx,  z₂ = 𝒦u* + b,
  F₂(u; v) = ∫ (u − 2u* + uⁿ + Δt σ(z₁) − Δt σ(z₂)) v dx_L;
* Verlet (ε = 0; c = ½ in the first layer, 1 after): y₁ = 𝒦*uⁿ + b,
  F_v(v; φ) = ∫ (v − vⁿ + cΔt σ(y₁)) φ dx_L,  y₂ = 𝒦v + b,
  F_u(u; φ) = ∫ (u − uⁿ − Δt σ(y₂)) φ dx_L;
* classical RK4 (ε = 0): z₁ = 𝒦uⁿ + b, and for i = 2, 3, 4
  F_i(yᵢ; v) = ∫ (yᵢ − uⁿ − cᵢΔt σ(z_{i−1})) v dx_L (c = ½, ½, 1),  zᵢ = 𝒦yᵢ + b,
  F(u; v) = ∫ (u − uⁿ − (Δt/6)(σ(z₁) + 2σ(z₂) + 2σ(z₃) + σ(z₄))) v dx_L.

The batched schemes (:mod:`pontryx.solver.model.schemes`) evaluate these
equations on whole multivectors. The discrete adjoint of a layer is the
reverse sweep over its steps with the blocks derived here: for a Solve of y,
the multiplier q solves (∂F/∂y)ᵀ q = λ_y and every other argument a of F
receives −(∂F/∂a)ᵀ q; a Preactivation passes D = λ_z on as 𝒦ᵀD to its source
(and D 1 to b, ∂_θ⟨D, 𝒦(θ)y⟩ to the kernel). The costate Λ of DESIGN.md §2 is
λ of the state entering the layer.

Hamiltonian. With P = −Λ^{n+1} (Li et al.'s costate, :mod:`pontryx.solver.training.msa`)
the layerwise Hamiltonian is Hⁿ(Uⁿ, P, θ) = ⟨P, gⁿ(Uⁿ, θ)⟩ − Rⁿ(θ);
:func:`layer_hamiltonian` is its first term ∫ p·u^{n+1} dx_L (p = M_L⁻¹P) at the
solution of the layer. :func:`hamiltonian_density` is DESIGN.md §1's
h(u, p, z) = ∫ p (εΔu + σ(z)) dx = ∫ p σ(z) dx_L − ε ∫ ∇p·∇u dx; for IMEX Euler
Hⁿ = ⟨P, Uⁿ⟩ + Δt h(uⁿ, q, zⁿ) − Rⁿ exactly, with q the layer's multiplier
(M_L + ΔtεA) q = P (q = p when ε = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import ufl
import ufl.algorithms

from .operators import lumped_measure

__all__ = [
    "LayerForms",
    "Preactivation",
    "Solve",
    "costate_step_form",
    "hamiltonian_density",
    "imex_euler_forms",
    "layer_forms",
    "layer_hamiltonian",
    "midpoint_forms",
    "rk4_forms",
    "verlet_forms",
]


@dataclass(frozen=True)
class Preactivation:
    """z = 𝒦 y + b (``adjoint``: 𝒦* y + b), a coefficient from the kernel's action."""

    z: object  # dolfinx.fem.Function
    source: object  # the Function y it acts on
    adjoint: bool = False


@dataclass(frozen=True)
class Solve:
    """The stage value y defined by F(y; v) = 0, F affine in y."""

    unknown: object  # dolfinx.fem.Function
    residual: ufl.Form

    def jacobian(self) -> ufl.Form:
        """∂F/∂y (bilinear): the stage's matrix."""
        return ufl.derivative(self.residual, self.unknown, ufl.TrialFunction(self._space))

    def jacobian_adjoint(self) -> ufl.Form:
        """(∂F/∂y)ᵀ: the multiplier's equation (∂F/∂y)ᵀ q = λ_y."""
        return ufl.adjoint(self.jacobian())

    def sensitivity_adjoint(self, argument) -> ufl.Form:
        """(∂F/∂a)ᵀ for another argument a of F (a previous state, an earlier stage
        value or a preactivation): a receives −(∂F/∂a)ᵀ q."""
        du = ufl.TrialFunction(argument.function_space)
        return ufl.adjoint(ufl.derivative(self.residual, argument, du))

    def arguments(self, candidates) -> list:
        """The ``candidates`` other than y that F depends on."""
        present = {id(c) for c in ufl.algorithms.extract_coefficients(self.residual)}
        return [c for c in candidates if id(c) in present and c is not self.unknown]

    @property
    def _space(self):
        return self.unknown.function_space


@dataclass
class LayerForms:
    """One layer of a depth scheme for one sample: the state entering it
    (``previous``: (uⁿ,) or (uⁿ, vⁿ)), its steps in the order they are taken, and
    the Functions that hold the new state (``output``, in the state's order)."""

    scheme: str
    previous: tuple
    steps: tuple
    output: tuple

    def functions(self) -> list:
        """Every layer variable: previous states, preactivations, stage values."""
        out = list(self.previous)
        for step in self.steps:
            out.append(step.z if isinstance(step, Preactivation) else step.unknown)
        return out


def _function(V):
    import dolfinx.fem

    return dolfinx.fem.Function(V)


def _diffusion(y, v, c):
    """c ∫ ∇y·∇v dx (c = Δt ε times the stage fraction)."""
    return c * ufl.inner(ufl.grad(y), ufl.grad(v)) * ufl.dx


def imex_euler_forms(V, dt, epsilon, activation, lumping: str = "rowsum") -> LayerForms:
    """IMEX Euler (DESIGN.md §2): one preactivation, one solve. ``dt`` and
    ``epsilon`` are Constants (the forms compile once for every layer)."""
    dxL, v = lumped_measure(V, lumping), ufl.TestFunction(V)
    u_n, z, u = _function(V), _function(V), _function(V)
    F = (u - u_n - dt * activation.ufl(z)) * v * dxL + _diffusion(u, v, dt * epsilon)
    return LayerForms("imex_euler", (u_n,), (Preactivation(z, u_n), Solve(u, F)), (u,))


def midpoint_forms(V, dt, epsilon, activation, lumping: str = "rowsum") -> LayerForms:
    """IMEX midpoint (ARS(1,2,2)): Crank–Nicolson in the diffusion, explicit
    midpoint in σ; u = uⁿ + Δt σ(z₂) when ε = 0."""
    dxL, v = lumped_measure(V, lumping), ufl.TestFunction(V)
    u_n, z1, us, z2, u = (_function(V) for _ in range(5))
    s = activation.ufl
    F1 = (us - u_n - 0.5 * dt * s(z1)) * v * dxL + _diffusion(us, v, 0.5 * dt * epsilon)
    F2 = (u - 2 * us + u_n + dt * s(z1) - dt * s(z2)) * v * dxL
    steps = (Preactivation(z1, u_n), Solve(us, F1), Preactivation(z2, us), Solve(u, F2))
    return LayerForms("midpoint", (u_n,), steps, (u,))


def verlet_forms(V, dt, c, activation, lumping: str = "rowsum") -> LayerForms:
    """The Hamiltonian (Verlet) network, ε = 0; ``c`` a Constant: ½ in the first
    layer (the Störmer–Verlet start from v⁰ = 0), 1 after."""
    dxL, phi = lumped_measure(V, lumping), ufl.TestFunction(V)
    u_n, v_n, y1, v, y2, u = (_function(V) for _ in range(6))
    s = activation.ufl
    Fv = (v - v_n + c * dt * s(y1)) * phi * dxL
    Fu = (u - u_n - dt * s(y2)) * phi * dxL
    steps = (
        Preactivation(y1, u_n, adjoint=True),
        Solve(v, Fv),
        Preactivation(y2, v),
        Solve(u, Fu),
    )
    return LayerForms("verlet", (u_n, v_n), steps, (u, v))


def rk4_forms(V, dt, activation, lumping: str = "rowsum") -> LayerForms:
    """The classical Runge–Kutta network, ε = 0: four preactivations, three stage
    values and the new state."""
    dxL, v = lumped_measure(V, lumping), ufl.TestFunction(V)
    s = activation.ufl
    u_n, u = _function(V), _function(V)
    zs = [_function(V) for _ in range(4)]
    ys = [_function(V) for _ in range(3)]
    steps = [Preactivation(zs[0], u_n)]
    for i, c in enumerate((0.5, 0.5, 1.0)):
        F = (ys[i] - u_n - c * dt * s(zs[i])) * v * dxL
        steps += [Solve(ys[i], F), Preactivation(zs[i + 1], ys[i])]
    increment = s(zs[0]) + 2 * s(zs[1]) + 2 * s(zs[2]) + s(zs[3])
    steps.append(Solve(u, (u - u_n - dt / 6 * increment) * v * dxL))
    return LayerForms("rk4", (u_n,), tuple(steps), (u,))


def layer_forms(scheme: str, V, dt, epsilon, activation, lumping="rowsum", c=None):
    """The :class:`LayerForms` of ``scheme`` (imex_euler | midpoint | verlet | rk4;
    Verlet takes ``c`` instead of ε, RK4 needs ε = 0)."""
    if scheme == "imex_euler":
        return imex_euler_forms(V, dt, epsilon, activation, lumping)
    if scheme == "midpoint":
        return midpoint_forms(V, dt, epsilon, activation, lumping)
    if scheme == "verlet":
        return verlet_forms(V, dt, c, activation, lumping)
    if scheme == "rk4":
        return rk4_forms(V, dt, activation, lumping)
    raise ValueError(f"no forms for scheme {scheme!r}")


def layer_hamiltonian(forms: LayerForms, costates, lumping: str = "rowsum") -> ufl.Form:
    """⟨P, gⁿ⟩ = Σ_k ∫ p_k u_k^{n+1} dx_L (a functional): the layerwise Hamiltonian
    without −Rⁿ, at the solution of the layer; ``costates`` p_k = M_L⁻¹ P_k, one
    Function per component of the state."""
    V = forms.output[0].function_space
    dxL = lumped_measure(V, lumping)
    return sum(p * y * dxL for p, y in zip(costates, forms.output))


def hamiltonian_density(p, u, z, epsilon, activation, lumping: str = "rowsum") -> ufl.Form:
    """h(u, p, z) = ∫ p (εΔu + σ(z)) dx, integrated by parts with ∂_n u = 0:
    ∫ p σ(z) dx_L − ε ∫ ∇p·∇u dx (one sample; DESIGN.md §1's H without the
    regulariser, σ at the nodes like the batched path)."""
    dxL = lumped_measure(p.function_space, lumping)
    return p * activation.ufl(z) * dxL - epsilon * ufl.inner(ufl.grad(p), ufl.grad(u)) * ufl.dx


def costate_step_form(p, p_next, g, dt, epsilon, lumping: str = "rowsum") -> ufl.Form:
    """One backward step of the continuous costate equation (DESIGN.md §1)

        −∂_t p = ε Δp + 𝒦*[σ'(z) p],   ∂_n p = 0,

    implicit in the diffusion and explicit in the nonlocal term g = 𝒦*[σ'(z) p]
    (a coefficient evaluated at t_{n+1}; :mod:`pontryx.solver.adjoint.continuous`
    assembles its operators from this form):

        ∫ (pⁿ − p^{n+1} − Δt g) v dx_L + Δt ε ∫ ∇pⁿ·∇v dx = 0.
    """
    V = p.function_space
    v = ufl.TestFunction(V)
    dxL = lumped_measure(V, lumping)
    return (p - p_next - dt * g) * v * dxL + _diffusion(p, v, dt * epsilon)
