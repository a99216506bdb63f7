"""pontryx.solver — depth stepping, adjoints, training, data, MPI layout, CLI.

Subpackages (the layers of the data flow config → mesh → forms → operators →
solver → outputs): :mod:`.model` (the discrete model), :mod:`.adjoint` (sweeps
and the reduced functional), :mod:`.training` (methods and the one training
loop), :mod:`.data`, :mod:`.config` (the YAML schema), :mod:`.app` (problem
building, the run, the CLI), :mod:`.outputs` (the run directory); plus
:mod:`.registry`, :mod:`.layout` (MPI) and :mod:`.petsc` (PETSc objects).

The public API (names load on first use, so ``import pontryx.solver.config``
stays light)::

    from pontryx.meshes import create_mesh
    from pontryx.solver import WidthSpace, ContinuumNetwork, ReducedFunctional, taylor_test

    space = WidthSpace(create_mesh({"kind": "unit_square", "n": 8}, MPI.COMM_WORLD), degree=1)
    net = ContinuumNetwork(space, n_in=2, n_out=2, kernel="dense", layers=16)
    θ = net.init_controls(seed=0)
    rf = ReducedFunctional(net, X, y, "classification", alpha=1e-4)
    J, dJ = rf.value_and_gradient(θ)
"""

import os
import sys

# OpenBLAS's idle threads busy-wait for 2²⁸ cycles after each GEMM, on the cores where
# the element-wise work runs next (pontryx.solver.model.threads). Told to sleep at once,
# with 2 BLAS threads the low-rank gradient took 0.25 s instead of 0.33 s (medians).
# OpenBLAS reads the variable when it loads, so this only applies when pontryx is
# imported before NumPy; a value set by the user stands.
if "numpy" not in sys.modules:
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from mpi4py import MPI  # noqa: F401  (libmpi before DOLFINx/PETSc, with the binary wheels)

from pontryx.meshes.lazy import lazy_exports

_EXPORTS = {
    **dict.fromkeys(
        (
            "ContinuumNetwork",
            "Controls",
            "DenseKernel",
            "DiffusionSolver",
            "IMEXEuler",
            "IMEXMidpoint",
            "Kernel",
            "LocalKernel",
            "LowRankKernel",
            "RK4",
            "Scheme",
            "Verlet",
            "WidthSpace",
            "Workspace",
            "canonical_normal",
            "make_kernel",
            "make_scheme",
        ),
        "model",
    ),
    **dict.fromkeys(
        (
            "ReducedFunctional",
            "Regulariser",
            "RieszMap",
            "Sweep",
            "TaylorResult",
            "continuous_adjoint_gradient",
            "taylor_test",
            "taylor_test_map",
        ),
        "adjoint",
    ),
    **dict.fromkeys(("Dataset", "Minibatches", "load_dataset", "shard"), "data"),
    **dict.fromkeys(
        ("Trainer", "Record", "TrainResult", "train", "minimize", "make_trainer"), "training"
    ),
    "Layout": "layout",
    "InputError": "errors",
    "NonFiniteError": "errors",
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
