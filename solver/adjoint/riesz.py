"""The L²(M_L) Riesz map of the regulariser: the one change of variables x = √ω θ.

ω are the lumped-mass weights with ‖θ‖²_{L²} = Σ ω θ² for each control
(:func:`l2_weights`): ``kernel.weights()`` for the kernel's layer controls, m for
b, E and C (the lumped L²(Ω) norms of bⁿ, e_j, c_k), 1 for d. An optimiser that
sees x and ∇_x J = ω^{-1/2} ∇_θ J works in the discrete L²(M_L) inner product of
the regulariser instead of the Euclidean one of the nodal values, so its steps
are mesh independent (Schwedes, Ham, Funke & Piggott, "Mesh dependence in
PDE-constrained optimisation", 2017): a gradient step x ← x − η ∇_x J is
θ ← θ − η ω⁻¹ ∇_θ J, the L² gradient. (A Euclidean step on nodal values of W
moves the interior of a fine mesh ∝ 1/(m_i m_j) too far, the boundary rows too
little.) ``metric: euclidean`` is the identity, with no arithmetic at all.
"""

from __future__ import annotations

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.model.controls import REPLICATED, Controls

__all__ = ["METRICS", "RieszMap", "check_metric", "l2_weights"]

METRICS = ("l2", "euclidean")


def check_metric(metric) -> str:
    """The option ``metric``: ``l2`` or ``euclidean``; anything else is keyed ``metric``."""
    if metric not in METRICS:
        raise InputError(f"expected one of {', '.join(METRICS)}, got {show(metric)}", "metric")
    return metric


def l2_weights(net, names) -> dict[str, np.ndarray]:
    """ω for each control name, broadcastable to one layer's array for layer
    controls and to the whole array for E, C (m) and d (1)."""
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
    """x = √ω θ for controls shaped like ``like`` (all layers or one layer's block),
    on flat local vectors (:meth:`Controls.to_flat` layout: the replicated d lives
    on width rank 0 only) and on :class:`Controls`; the identity for
    ``metric: euclidean``."""

    def __init__(self, net, like: Controls, metric: str = "l2"):
        self.metric = check_metric(metric)
        self.root = self.flat_root = None
        if self.metric == "l2":
            w = l2_weights(net, tuple(like))
            self.root = {k: np.broadcast_to(np.sqrt(w[k]), v.shape) for k, v in like.items()}
            self.flat_root = Controls(self.root, like.comm).to_flat()

    # -- flat local vectors (TAO Vecs, the stochastic methods) -------------------
    def to_x(self, theta: np.ndarray) -> np.ndarray:
        """x = √ω θ (a new array)."""
        return theta.copy() if self.root is None else theta * self.flat_root

    def to_theta(self, x: np.ndarray) -> np.ndarray:
        """θ = x / √ω."""
        return x if self.root is None else x / self.flat_root

    def gradient(self, g: np.ndarray) -> np.ndarray:
        """∇_x J = ∇_θ J / √ω."""
        return g if self.root is None else g / self.flat_root

    def set_theta(self, theta: Controls, x: np.ndarray) -> Controls:
        """θ = x / √ω written into ``theta`` (flat layout), without a temporary of
        the size of all controls."""
        if self.root is None:
            return theta.set_flat(x)
        i = 0
        for k, v in theta.items():
            if theta._local_weight(k):
                np.divide(x[i : i + v.size], self.flat_root[i : i + v.size], out=v.reshape(-1))
                i += v.size
        for k in theta.keys() & REPLICATED:  # as Controls.set_flat: from width rank 0
            theta[k][...] = theta.comm.bcast(theta[k] if theta.comm.rank == 0 else None, root=0)
        return theta

    def gradient_into(self, grad: Controls, out: np.ndarray) -> np.ndarray:
        """∇_x J = ∇_θ J / √ω written into ``out`` (flat layout), in place."""
        grad.to_flat(out)
        if self.root is not None:
            out /= self.flat_root
        return out

    # -- Controls ---------------------------------------------------------------
    def controls_to_x(self, theta: Controls) -> Controls:
        if self.root is None:
            return theta.copy()
        return Controls({k: v * self.root[k] for k, v in theta.items()}, theta.comm)

    def controls_to_theta(self, x: Controls) -> Controls:
        if self.root is None:
            return x.copy()
        return Controls({k: v / self.root[k] for k, v in x.items()}, x.comm)

    def controls_gradient(self, g: Controls) -> Controls:
        return self.controls_to_theta(g)
