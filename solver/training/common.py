"""What the training methods share: option checking and the non-finite guard."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

from pontryx.meshes.errors import InputError, show
from pontryx.solver.errors import NonFiniteError

__all__ = ["NonFiniteError", "check_finite", "check_kind", "method_options"]


def check_finite(iteration: int, loss: float, grad_norm: float) -> None:
    """Raise :class:`NonFiniteError` unless loss and ‖∇J‖ are finite."""
    if not math.isfinite(loss):
        raise NonFiniteError(f"training: non-finite loss at iteration {iteration}")
    if not math.isfinite(grad_norm):
        raise NonFiniteError(f"training: non-finite gradient at iteration {iteration}")


def method_options(method: str, defaults: dict, options: dict) -> dict:
    """``defaults`` updated by ``options``; an unknown option, or a value of another
    kind than its default's (:func:`check_kind`), is an error keyed by it."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise InputError(
            f"not an option of method {method!r}; expected one of {', '.join(sorted(defaults))}",
            unknown[0],
        )
    for key, value in options.items():
        check_kind(key, defaults[key], value)
    return {**defaults, **options}


def check_kind(key: str, default, value) -> None:
    """The value of option ``key`` is of its default's kind: a finite number for a
    float default, an integer for an int one, true/false for a bool, a mapping for
    a dict (the method then checks its range). Options whose default is a string
    or null take several kinds (``"auto"`` or a number, …): their methods check
    them. Keyed ``key``."""
    if default is None or isinstance(default, str):
        return
    if isinstance(default, bool):
        ok, what = isinstance(value, bool), "true or false"
    elif isinstance(default, int):
        ok, what = isinstance(value, numbers.Integral) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)
        ok, what = real and math.isfinite(value), "a finite number"
    elif isinstance(default, Mapping):
        ok, what = isinstance(value, Mapping), "a mapping"
    else:  # pragma: no cover - no other kinds of defaults
        return
    if not ok:
        raise InputError(f"expected {what}, got {show(value)}", key)
