"""pontryx.solver — depth stepping, adjoints, training, data, MPI layout, CLI."""

from mpi4py import MPI  # noqa: F401  (load libmpi before PETSc/DOLFINx)
