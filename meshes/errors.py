"""MeshError and the argument checks shared by the builders and the factory.

Every check raises a :class:`MeshError` carrying the offending field name, so
``create_mesh`` can report it as ``mesh.<field>: ...`` on one line.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

__all__ = ["MeshError"]


class MeshError(ValueError):
    """An invalid mesh description or an unreadable mesh file.

    ``str(error)`` is one line, ``"<field>: <message>"`` when a field is known.
    """

    def __init__(self, message: str, field: str | None = None):
        self.message = " ".join(str(message).split())
        self.field = field
        super().__init__(f"{field}: {self.message}" if field else self.message)

    def __reduce__(self):  # keep the field when pickled (e.g. broadcast over MPI)
        return (type(self), (self.message, self.field))

    def prefixed(self, prefix: str) -> MeshError:
        """The same error with its field put under ``prefix`` (``h`` → ``mesh.h``)."""
        return MeshError(self.message, f"{prefix}.{self.field}" if self.field else prefix)


def fmt(value: object, limit: int = 60) -> str:
    """A short one-line repr of a user-supplied value for error messages."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(v: object) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _is_list(v: object) -> bool:
    return isinstance(v, Sequence | np.ndarray) and not isinstance(v, str | bytes)


def counts(value: object, dim: int, field: str = "n") -> tuple[int, ...]:
    """Cells per direction: a positive integer (all directions) or ``dim`` of them."""
    if _is_int(value) and value > 0:
        return (int(value),) * dim
    if _is_list(value) and len(value) == dim and all(_is_int(v) and v > 0 for v in value):
        return tuple(int(v) for v in value)
    also = "" if dim == 1 else f" or a list of {dim} positive integers"
    raise MeshError(f"expected a positive integer{also}, got {fmt(value)}", field)


def point(value: object, dim: int, field: str) -> tuple[float, ...]:
    """A point of R^dim: a finite number when ``dim == 1``, else a list of ``dim``."""
    if dim == 1 and _is_real(value):
        return (float(value),)
    if _is_list(value) and len(value) == dim and all(_is_real(v) for v in value):
        return tuple(float(v) for v in value)
    what = "a finite number" if dim == 1 else f"a list of {dim} finite numbers"
    raise MeshError(f"expected {what}, got {fmt(value)}", field)


def bounds(lower: object, upper: object, dim: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Opposite corners of an axis-aligned box, checked ``upper > lower`` per coordinate."""
    lo, up = point(lower, dim, "lower"), point(upper, dim, "upper")
    if not all(u > l for l, u in zip(lo, up)):
        raise MeshError(
            f"expected upper > lower in every coordinate, got lower={fmt(lower)}, "
            f"upper={fmt(upper)}",
            "upper",
        )
    return lo, up


def positive(value: object, field: str) -> float:
    """A finite number > 0."""
    if _is_real(value) and value > 0:
        return float(value)
    raise MeshError(f"expected a positive number, got {fmt(value)}", field)


def choice(value: object, choices: Sequence[str], field: str) -> str:
    """One of ``choices`` (strings)."""
    if isinstance(value, str) and value in choices:
        return value
    raise MeshError(f"expected one of {', '.join(choices)}, got {fmt(value)}", field)
