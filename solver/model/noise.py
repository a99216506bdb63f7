"""Noise in depth: a Q-Wiener process on the width mesh (``model.noise``).

The stochastic continuum network is the SPDE in depth (DESIGN.md §1 with noise)

    du = (εΔu + σ(𝒦u + b)) dt + g dW,

W a Q-Wiener process on Ω (Da Prato & Zabczyk 2014, §4.1): W(t) − W(s) ~ N(0, (t − s) Q)
with Q the covariance of a Whittle–Matérn field of unit pointwise variance,

    Q = σ_M⁻² (κ² − Δ)^{−2β}  (Neumann on ∂Ω),   ν = 2β − d/2,   κ = √(8ν)/ρ,
    σ_M² = Γ(ν) / (Γ(ν + d/2) (4π)^{d/2} κ^{2ν}),

ρ the correlation length, β the smoothness (the construction of Lindgren, Rue &
Lindström 2011, JRSS-B 73(4), §2.3, that ``model.init``'s random fields use too),
so that g is the pointwise amplitude: Var(g ΔWⁿ(x)) = g² Δt away from ∂Ω, and
the law of the increments converges as h → 0 (it does not depend on N). On V_h,
with K = κ² M_L + A and lumped-mass white noise M_L^{1/2} ξ,

    ΔWⁿ = √Δt T ξⁿ,   T = (K⁻¹ M_L)^{β−1} K⁻¹ M_L^{1/2} / σ_M,   ξⁿ ~ N(0, I_N).

K⁻¹ is one PETSc KSP, options prefix ``pontryx_noise_`` (default MUMPS LU, factored
once; :class:`~.diffusion.DiffusionSolver`), applied to whole multivectors.

Euler–Maruyama in depth. Every depth scheme adds g ΔWⁿ to its explicit update
before the implicit diffusion solve (IMEX Euler: (M_L + ΔtεA) U^{n+1} =
M_L (Uⁿ + Δt σ(Zⁿ) + g ΔWⁿ); midpoint: ½ g ΔWⁿ in its half step, g ΔWⁿ in the
full step; Verlet: g ΔWⁿ in the U update). The noise is additive (it does not
depend on u), so Milstein's correction vanishes and Euler–Maruyama *is* the
Milstein scheme: strong order 1 and weak order 1 in Δt for smooth drift and fixed
h (Kloeden & Platen 1992, §10.3 and §14.1; measured in
``benchmarks/sde_orders.py``). The adjoint of a layer does not change: ΔWⁿ does
not depend on θ or U, so the pathwise gradient is the discrete adjoint of the
noisy forward sweep with the increments held fixed.

Paths and draws. Each sample carries M = ``samples`` paths; the sweep's columns
are (sample, path) pairs, column c = s·M + p for global sample s and path p. ξⁿ
of column c is column c mod B of the (N × B) standard-normal array

    numpy.random.default_rng([seed, epoch, n, c // B]).standard_normal((N, B)),   B = 256,

rows in the canonical dof order (:attr:`WidthSpace.canonical`): a draw depends
on the sample, the path, the layer and the epoch only, never on the number of
ranks or on how samples are split, and the increments of a layer are drawn again
(identically) whenever the sweep recomputes it (checkpointing). The epoch is 0
unless ``resample`` is set, when the stochastic methods (sgd, adam, langevin)
make it the iteration number: fresh paths every step (a stochastic
approximation of E[J]); otherwise the paths are fixed for the whole run and
J_M(θ) = (1/S) Σ_s (1/M) Σ_p ℓ(ŷ_s^{(p)}(θ), y_s) + R(θ) is an ordinary
deterministic function (a sample-average approximation of E[J]), which every
method, line searches and the Taylor test see as such.

Overlap with ``model.init``'s random fields (``solver/model/fields.py`` of the
width-limit work): :class:`MaternFactor` is that module's ``MaternField._T``
with unit standard deviation, and the canonical lumped-mass white noise its
``WhiteNoise.vectors`` — one SPDE solver can serve both (only the prefix differs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.model.diffusion import DiffusionSolver
from pontryx.solver.model.fields import matern

__all__ = ["BLOCK", "CACHE_BYTES", "PREFIX", "DepthNoise", "Increments", "MaternFactor"]

PREFIX = "pontryx_noise_"
#: columns drawn together (one generator per layer, path block and epoch)
BLOCK = 256
#: bytes per rank of increments a full-batch functional keeps between sweeps
CACHE_BYTES = 2**28


class MaternFactor:
    """T = (K⁻¹M_L)^{β−1} K⁻¹ M_L^{1/2} / σ_M, K = κ²M_L + A: T ξ is a Matérn field
    of unit pointwise variance (correlation length ρ, smoothness β) for ξ ~ N(0, I)."""

    def __init__(self, space, correlation_length: float, smoothness: int = 1, prefix=PREFIX):
        d = space.mesh.geometry.dim
        self.beta, self.nu, self.kappa, self.sigma = matern(d, correlation_length, smoothness)
        self.space = space
        self.sqrt_m = np.sqrt(space.m)[:, None]
        # K = κ² (M_L + κ⁻² A): one factorisation, reused for every layer and sample
        self.solver = DiffusionSolver(  # redundant: draws that repeat bit for bit
            space,
            1.0 / self.kappa**2,
            prefix=prefix,
            what="the Matérn solve of the noise in depth",
            redundant=True,
        )

    def __call__(self, Xi: np.ndarray) -> np.ndarray:
        """T Ξ for row-distributed columns Ξ (n × k)."""
        X = self.solver.solve(self.sqrt_m * Xi)
        X /= self.kappa**2 * self.sigma
        for _ in range(self.beta - 1):
            X = self.solver.apply_inverse_times_mass(X)
            X /= self.kappa**2
        return X

    def destroy(self) -> None:
        self.solver.destroy()


@dataclass
class Increments:
    """g ΔWⁿ for the columns ``ids`` (global column indices s·M + p) at one epoch.

    With ``cache`` each layer's increments are kept once drawn while they fit in
    :data:`CACHE_BYTES` per rank (a full-batch run with fixed paths draws them once);
    beyond that they are drawn again (identically) at every use."""

    noise: DepthNoise
    ids: np.ndarray
    epoch: int
    dt: float
    cache: bool = False

    def __post_init__(self):
        self.kept: dict[int, np.ndarray] = {}
        size = 8 * self.noise.space.n * self.ids.size
        self.limit = CACHE_BYTES // max(size, 1) if self.cache else 0  # layers kept

    def __call__(self, n: int) -> np.ndarray:
        """g √Δt T ξⁿ for the columns (this rank's rows, n_local × len(ids)); the
        caller must not modify it."""
        X = self.kept.get(n)
        if X is None:
            X = self.noise.increments(n, self.ids, self.epoch, self.dt)
            if len(self.kept) < self.limit:
                self.kept[n] = X
        return X


class DepthNoise:
    """The ``model.noise`` of a network on ``space`` (see the module docstring):
    amplitude g, correlation length ρ, smoothness β, M = ``samples`` paths per
    sample, ``seed``, and whether the stochastic methods redraw the paths every
    iteration (``resample``)."""

    def __init__(
        self,
        space,
        amplitude: float,
        correlation_length: float = 0.2,
        smoothness: int = 1,
        samples: int = 1,
        seed: int = 0,
        resample: bool = False,
    ):
        if not (isinstance(amplitude, int | float) and amplitude >= 0):
            raise InputError(f"expected g ≥ 0, got {show(amplitude)}", "amplitude")
        if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
            raise InputError(f"expected an integer M ≥ 1, got {show(samples)}", "samples")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"expected an integer ≥ 0, got {show(seed)}", "seed")
        self.space, self.amplitude = space, float(amplitude)
        self.samples, self.seed, self.resample = int(samples), int(seed), bool(resample)
        self.factor = MaternFactor(space, correlation_length, smoothness)
        self.correlation_length, self.smoothness = float(correlation_length), int(smoothness)

    def columns(self, sample_ids: np.ndarray) -> np.ndarray:
        """Global column indices s·M + p of the samples' paths (sample-major)."""
        M = self.samples
        return (np.asarray(sample_ids, dtype=np.int64)[:, None] * M + np.arange(M)).ravel()

    def standard(self, n: int, ids: np.ndarray, epoch: int = 0) -> np.ndarray:
        """ξⁿ of the columns ``ids``: this rank's rows (canonical draw), n_local × len(ids)."""
        sp = self.space
        ids = np.asarray(ids, dtype=np.int64)
        out = np.empty((sp.n, ids.size))
        rows = sp.owned_canonical
        blocks = ids // BLOCK
        for block in np.unique(blocks):
            rng = np.random.default_rng([self.seed, int(epoch), int(n), int(block)])
            mine = rng.standard_normal((sp.N, BLOCK))[rows]
            where = np.flatnonzero(blocks == block)
            cols = ids[where] % BLOCK
            if where.size == cols[-1] - cols[0] + 1 and np.all(np.diff(cols) == 1):
                out[:, where[0] : where[-1] + 1] = mine[:, cols[0] : cols[-1] + 1]
            else:
                out[:, where] = mine[:, cols]
        return out

    def increments(self, n: int, ids: np.ndarray, epoch: int, dt: float) -> np.ndarray:
        """g ΔWⁿ = g √Δt T ξⁿ of the columns ``ids`` (n_local × len(ids))."""
        X = self.factor(self.standard(n, ids, epoch))
        X *= self.amplitude * math.sqrt(dt)
        return X

    def paths(self, sample_ids, epoch: int, dt: float, cache: bool = False) -> Increments:
        """The increments of every path of the samples ``sample_ids`` (global indices)."""
        return Increments(self, self.columns(sample_ids), int(epoch), float(dt), cache)

    def arrays(self) -> dict[str, np.ndarray]:
        """The metadata of ``model.npz`` (see README, "The model file")."""
        return {
            "noise_amplitude": np.array(self.amplitude),
            "noise_correlation_length": np.array(self.correlation_length),
            "noise_smoothness": np.array(self.smoothness),
            "noise_kappa": np.array(self.factor.kappa),
            "noise_sigma": np.array(self.factor.sigma),
            "noise_samples": np.array(self.samples),
            "noise_seed": np.array(self.seed),
            "noise_block": np.array(BLOCK),
        }

    def destroy(self) -> None:
        self.factor.destroy()
