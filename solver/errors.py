"""The errors a run can end with: :class:`InputError` for bad input (exit code 2;
defined in :mod:`pontryx.meshes.errors`, the lowest layer, and keyed at the edge),
:class:`NonFiniteError` for a loss or gradient that stopped being finite
(exit code 3) and :class:`SolveError` for an inner PETSc solve that did not
converge (exit code 4, as a method that stopped without converging)."""

from __future__ import annotations

from pontryx.meshes.errors import InputError, show

__all__ = [
    "EXIT_NON_FINITE",
    "EXIT_NOT_CONVERGED",
    "InputError",
    "NonFiniteError",
    "SolveError",
    "caused_by",
    "show",
]


#: the exit code of a run that ended with a :class:`NonFiniteError`
EXIT_NON_FINITE = 3
#: the exit code of a run whose method stopped without converging, or that ended
#: with a :class:`SolveError`
EXIT_NOT_CONVERGED = 4


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss or gradient; the trainer's controls
    are the last ones with a finite loss and gradient."""


class SolveError(RuntimeError):
    """An inner PETSc solve (the width diffusion's, the inverse problem's PDE, …)
    did not converge, e.g. an iterative KSP chosen in ``petsc:`` that ran out of
    iterations: its result is not the solution the gradient assumes, so the run
    stops (not converged) instead of going on with it."""


def caused_by(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """``error`` itself or the first exception of type ``kind`` among its causes,
    else None: petsc4py re-raises an exception of a Python callback inside a PETSc
    solve (a TAO objective, a shell matrix's product) as a ``PETSc.Error`` caused
    by it."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__
    return None
