"""What the training methods share: option checking and the non-finite guard."""

from __future__ import annotations

import math

__all__ = ["NonFiniteError", "check_finite", "method_options"]


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
