"""pontryx.forms — the mathematics of continuum networks in UFL.

Mass, lumped mass and stiffness forms (:mod:`.operators`), activations with
exact derivatives (:mod:`.activations`), embedding functions (:mod:`.embedding`),
the local kernel (:mod:`.kernels`), and the model itself (:mod:`.residual`): the
per-sample layer residual of every depth scheme with its adjoint blocks derived
by ``ufl.derivative``/``ufl.adjoint``, the costate step and the Hamiltonian.
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
    "lumped_weights": "operators",
    "mass_form": "operators",
    "row_sum_form": "operators",
    "stiffness_form": "operators",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
