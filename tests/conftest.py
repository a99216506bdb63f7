"""Shared fixtures. ``mpi4py.MPI`` is imported first: the wheel's PETSc and
DOLFINx find libmpi only once MPI is loaded."""

from mpi4py import MPI  # noqa: I001  (must come first)

import gc
import shutil
import tempfile
from pathlib import Path

import pytest
from petsc4py import PETSc


@pytest.fixture(scope="session")
def comm():
    return MPI.COMM_WORLD


@pytest.fixture(autouse=True)
def _petsc_garbage_cleanup():
    """Collect Python garbage and PETSc's collective garbage between tests,
    as DOLFINx's own conftest does, so destroyed objects never leak across
    tests and no rank waits on a collective destroy.

    What survives the collection is frozen (``gc.freeze``), so the next test's
    collection scans only the objects made since; a full collection of the
    whole heap (UFL, DOLFINx, matplotlib and all that earlier tests keep) after
    every test took about a third of the suite's time (0.14 s a test on 2
    ranks). An object that outlives its
    test and only later becomes cyclic garbage (a module fixture's) is
    collected after its module, by ``_full_collection_per_module``."""
    yield
    gc.collect()
    gc.freeze()
    PETSc.garbage_cleanup()


@pytest.fixture(scope="module", autouse=True)
def _full_collection_per_module():
    """After each test module: unfreeze and collect the whole heap once."""
    yield
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    PETSc.garbage_cleanup()


@pytest.fixture(autouse=True)
def _shared_arrays_given_back():
    """Every node-shared array of the width axis lent during a test is given back
    by its end (solver/model/shared.py: one that is not stays lent for the life of
    the process)."""
    from pontryx.solver.model import shared

    yield
    lent = {key: len(pool._lent) for key, pool in shared._POOLS.items() if pool._lent}
    assert not lent, f"node-shared arrays still lent: {lent}"


@pytest.fixture
def mpi_tmp_path(request):
    """A temporary directory shared by all ranks of COMM_WORLD (made on rank 0,
    broadcast, removed after the test)."""
    world = MPI.COMM_WORLD
    path = tempfile.mkdtemp(prefix="pontryx-") if world.rank == 0 else None
    path = Path(world.bcast(path, root=0))
    yield path
    world.barrier()
    if world.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def pytest_runtest_setup(item):
    size = MPI.COMM_WORLD.size
    if item.get_closest_marker("serial") and size > 1:
        pytest.skip("serial test: runs on one rank only")
    if item.get_closest_marker("parallel") and size < 2:
        pytest.skip("parallel test: needs at least 2 ranks")
