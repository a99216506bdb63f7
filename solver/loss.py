"""Data misfits ℓ(ŷ, y) with their gradients (DESIGN.md §1).

Each returns local sums over this rank's samples, already divided by the
global number of samples S, so that summing over the data ranks gives
J_data = (1/S) Σ_s ℓ(ŷ_s, y_s) and ∂J_data/∂Ŷ.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LOSSES", "cross_entropy", "squared_error"]


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


def squared_error(Yhat: np.ndarray, targets: np.ndarray, S: int):
    """ℓ = ½‖ŷ − y‖². Returns (Σ_s ℓ_s / S, ∂/∂Ŷ, Σ_s ‖ŷ − y‖²)."""
    R = Yhat - targets
    sq = float(np.sum(R * R))
    return 0.5 * sq / S, R / S, sq


LOSSES = {"classification": cross_entropy, "regression": squared_error}
