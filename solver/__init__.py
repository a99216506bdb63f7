"""pontryx.solver — depth stepping, adjoints, training, data, MPI layout, CLI.

The public API::

    from pontryx.meshes import create_mesh
    from pontryx.solver import WidthSpace, ContinuumNetwork, ReducedFunctional, taylor_test

    space = WidthSpace(create_mesh({"kind": "unit_square", "n": 8}), degree=1)
    net = ContinuumNetwork(space, n_in=2, n_out=2, kernel="dense", layers=16)
    θ = net.init_controls(seed=0)
    rf = ReducedFunctional(net, X, y, "classification", alpha=1e-4)
    J, dJ = rf.value_and_gradient(θ)
"""

from mpi4py import MPI  # noqa: F401, I001  (load libmpi before PETSc/DOLFINx)

from .adjoint import gradient_sweep
from .controls import Controls
from .data import DATASETS, Dataset, DataError, load_dataset, shard
from .diffusion import DiffusionSolver
from .kernels import KERNELS, DenseKernel, Kernel, LocalKernel, LowRankKernel, make_kernel
from .layout import Layout, LayoutError
from .loss import LOSSES, cross_entropy, squared_error
from .network import ContinuumNetwork
from .reduced import ReducedFunctional, regulariser
from .schemes import SCHEMES, IMEXEuler, IMEXMidpoint, Scheme, Verlet, make_scheme
from .taylor import TaylorResult, taylor_test
from .width import WidthSpace
from .workspace import Workspace

__all__ = [
    "DATASETS",
    "KERNELS",
    "LOSSES",
    "SCHEMES",
    "ContinuumNetwork",
    "Controls",
    "DataError",
    "Dataset",
    "DenseKernel",
    "DiffusionSolver",
    "IMEXEuler",
    "IMEXMidpoint",
    "Kernel",
    "Layout",
    "LayoutError",
    "LocalKernel",
    "LowRankKernel",
    "ReducedFunctional",
    "Scheme",
    "TaylorResult",
    "Verlet",
    "WidthSpace",
    "Workspace",
    "cross_entropy",
    "gradient_sweep",
    "load_dataset",
    "make_kernel",
    "make_scheme",
    "regulariser",
    "shard",
    "squared_error",
    "taylor_test",
]
