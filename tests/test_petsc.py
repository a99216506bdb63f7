"""PETSc objects owned the DOLFINx way (solver/petsc.py): defaults pushed under the
prefix only while configuring, the user's options win, nothing left behind,
the reproducibility defaults set for library use too."""

from mpi4py import MPI

import numpy as np
import pytest
from petsc4py import PETSc

from pontryx.meshes import create_mesh
from pontryx.solver import Layout, WidthSpace
from pontryx.solver.model.diffusion import DiffusionSolver
from pontryx.solver.petsc import REPRODUCIBLE, configure, pushed_options, reproducible


def _names(prefix):
    return [k for k in PETSc.Options().getAll() if k.startswith(prefix)]


def test_pushed_options_are_removed_and_the_user_wins():
    db = PETSc.Options()
    db["pontryx_test_user"] = "mine"
    try:
        with pushed_options({"pontryx_test_user": "default", "pontryx_test_new": "1"}):
            assert db.getString("pontryx_test_user") == "mine"
            assert db.getString("pontryx_test_new") == "1"
        assert db.getString("pontryx_test_user") == "mine"
        assert not db.hasName("pontryx_test_new")
    finally:
        db.delValue("pontryx_test_user")


def test_configure_sets_the_prefix_and_leaves_nothing_behind():
    ksp = PETSc.KSP().create(MPI.COMM_WORLD)
    configure(ksp, "pontryx_test_", {"ksp_type": "cg", "pc_type": "none"})
    assert ksp.getOptionsPrefix() == "pontryx_test_" and ksp.getType() == "cg"
    assert _names("pontryx_test_") == []
    ksp.destroy()


def test_diffusion_solver_defaults_do_not_stay_in_the_database(comm):
    space = WidthSpace(create_mesh({"kind": "unit_square", "n": 3}, comm))
    solver = DiffusionSolver(space, 0.1)
    assert solver.ksp.getType() == "preonly" and solver.ksp.getPC().getType() == "lu"
    assert _names("pontryx_diffusion_") == []
    solver.destroy()
    PETSc.Options()["pontryx_diffusion_ksp_type"] = "cg"
    PETSc.Options()["pontryx_diffusion_pc_type"] = "jacobi"
    try:
        solver = DiffusionSolver(space, 0.1)
        assert solver.ksp.getType() == "cg" and solver.ksp.getPC().getType() == "jacobi"
        solver.destroy()
    finally:
        PETSc.Options().delValue("pontryx_diffusion_ksp_type")
        PETSc.Options().delValue("pontryx_diffusion_pc_type")
    space.destroy()


@pytest.mark.parametrize("factor", ["mumps", "superlu_dist"])
@pytest.mark.parametrize("redundant", [False, True])
def test_diffusion_solves_with_every_direct_solver(comm, factor, redundant):
    """B⁻¹R, B = M_L + 0.1 A, by MUMPS and SuperLU_DIST (which aborted in KSPMatSolve
    on 2 ranks: it now solves by columns), distributed or redundant (the whole
    matrix in canonical order on every rank): the residual of B X = R at round-off."""
    space = WidthSpace(create_mesh({"kind": "unit_square", "n": 6}, comm))
    Rc = np.random.default_rng(1).standard_normal((space.N, 5))
    db = PETSc.Options()
    db["pontryx_diffusion_pc_factor_mat_solver_type"] = factor
    try:
        solver = DiffusionSolver(space, 0.1, redundant=redundant)
        X = space.to_canonical(solver.solve(space.from_canonical(Rc)))
        solver.destroy()
    finally:
        db.delValue("pontryx_diffusion_pc_factor_mat_solver_type")
    m, A = space.to_canonical(space.m), space.canonical_csr(space.A)
    if comm.rank == 0:
        residual = np.abs(m[:, None] * X + 0.1 * (A @ X) - Rc).max()
        assert residual < 1e-12 * np.abs(Rc).max(), residual
    space.destroy()


def test_reproducible_defaults_for_library_use():
    reproducible()
    for name, value in REPRODUCIBLE.items():
        assert PETSc.Options().getString(name) == value


@pytest.mark.parametrize("width", [None, 1])
def test_layout_frees_its_communicators(comm, width):
    layout = Layout.create(comm, width=width)
    layout.destroy()
    assert layout.width == MPI.COMM_NULL and layout.data == MPI.COMM_NULL
    assert layout.world == comm


def test_a_diffusion_solve_that_does_not_converge_raises_in_any_column(comm):
    """An iterative KSP that runs out of iterations raises SolveError, also when only
    a middle column of a multi-sample solve fails (PETSc solves the columns one by
    one and keeps the last one's reason: here a zero column that converges)."""
    import numpy as np

    from pontryx.solver.errors import SolveError

    space = WidthSpace(create_mesh({"kind": "unit_square", "n": 8}, comm))
    options = {"ksp_type": "cg", "pc_type": "none", "ksp_max_it": 2}
    with pushed_options({"pontryx_diffusion_" + k: v for k, v in options.items()}):
        solver = DiffusionSolver(space, 0.5)
    R = np.zeros((space.n, 3))
    R[:, 1] = np.cos(7 * space.x[:, 0]) + space.x[:, 1]
    assert solver.ksp.getType() == "cg"
    with pytest.raises(SolveError, match=r"width-diffusion solve \(options prefix pontry"):
        solver.solve(R)
    assert solver.ksp.getConvergedReason() > 0  # the last column's: converged
    with pytest.raises(SolveError, match="DIVERGED_MAX_IT after 2 iterations"):
        solver.solve(R[:, 1:2])
    solver.solve(np.zeros_like(R))  # nothing left over from the failures
    solver.destroy()
    space.destroy()


def test_a_redundant_solve_is_distributed_above_its_size(comm, monkeypatch):
    """Above REDUNDANT_MAX_DOFS every rank would factorise the whole matrix: the
    solve is distributed instead (the same numbers up to round-off)."""
    from pontryx.solver.model import diffusion

    space = WidthSpace(create_mesh({"kind": "unit_square", "n": 4}, comm))
    R = np.random.default_rng(2).standard_normal((space.n, 3))
    small = DiffusionSolver(space, 0.1, redundant=True)
    assert small.redundant == (comm.size > 1)
    X = small.solve(R)
    small.destroy()
    monkeypatch.setattr(diffusion, "REDUNDANT_MAX_DOFS", space.N - 1)
    large = DiffusionSolver(space, 0.1, redundant=True)
    assert not large.redundant
    assert np.allclose(large.solve(R), X, rtol=1e-12, atol=1e-14)
    large.destroy()
    space.destroy()
