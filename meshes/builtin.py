"""Built-in width domains: intervals, rectangles and boxes from DOLFINx.

Each builder validates its arguments (raising :class:`InputError`) identically
on every rank before the collective mesh creation.
"""

from __future__ import annotations

from collections.abc import Sequence

from mpi4py import MPI

import dolfinx.mesh
from dolfinx.mesh import CellType, DiagonalType

from . import errors as chk

__all__ = ["box", "interval", "rectangle", "unit_cube", "unit_interval", "unit_square"]

#: Cell names accepted by dimension.
CELLS = {1: ("interval",), 2: ("triangle", "quadrilateral"), 3: ("tetrahedron", "hexahedron")}
#: Diagonal patterns of triangle meshes (dolfinx.mesh.DiagonalType names).
DIAGONALS = ("right", "left", "right_left", "left_right", "crossed")

Count = int | Sequence[int]


def _cell(cell: str | CellType, dim: int) -> CellType:
    name = cell.name if isinstance(cell, CellType) else cell
    return CellType[chk.choice(name, CELLS[dim], "cell")]


def _diagonal(diagonal: str, cell: CellType) -> DiagonalType:
    name = chk.choice(diagonal, DIAGONALS, "diagonal")
    if cell != CellType.triangle and name != "right":
        raise chk.InputError(f"only applies to cell 'triangle', not {cell.name!r}", "diagonal")
    return DiagonalType[name]


def interval(
    n: int = 32, lower: float = 0.0, upper: float = 1.0, *, comm: MPI.Comm
) -> dolfinx.mesh.Mesh:
    """The interval [lower, upper] with ``n`` equal cells (gdim 1)."""
    (nx,) = chk.counts(n, 1)
    (lo,), (up,) = chk.bounds(lower, upper, 1, (nx,))
    return dolfinx.mesh.create_interval(comm, nx, [lo, up])


def unit_interval(n: int = 32, *, comm: MPI.Comm) -> dolfinx.mesh.Mesh:
    """The interval [0, 1] with ``n`` equal cells."""
    return interval(n, 0.0, 1.0, comm=comm)


def rectangle(
    n: Count = (16, 16),
    lower: Sequence[float] = (0.0, 0.0),
    upper: Sequence[float] = (1.0, 1.0),
    cell: str = "triangle",
    diagonal: str = "right",
    *,
    comm: MPI.Comm,
) -> dolfinx.mesh.Mesh:
    """The rectangle [lower, upper] with n = nx×ny cells (or n×n for an int).

    ``cell`` is ``triangle`` or ``quadrilateral``; ``diagonal`` (triangles only)
    is ``right``, ``left``, ``right_left``, ``left_right`` or ``crossed``.
    """
    nxy = chk.counts(n, 2)
    lo, up = chk.bounds(lower, upper, 2, nxy)
    cell_type = _cell(cell, 2)
    diag = _diagonal(diagonal, cell_type)
    return dolfinx.mesh.create_rectangle(
        comm, [list(lo), list(up)], list(nxy), cell_type, diagonal=diag
    )


def unit_square(
    n: Count = 16,
    cell: str = "triangle",
    diagonal: str = "right",
    *,
    comm: MPI.Comm,
) -> dolfinx.mesh.Mesh:
    """The unit square [0, 1]² with n×n (or nx×ny) cells."""
    return rectangle(n, (0.0, 0.0), (1.0, 1.0), cell, diagonal, comm=comm)


def box(
    n: Count = (4, 4, 4),
    lower: Sequence[float] = (0.0, 0.0, 0.0),
    upper: Sequence[float] = (1.0, 1.0, 1.0),
    cell: str = "tetrahedron",
    *,
    comm: MPI.Comm,
) -> dolfinx.mesh.Mesh:
    """The box [lower, upper] with nx×ny×nz cells; ``tetrahedron`` or ``hexahedron``."""
    nxyz = chk.counts(n, 3)
    lo, up = chk.bounds(lower, upper, 3, nxyz)
    cell_type = _cell(cell, 3)
    return dolfinx.mesh.create_box(comm, [list(lo), list(up)], list(nxyz), cell_type)


def unit_cube(n: Count = 4, cell: str = "tetrahedron", *, comm: MPI.Comm) -> dolfinx.mesh.Mesh:
    """The unit cube [0, 1]³ with n×n×n (or nx×ny×nz) cells."""
    return box(n, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), cell, comm=comm)
