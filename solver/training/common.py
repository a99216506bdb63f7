"""What the training methods share: option checking and the non-finite guard."""

from __future__ import annotations

import math

from pontryx.meshes.errors import InputError
from pontryx.solver.errors import NonFiniteError

__all__ = ["NonFiniteError", "check_finite", "method_options"]


def check_finite(iteration: int, loss: float, grad_norm: float) -> None:
    """Raise :class:`NonFiniteError` unless loss and ‖∇J‖ are finite."""
    if not math.isfinite(loss):
        raise NonFiniteError(f"training: non-finite loss at iteration {iteration}")
    if not math.isfinite(grad_norm):
        raise NonFiniteError(f"training: non-finite gradient at iteration {iteration}")


def method_options(method: str, defaults: dict, options: dict) -> dict:
    """``defaults`` updated by ``options``; an unknown option is an error keyed by it."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InputError(
            f"not an option of method {method!r}; expected one of {', '.join(sorted(defaults))}",
            unknown[0],
        )
    return {**defaults, **options}
