"""Kernel parametrisations of the nonlocal operator 𝒦(t) (DESIGN.md §1–2):
:class:`DenseKernel`, :class:`LowRankKernel`, :class:`LocalKernel`, behind the
one :class:`Kernel` interface of :mod:`.base`; :func:`make_kernel` builds one
by its registry name (:data:`pontryx.solver.registry.KERNELS`)."""

from pontryx.meshes.errors import InputError, show
from pontryx.solver.model.kernels.base import Kernel, Option
from pontryx.solver.model.kernels.dense import DenseKernel
from pontryx.solver.model.kernels.local import LocalKernel
from pontryx.solver.model.kernels.lowrank import LowRankKernel
from pontryx.solver.registry import KERNELS, load

__all__ = [
    "KERNELS",
    "DenseKernel",
    "Kernel",
    "LocalKernel",
    "LowRankKernel",
    "Option",
    "make_kernel",
]


def make_kernel(space, type: str = "dense", **options) -> Kernel:
    """The kernel called ``type`` on ``space``; errors keyed ``type`` or by the option."""
    if type not in KERNELS:
        expected = ", ".join(KERNELS)
        raise InputError(f"unknown kernel {show(type)}; expected one of {expected}", "type")
    cls = load(KERNELS, type)
    return cls(space, **cls.check_options(options))
