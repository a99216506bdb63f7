"""What the training methods share: option checking, the non-finite guard and the L² metric."""

from __future__ import annotations

import math

import numpy as np

from pontryx.solver.controls import Controls

__all__ = [
    "METRICS",
    "NonFiniteError",
    "RieszMap",
    "check_finite",
    "check_metric",
    "l2_weights",
    "method_options",
]


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient; the trainer's controls
    are the last ones with a finite loss and gradient."""


def check_finite(iteration: int, loss: float, grad_norm: float) -> None:
    """Raise :class:`NonFiniteError` unless loss and ‖∇J‖ are finite."""
    if not math.isfinite(loss):
        raise NonFiniteError(f"training: non-finite loss at iteration {iteration}")
    if not math.isfinite(grad_norm):
        raise NonFiniteError(f"training: non-finite gradient at iteration {iteration}")


def method_options(method: str, defaults: dict, options: dict) -> dict:
    """``defaults`` updated by ``options``; an unknown key is a one-line error."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(
            f"training.{unknown[0]}: not an option of method {method!r}; "
            f"expected one of {sorted(defaults)}"
        )
    return {**defaults, **options}


METRICS = ("l2", "euclidean")


def check_metric(metric) -> str:
    """The option ``metric``: ``l2`` or ``euclidean``; anything else is a one-line error."""
    if metric not in METRICS:
        raise ValueError(f"training.metric: expected one of {list(METRICS)}, got {metric!r}")
    return metric


def l2_weights(net, names) -> dict[str, np.ndarray]:
    """ω with ‖θ‖²_{L²} = Σ ω θ² for each control name, broadcastable to one layer's
    array for layer controls (kernel.weights(), m for b) and to the whole array for
    E and C (m: the lumped L²(Ω) norm of e_j, c_k) and d (1).

    The optimisers that take ``metric: l2`` work in the Riesz variables θ̃ = √ω θ:
    the Euclidean gradient ∂J/∂θ becomes ∂J/∂θ̃ = ω^{-1/2} ∂J/∂θ, whose Euclidean
    norm is the L²(M_L) norm of the L² gradient ω⁻¹ ∂J/∂θ. Steps are then
    measured in the norm of the regulariser, independent of the mesh (a
    Euclidean step on nodal values of W moves the interior of a fine mesh
    ∝ 1/(m_i m_j) too far, the boundary rows too little)."""
    m = net.space.m
    layer = net.regularisation_weights()
    out = {}
    for name in names:
        if name in layer:
            out[name] = np.asarray(layer[name], dtype=float)
        elif name in ("E", "C"):
            out[name] = m[:, None]
        elif name == "d":
            out[name] = np.ones(1)
        else:
            raise KeyError(name)
    return out


class RieszMap:
    """The change of variables x = √ω θ on flat local control vectors
    (:meth:`Controls.to_flat` layout, so the replicated d lives on width rank 0
    only), ω = :func:`l2_weights` for ``metric: l2``; the identity (no
    arithmetic at all) for ``metric: euclidean``.

    An optimiser that sees x and ∇_x J = ω^{-1/2} ∇_θ J works in the discrete
    L²(M_L) inner product of the regulariser instead of the Euclidean one of the
    nodal values, so its steps are mesh independent (Schwedes, Ham, Funke &
    Piggott, "Mesh dependence in PDE-constrained optimisation", 2017):
    a gradient step x ← x − η ∇_x J is θ ← θ − η ω⁻¹ ∇_θ J, the L² gradient."""

    def __init__(self, net, theta: Controls, metric: str):
        self.metric = check_metric(metric)
        self.root = None
        if self.metric == "l2":
            w = l2_weights(net, tuple(theta))
            shaped = {k: np.broadcast_to(np.sqrt(w[k]), v.shape) for k, v in theta.items()}
            self.root = Controls(shaped, theta.comm).to_flat()

    def to_x(self, theta: np.ndarray) -> np.ndarray:
        """x = √ω θ (a new array)."""
        return theta.copy() if self.root is None else theta * self.root

    def to_theta(self, x: np.ndarray) -> np.ndarray:
        """θ = x / √ω."""
        return x if self.root is None else x / self.root

    def gradient(self, g: np.ndarray) -> np.ndarray:
        """∇_x J = ∇_θ J / √ω."""
        return g if self.root is None else g / self.root
