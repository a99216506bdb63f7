"""Data misfits ℓ(ŷ, y) with their gradients and Hessian actions (DESIGN.md §1).

Each returns local sums over this rank's samples, already divided by the
global number of samples S, so that summing over the data ranks gives
J_data = (1/S) Σ_s ℓ(ŷ_s, y_s), ∂J_data/∂Ŷ and (∂²J_data/∂Ŷ²)[V].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["LOSSES", "Loss", "cross_entropy", "squared_error"]


def _softmax(Yhat):
    Z = Yhat - Yhat.max(axis=0, keepdims=True)
    P = np.exp(Z)
    P /= P.sum(axis=0, keepdims=True)
    return P


def cross_entropy(Yhat: np.ndarray, labels: np.ndarray, S: int):
    """Softmax cross-entropy, ℓ = −log softmax(ŷ)_y.

    Returns (Σ_s ℓ_s / S, ∂/∂Ŷ, number of correct predictions)."""
    Z = Yhat - Yhat.max(axis=0, keepdims=True)
    logsum = np.log(np.exp(Z).sum(axis=0))
    cols = np.arange(Yhat.shape[1])
    loss = float(np.sum(logsum - Z[labels, cols])) / S
    P = np.exp(Z - logsum)
    P[labels, cols] -= 1.0
    correct = int(np.sum(np.argmax(Yhat, axis=0) == labels))
    return loss, P / S, correct


def cross_entropy_hvp(Yhat: np.ndarray, V: np.ndarray, S: int) -> np.ndarray:
    """(∂²ℓ/∂Ŷ²)[V] / S per sample: (diag(p) − p pᵀ) v, p = softmax(ŷ)."""
    P = _softmax(Yhat)
    PV = P * V
    return (PV - P * PV.sum(axis=0, keepdims=True)) / S


def squared_error(Yhat: np.ndarray, targets: np.ndarray, S: int):
    """ℓ = ½‖ŷ − y‖². Returns (Σ_s ℓ_s / S, ∂/∂Ŷ, Σ_s ‖ŷ − y‖²)."""
    R = Yhat - targets
    sq = float(np.sum(R * R))
    return 0.5 * sq / S, R / S, sq


def squared_error_hvp(Yhat: np.ndarray, V: np.ndarray, S: int) -> np.ndarray:
    """(∂²ℓ/∂Ŷ²)[V] / S = V / S."""
    return V / S


@dataclass(frozen=True)
class Loss:
    """A misfit ``value(Ŷ, y, S) → (Σℓ/S, ∂/∂Ŷ, statistic)`` and its Hessian action
    ``hvp(Ŷ, V, S)``; the statistic is the number of correct predictions
    (classification) or the sum of squared errors (regression)."""

    value: object
    hvp: object


LOSSES = {
    "classification": Loss(cross_entropy, cross_entropy_hvp),
    "regression": Loss(squared_error, squared_error_hvp),
}
