"""pontryx.forms — the mathematics of continuum networks in UFL.

Mass, lumped mass and stiffness forms (:mod:`.operators`), activations with
exact derivatives (:mod:`.activations`), embedding functions (:mod:`.embedding`),
the local kernel (:mod:`.kernels`), and the per-sample layer residuals with their
adjoints derived by ``ufl.derivative``/``ufl.adjoint`` (:mod:`.residual`).
No assembly or solver logic lives here. Names load on first use.
"""

import importlib

from mpi4py import MPI  # noqa: F401  (libmpi before DOLFINx/PETSc, with the binary wheels)

_EXPORTS = {
    "ACTIVATIONS": "activations",
    "Activation": "activations",
    "get_activation": "activations",
    "EMBEDDINGS": "embedding",
    "embedding_functions": "embedding",
    "DEGREES": "operators",
    "function_space": "operators",
    "lumped_measure": "operators",
    "mass_form": "operators",
    "row_sum_form": "operators",
    "stiffness_form": "operators",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
