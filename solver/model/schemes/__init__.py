"""Depth schemes (:mod:`.base` for the interface): :class:`IMEXEuler` (order 1),
:class:`IMEXMidpoint` (order 2), :class:`Verlet` (order 2, reversible),
:class:`RK4` (order 4, ε = 0);
:func:`make_scheme` builds one by its registry name
(:data:`pontryx.solver.registry.SCHEMES`)."""

from pontryx.meshes.errors import InputError, show
from pontryx.solver.model.schemes.base import Scheme
from pontryx.solver.model.schemes.imex_euler import IMEXEuler
from pontryx.solver.model.schemes.midpoint import IMEXMidpoint
from pontryx.solver.model.schemes.rk4 import RK4
from pontryx.solver.model.schemes.verlet import Verlet
from pontryx.solver.registry import SCHEMES, load

__all__ = ["RK4", "SCHEMES", "IMEXEuler", "IMEXMidpoint", "Scheme", "Verlet", "make_scheme"]


def make_scheme(name, space, kernel, activation, dt, epsilon) -> Scheme:
    """The depth scheme called ``name``; an unknown name is keyed ``scheme``."""
    if name not in SCHEMES:
        raise InputError(
            f"unknown depth scheme {show(name)}; expected one of {', '.join(SCHEMES)}", "scheme"
        )
    return load(SCHEMES, name)(space, kernel, activation, dt, epsilon)
