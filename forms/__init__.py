"""pontryx.forms — the mathematics of continuum networks in UFL.

Mass, lumped mass and stiffness forms (:mod:`.operators`), activations with
exact derivatives (:mod:`.activations`), embedding functions (:mod:`.embedding`),
the local kernel (:mod:`.kernels`), and the per-sample layer residuals with their
adjoints derived by ``ufl.derivative``/``ufl.adjoint`` (:mod:`.residual`).
No assembly or solver logic lives here. Names load on first use.
"""

from mpi4py import MPI  # noqa: F401  (libmpi before DOLFINx/PETSc, with the binary wheels)

from pontryx.meshes.lazy import lazy_exports

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

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
