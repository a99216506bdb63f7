"""The errors a run can end with: :class:`InputError` for bad input (exit code 2;
defined in :mod:`pontryx.meshes.errors`, the lowest layer, and keyed at the edge)
and :class:`NonFiniteError` for a loss or gradient that stopped being finite
(exit code 3)."""

from __future__ import annotations

from pontryx.meshes.errors import InputError, show

__all__ = ["EXIT_NON_FINITE", "InputError", "NonFiniteError", "show"]


#: the exit code of a run that ended with a :class:`NonFiniteError`
EXIT_NON_FINITE = 3


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient; the trainer's controls
    are the last ones with a finite loss and gradient."""
