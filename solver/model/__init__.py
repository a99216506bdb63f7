"""pontryx.solver.model — the discrete model of DESIGN.md §2.

:mod:`.width` (V_h with M_L and A, canonical dof order), :mod:`.controls`
(θ as row-distributed arrays), :mod:`.kernels` (dense, low-rank, local 𝒦),
:mod:`.schemes` (depth steps, adjoints, tangents), :mod:`.diffusion` (the
implicit width-diffusion KSP), :mod:`.network` (embedding, readout, initial
controls), :mod:`.loss` (misfits), :mod:`.random` (the canonical random draw),
and :mod:`.workspace` (recycled arrays); their registries are in :mod:`pontryx.solver.registry`.
"""

from pontryx.solver.model.controls import Controls
from pontryx.solver.model.diffusion import DiffusionSolver
from pontryx.solver.model.kernels import (
    DenseKernel,
    Kernel,
    LocalKernel,
    LowRankKernel,
    make_kernel,
)
from pontryx.solver.model.loss import LOSSES, Loss, cross_entropy, squared_error
from pontryx.solver.model.network import ContinuumNetwork
from pontryx.solver.model.random import canonical_normal
from pontryx.solver.model.schemes import RK4, IMEXEuler, IMEXMidpoint, Scheme, Verlet, make_scheme
from pontryx.solver.model.width import WidthSpace
from pontryx.solver.model.workspace import Workspace
from pontryx.solver.registry import KERNELS, LUMPINGS, SCHEMES

__all__ = [
    "KERNELS",
    "LOSSES",
    "LUMPINGS",
    "RK4",
    "SCHEMES",
    "ContinuumNetwork",
    "Controls",
    "DenseKernel",
    "DiffusionSolver",
    "IMEXEuler",
    "IMEXMidpoint",
    "Kernel",
    "LocalKernel",
    "Loss",
    "LowRankKernel",
    "Scheme",
    "Verlet",
    "WidthSpace",
    "Workspace",
    "canonical_normal",
    "cross_entropy",
    "make_kernel",
    "make_scheme",
    "squared_error",
]
