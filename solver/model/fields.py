"""Gaussian random fields on Ω: the law of the initial controls (DESIGN.md §4).

A Matérn field x on Ω is the solution of the stochastic PDE (Whittle 1954;
Lindgren, Rue & Lindström 2011, JRSS-B 73(4))

    (κ² − Δ)^β x = 𝒲 / σ_M   in Ω,   ∂_n x = 0 on ∂Ω,

with 𝒲 Gaussian white noise on Ω, smoothness ν = 2β − d/2 > 0, correlation
length ρ = √(8ν)/κ (the distance at which the correlation drops to ≈ 0.13) and
σ_M² = Γ(ν) / (Γ(ν + d/2) (4π)^{d/2} κ^{2ν}) the variance of (κ² − Δ)^{−β}𝒲 on
R^d, so that x has unit variance away from ∂Ω (the Neumann condition doubles it
at a flat boundary). Its finite-element approximation on V_h, as in Lindgren et
al. §2.3 with the lumped mass M_L:

    b = ⟨𝒲, φ_i⟩_i ~ N(0, M_L)          (white noise: b = M_L^{1/2} ξ, ξ ~ N(0, I)),
    x = (K⁻¹ M_L)^{β−1} K⁻¹ b / σ_M,     K = κ² M_L + A,

converges in law to the field as h → 0, so sizes such as ‖x‖_{L²} do not grow
with N (nodal white noise, the former initial law, has ‖ξ‖²_{L²} ≈ N). ξ is
drawn in the canonical dof order (:mod:`.random`), so a draw is the same on any
number of ranks. K⁻¹ is one KSP with the options prefix ``pontryx_init_``
(default: MUMPS LU, :class:`~.diffusion.DiffusionSolver`), applied to whole
multivectors; on several ranks every rank solves with the whole matrix in the
canonical order (``redundant``: MUMPS's parallel factorisation does not repeat
bit for bit), so a run's draws repeat exactly.

A kernel w(x, y) on Ω × Ω is drawn from the tensor-product field, the SPDE
applied in x and in y,

    w = T Ξ Tᵀ,   T = (K⁻¹ M_L)^{β−1} K⁻¹ M_L^{1/2} / σ_M,   Ξ ~ N(0, I_{N×N}),

(covariance c(x, x') c(y, y')); :meth:`MaternField.kernel` returns its nodal
values. Draws on nested meshes can be made one realisation of 𝒲
(:class:`RestrictedNoise`: the load of a reference mesh's noise restricted to the
coarse space, b_H = Pᵀ b_h, as in multilevel Monte Carlo; Croci et al. 2018,
SIAM/ASA JUQ 6(4)), which the width-limit studies use to compare draws pathwise.

:class:`FieldLaw` is ``model.init``: pointwise variances of the kernel and of
the bias, the correlation length, β, and the correlation of the controls in
depth; :func:`field_controls` draws a network's initial controls from it.
"""

from __future__ import annotations

import math
import numbers
import zlib
from dataclasses import dataclass

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.model.controls import Controls
from pontryx.solver.model.diffusion import DiffusionSolver

__all__ = ["PREFIX", "FieldLaw", "MaternField", "RestrictedNoise", "WhiteNoise", "field_controls"]

PREFIX = "pontryx_init_"


class WhiteNoise:
    """Load vectors b_i = ⟨𝒲, φ_i⟩ of white noise on Ω, covariance M_L, drawn in
    the canonical dof order (the same on any number of ranks)."""

    def __init__(self, space):
        self.space = space
        self.sqrt_m = np.sqrt(space.m)

    def vectors(self, rng: np.random.Generator, k: int) -> np.ndarray:
        """k independent load vectors, this rank's rows (n × k)."""
        sp = self.space
        return self.sqrt_m[:, None] * sp.from_canonical(rng.standard_normal((sp.N, k)))

    def matrix(self, rng: np.random.Generator) -> np.ndarray:
        """The load of white noise on Ω × Ω, M_L^{1/2} Ξ M_L^{1/2}: all N × N entries
        in DOLFINx's global dof order, on every width rank."""
        sp = self.space
        canon = sp.canonical
        Xi = rng.standard_normal((sp.N, sp.N))[np.ix_(canon, canon)]
        s = sp.allgather(self.sqrt_m)
        return s[:, None] * Xi * s[None, :]


class RestrictedNoise(WhiteNoise):
    """White noise of a finer nested ``reference`` space restricted to ``space``:
    b_H = Pᵀ b_h with P the interpolation V_H → V_h (:class:`~.prolongation.Prolongation`),
    so draws on a hierarchy of nested meshes are one realisation of 𝒲."""

    def __init__(self, space, reference):
        from pontryx.solver.model.prolongation import Prolongation

        super().__init__(space)
        self.fine = WhiteNoise(reference)
        self.P = Prolongation(space, reference)

    def vectors(self, rng, k):
        return self.P.restrict(self.fine.vectors(rng, k))

    def matrix(self, rng):
        Pf = self.P.full  # (N_h × N_H) on every rank
        return np.asarray((Pf.T @ (Pf.T @ self.fine.matrix(rng)).T).T)


#: The largest Matérn SPDE exponent β accepted (each draw costs β solves, and
#: β ≤ 32 is smoother than any use: ν = 2β − d/2 ≤ 64).
MAX_SMOOTHNESS = 32


def matern(d: int, correlation_length, smoothness) -> tuple[int, float, float, float]:
    """(β, ν, κ, σ_M) of the Whittle–Matérn field of correlation length ρ and SPDE
    exponent β on a d-dimensional domain: ν = 2β − d/2, κ = √(8ν)/ρ and
    σ_M² = Γ(ν) / (Γ(ν + d/2) (4π)^{d/2} κ^{2ν}) (in logarithms where κ^{2ν} leaves
    the floating-point range). Errors keyed ``correlation_length`` and ``smoothness``."""
    rho = correlation_length
    if isinstance(rho, bool) or not isinstance(rho, numbers.Real) or not 0 < rho < math.inf:
        raise InputError(f"expected a length > 0, got {show(rho)}", "correlation_length")
    beta = smoothness
    if isinstance(beta, bool) or not isinstance(beta, numbers.Integral):
        beta = None
    if beta is None or not 1 <= beta <= MAX_SMOOTHNESS:
        raise InputError(
            f"expected an integer 1 ≤ β ≤ {MAX_SMOOTHNESS}, got {show(smoothness)}", "smoothness"
        )
    beta, rho = int(beta), float(rho)
    nu = 2 * beta - d / 2  # > 0 for β ≥ 1 and d ≤ 3
    kappa = math.sqrt(8 * nu) / float(rho)
    try:
        sigma = math.sqrt(
            math.gamma(nu) / (math.gamma(nu + d / 2) * (4 * math.pi) ** (d / 2) * kappa ** (2 * nu))
        )
    except (OverflowError, ZeroDivisionError):
        sigma = math.nan
    if not 0 < sigma < math.inf:
        log_var = (
            math.lgamma(nu)
            - math.lgamma(nu + d / 2)
            - d / 2 * math.log(4 * math.pi)
            - 2 * nu * math.log(kappa)
        )
        sigma = math.exp(0.5 * log_var) if abs(log_var) < 1400 else math.nan
    if not (0 < sigma < math.inf and 0 < kappa**-2 < math.inf):
        raise InputError(
            f"{show(rho)} is too {'small' if kappa > 1 else 'large'} a length for β = {beta} "
            "(the field's scale leaves the floating-point range)",
            "correlation_length",
        )
    return beta, nu, kappa, sigma


class MaternField:
    """Matérn fields on ``space``: (κ² − Δ)^β x = 𝒲/σ_M (see the module docstring)."""

    def __init__(self, space, correlation_length: float, smoothness: int = 1, noise=None):
        d = space.mesh.geometry.dim
        self.beta, self.nu, self.kappa, self.sigma_M = matern(d, correlation_length, smoothness)
        self.space = space
        self.noise = noise if noise is not None else WhiteNoise(space)
        # K = κ² (M_L + κ⁻² A): one factorisation, reused for every draw
        what = "the Matérn solve of the initial controls"
        self.solver = DiffusionSolver(
            space, 1.0 / self.kappa**2, prefix=PREFIX, what=what, redundant=True
        )

    def _T(self, B: np.ndarray) -> np.ndarray:
        """(K⁻¹ M_L)^{β−1} K⁻¹ B / σ_M for row-distributed columns B (n × k)."""
        X = self.solver.solve(B) / (self.kappa**2 * self.sigma_M)
        for _ in range(self.beta - 1):
            X = self.solver.apply_inverse_times_mass(X) / self.kappa**2
        return X

    def scalar(self, rng: np.random.Generator, k: int, std: float) -> np.ndarray:
        """k independent fields of pointwise standard deviation ``std`` (n × k)."""
        if std == 0 or k == 0:
            return np.zeros((self.space.n, k))
        return std * self._T(self.noise.vectors(rng, k))

    def kernel(self, rng: np.random.Generator, std: float) -> np.ndarray:
        """Nodal values w(x_i, y_j) of the tensor-product field on Ω × Ω (rows: the
        owned dofs; columns: all N in the global order), pointwise std ``std``."""
        sp = self.space
        lo, hi = sp.offset, sp.offset + sp.n
        B = self.noise.matrix(rng)  # (N × N), global order
        R = sp.allgather(np.ascontiguousarray(self._T(np.ascontiguousarray(B[:, lo:hi].T))))
        return std * self._T(np.ascontiguousarray(R[:, lo:hi].T))  # T (T Bᵀ)ᵀ = T B Tᵀ

    def destroy(self) -> None:
        self.solver.destroy()


@dataclass(frozen=True)
class FieldLaw:
    """The law of the initial controls (``model.init``).

    ``variance``: pointwise variance σ_w² of the kernel w(t, x, y) (dense: the
    tensor-product field; low rank: each of the R factor pairs a_r, g_r carries
    σ_w²/R; local: the reaction r, with κ at 10⁻² and a at 10⁻¹ of its standard
    deviation); ``bias_variance``: of b(t, x); ``correlation_length`` ρ and
    ``smoothness`` β of the Matérn field; ``depth_correlation`` τ: layers n and
    n + k are correlated by exp(−kΔt/τ) (an Ornstein–Uhlenbeck process in depth,
    so the law does not depend on N_t either); 0: independent layers; ``None``:
    one draw for every layer (τ = ∞). The readout functions c_k are Matérn fields
    of standard deviation 1/|Ω|; d = 0; E is the embedding's."""

    variance: float = 3.0
    correlation_length: float = 0.3
    smoothness: int = 2
    bias_variance: float = 0.0
    depth_correlation: float | None = None

    def __post_init__(self):
        for key in ("variance", "bias_variance"):
            if not getattr(self, key) >= 0:
                raise InputError(f"expected a number ≥ 0, got {getattr(self, key)}", key)
        tau = self.depth_correlation
        if tau is not None and not tau >= 0:
            raise InputError(f"expected null or a number ≥ 0, got {tau}", "depth_correlation")


def field_controls(net, law: FieldLaw, seed: int = 0, noise=None) -> Controls:
    """Initial controls of ``net`` drawn from ``law`` (identical on any number of
    ranks); ``noise`` a :class:`WhiteNoise` (default: the network's own mesh)."""
    sp, K = net.space, net.kernel
    field = MaternField(sp, law.correlation_length, law.smoothness, noise)

    def rng(name, layer=0):
        return np.random.default_rng([seed, zlib.crc32(name.encode()), layer])

    tau = law.depth_correlation
    rho = 1.0 if tau is None else (math.exp(-net.dt / tau) if tau > 0 else 0.0)
    std_b = math.sqrt(law.bias_variance)
    layers = []
    try:
        for n in range(net.layers):
            if n > 0 and rho == 1.0:
                layers.append({k: v.copy() for k, v in layers[0].items()})
                continue
            fresh = K.field_init(field, lambda name, n=n: rng(name, n), law.variance)
            fresh["b"] = field.scalar(rng("b", n), 1, std_b)[:, 0]
            if n > 0 and rho > 0:
                s = math.sqrt(1.0 - rho * rho)
                fresh = {k: rho * layers[-1][k] + s * v for k, v in fresh.items()}
            layers.append(fresh)
        arrays = {k: np.stack([layer[k] for layer in layers]) for k in (*K.shapes(), "b")}
        arrays["E"] = net.E0.copy()
        arrays["C"] = field.scalar(rng("C"), net.n_out, 1.0 / sp.area)
        arrays["d"] = np.zeros(net.n_out)
    finally:
        field.destroy()
    return Controls(arrays, sp.comm)
