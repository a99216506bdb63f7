"""What pontryx runs on: package versions, MPI, PETSc configuration.

Used by ``pontryx info`` and recorded in every run's ``summary.json``.
"""

from __future__ import annotations

import importlib.metadata
import platform
import sys

from mpi4py import MPI

import dolfinx
import dolfinx.common
import numpy as np
from petsc4py import PETSc

from pontryx.solver.model import blas, shared

__all__ = ["EXTERNAL_PACKAGES", "environment", "versions"]

#: PETSc external packages reported by ``pontryx info``.
EXTERNAL_PACKAGES = (
    "mumps",
    "superlu_dist",
    "hypre",
    "ml",
    "scalapack",
    "metis",
    "parmetis",
    "ptscotch",
    "hdf5",
)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of pontryx and the stack under it."""
    import basix
    import petsc4py
    import scipy
    import ufl

    petsc = PETSc.Sys.getVersion()
    return {
        "pontryx": _version("pontryx"),
        "python": platform.python_version(),
        "dolfinx": dolfinx.__version__,
        "basix": basix.__version__,
        "ufl": ufl.__version__,
        "ffcx": _version("fenics-ffcx"),
        "petsc": ".".join(map(str, petsc)),
        "petsc4py": petsc4py.__version__,
        "mpi4py": _version("mpi4py"),
        "mpi": MPI.Get_library_version().splitlines()[0].strip(),
        "mpi_standard": "{}.{}".format(*MPI.Get_version()),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "mkl": _version("mkl"),  # None: not installed (parallel.blas: mkl unavailable)
    }


def environment(comm=MPI.COMM_WORLD) -> dict:
    """Versions, ranks, whether the ranks share a node (and the free room in
    /dev/shm, the least of any rank's) and the PETSc/DOLFINx build configuration.
    Collective."""
    import petsc4py

    config = {k: v for k, v in petsc4py.get_config().items()}
    return {
        "versions": versions(),
        "ranks": comm.size,
        "blas": blas.current(),  # the library of the kernels' GEMMs (parallel.blas)
        "shared_memory": {  # for the width axis's node-shared arrays (parallel.exchange)
            "one_node": shared.on_one_node(comm),
            "free_mb": comm.allreduce(shared.free_bytes(), op=MPI.MIN) / 2**20,
        },
        "mpi_processor": MPI.Get_processor_name(),
        "petsc": {
            "scalar_type": np.dtype(PETSc.ScalarType).name,
            "int_type": np.dtype(PETSc.IntType).name,
            "config": config,
            "external_packages": {
                p: bool(PETSc.Sys.hasExternalPackage(p)) for p in EXTERNAL_PACKAGES
            },
        },
        "dolfinx": {
            "adios2": bool(dolfinx.common.has_adios2),
            "slepc": bool(getattr(dolfinx.common, "has_slepc", False)),
            "parmetis": bool(getattr(dolfinx.common, "has_parmetis", False)),
            "ptscotch": bool(getattr(dolfinx.common, "has_ptscotch", False)),
            "kahip": bool(getattr(dolfinx.common, "has_kahip", False)),
        },
        "executable": sys.executable,
    }
