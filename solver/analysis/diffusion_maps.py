"""Diffusion maps (Coifman & Lafon, "Diffusion maps", ACHA 21(1), 2006).

For points y_1 … y_n ∈ R^D, the Gaussian kernel k_ε(y, y') = exp(−‖y − y'‖²/ε),
its α-normalisation and the Markov matrix of a random walk on the points:

    K_ij = k_ε(y_i, y_j),  q_i = Σ_j K_ij,  K^(α)_ij = K_ij / (q_i q_j)^α,
    d_i = Σ_j K^(α)_ij,    P = D⁻¹ K^(α).

P's right eigenvectors ψ_k (P ψ_k = λ_k ψ_k, 1 = λ_0 > λ_1 ≥ …, ψ_0 ≡ 1) give
the diffusion coordinates Ψ_t(y_i) = (λ_1^t ψ_1(i), …, λ_m^t ψ_m(i)): the
Euclidean distance between them is the diffusion distance at time t. α = 1
(the default) removes the sampling density: as n → ∞ and ε → 0 the generator
(P − I)/ε tends to the Laplace–Beltrami operator of the manifold the points lie
on, whatever their density — an optimiser samples its path densely where it is
slow, and that should not shape the embedding. α = 0 is the classical normalised
graph Laplacian, α = ½ the Fokker–Planck operator. Computed from the symmetric
conjugate A = D^{-1/2} K^(α) D^{-1/2} (dense, ``scipy.linalg.eigh``: n up to a
few thousand points; ψ_k = v_k / v_0 with A v_k = λ_k v_k, normalised in
ℓ²(π), π_i = d_i / Σd).

Bandwidth (:func:`bandwidth`): ε = max_i ‖y_i − y_{i,(k)}‖², y_{i,(k)} the k-th
nearest neighbour of y_i (k = 5): every point reaches its k nearest neighbours
with weight ≥ 1/e, so the graph stays connected where the points are sparse —
an optimiser's path takes long steps early and tiny ones late, and a bandwidth
fitted to the dense part (a median, or the maximal-slope rule of Berry,
Giannakis & Harlim 2015) would cut the early iterates off into components of
their own (eigenvalues ≈ 1 on isolated points). ``epsilon`` sets it by hand; one
so small that the points fall apart into groups with no diffusion between them
(1 − λ₁ < :data:`DISCONNECTED`: the eigenvalue 1 is multiple and ψ is not
defined) is a :class:`DisconnectedError`.

(datafold 2.0 pins NumPy < 2 and older SciPy/scikit-learn, and pydiffmap has not
been released since 2019, so pontryx implements these few lines itself; the
results agree with pydiffmap 0.2.0.1's ``alpha=1`` maps on test data.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.spatial.distance

__all__ = ["DISCONNECTED", "DiffusionMap", "DisconnectedError", "bandwidth", "diffusion_map"]

#: 1 − λ₁ below this is a multiple eigenvalue 1 (a disconnected graph, as far as
#: double precision tells): the eigenvectors of λ = 1 are then any basis of the
#: components' indicators, and ψ_k = v_k / v_0 is not defined
DISCONNECTED = 1e-10


class DisconnectedError(ValueError):
    """The points form groups with no diffusion between them at this bandwidth."""


@dataclass
class DiffusionMap:
    """Eigenvalues 1 = λ_0 ≥ λ_1 ≥ … and right eigenvectors ψ (n × (m+1), ψ_0 ≡ 1) of
    the diffusion operator; :meth:`coordinates` the diffusion coordinates."""

    eigenvalues: np.ndarray
    eigenvectors: np.ndarray
    epsilon: float
    alpha: float

    def coordinates(self, t: float = 1.0) -> np.ndarray:
        """Ψ_t: (n × m) diffusion coordinates λ_k^t ψ_k, k = 1 … m."""
        return self.eigenvectors[:, 1:] * self.eigenvalues[1:] ** t


def bandwidth(D2: np.ndarray, k: int = 5) -> float:
    """ε = max_i of the squared distance from point i to its k-th nearest neighbour
    (``D2``: the squared distances; see the module docstring)."""
    n = len(D2)
    k = max(1, min(k, n - 1))
    kth = np.partition(D2, k, axis=1)[:, k]  # column 0 is the point itself
    eps = float(kth.max())
    return eps if eps > 0 else 1.0


def diffusion_map(
    Y: np.ndarray, components: int = 3, epsilon: float | None = None, alpha: float = 1.0
) -> DiffusionMap:
    """The diffusion map of the rows of Y (n × D) with ``components`` nontrivial
    eigenpairs; ``epsilon`` None chooses the bandwidth (:func:`bandwidth`)."""
    Y = np.asarray(Y, dtype=float)
    n = len(Y)
    if n < 3:
        raise ValueError(f"a diffusion map needs at least 3 points, got {n}")
    D2 = scipy.spatial.distance.squareform(scipy.spatial.distance.pdist(Y, "sqeuclidean"))
    eps = bandwidth(D2) if epsilon is None else float(epsilon)
    with np.errstate(over="ignore"):  # D2/ε = ∞ for a tiny ε: a weight of exactly 0
        K = np.exp(-D2 / eps)
    q = K.sum(axis=1)
    K /= np.outer(q, q) ** alpha
    d = K.sum(axis=1)
    s = 1.0 / np.sqrt(d)
    A = s[:, None] * K * s[None, :]
    A = 0.5 * (A + A.T)
    m = min(components, n - 1)
    lam, V = scipy.linalg.eigh(A, subset_by_index=[n - m - 1, n - 1])
    lam, V = lam[::-1], V[:, ::-1]
    if lam[1] > 1.0 - DISCONNECTED:
        raise DisconnectedError(
            f"at ε = {eps:.3g} the points fall apart into groups with no diffusion between "
            f"them (λ₁ = {lam[1]:.12g}: a multiple eigenvalue 1)"
        )
    V *= np.sign(V[:, :1].sum())  # v_0 ∝ √d > 0
    psi = V / V[:, :1]  # ψ_k = D^{-1/2} v_k normalised so that ψ_0 ≡ 1
    psi /= np.sqrt((d / d.sum()) @ psi**2)  # unit norm in ℓ²(π)
    # the Gaussian kernel is positive semidefinite, so is A: 0 ≤ λ_k ≤ 1 (clip round-off)
    return DiffusionMap(np.clip(lam, 0.0, 1.0), psi, eps, float(alpha))
