"""Width domains read from files: XDMF (DOLFINx's own format) and gmsh ``.msh``.

Rank 0 checks the file first and broadcasts the verdict, so a missing or
unreadable file raises the same :class:`InputError` (naming the path) on every
rank instead of leaving some ranks waiting in a collective read.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import xml.etree.ElementTree as ET
from pathlib import Path

from mpi4py import MPI

import dolfinx.mesh
import numpy as np

from .errors import InputError, show
from .gmsh_domains import distribute_gmsh

__all__ = ["SUFFIXES", "read_mesh", "read_msh", "read_xdmf"]

#: Recognised file suffixes and their reader.
SUFFIXES = {".xdmf": "xdmf", ".xmf": "xdmf", ".msh": "msh"}


def _path(path: object) -> Path:
    if not isinstance(path, str | os.PathLike) or not str(path):
        raise InputError(f"expected a file path, got {show(path)}", "path")
    return Path(path)


def _check_on_root(comm: MPI.Comm, check) -> None:
    """Run ``check()`` (may raise InputError) on rank 0; raise its error everywhere."""
    error = None
    if comm.rank == 0:
        try:
            check()
        except InputError as e:
            error = e
    error = comm.bcast(error, root=0)
    if error is not None:
        raise error


def _exists(path: Path) -> None:
    if not path.is_file():
        raise InputError(f"file not found: {path.absolute()}", "path")


def read_xdmf(path: str | os.PathLike, name: str = "mesh", *, comm: MPI.Comm) -> dolfinx.mesh.Mesh:
    """Read the mesh (grid) ``name`` from an XDMF file written by DOLFINx. Collective."""
    from dolfinx.io import XDMFFile

    path = _path(path)
    if not isinstance(name, str) or not name:
        raise InputError(f"expected a non-empty string, got {show(name)}", "name")

    def check():
        _exists(path)
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as e:
            msg = f"cannot read {path.absolute()}: not an XDMF file ({e})"
            raise InputError(msg, "path") from None
        grids = [g.get("Name") for g in root.iter("Grid")]
        if name not in grids:
            found = ", ".join(str(g) for g in grids) or "none"
            raise InputError(f"no mesh {name!r} in {path.absolute()} (found: {found})", "name")

    _check_on_root(comm, check)
    try:
        with _quiet_hdf5(), XDMFFile(comm, str(path), "r") as f:
            return f.read_mesh(name=name)
    except RuntimeError as e:
        raise InputError(f"cannot read {path.absolute()}: {e}", "path") from None


@contextlib.contextmanager
def _quiet_hdf5():
    """HDF5's own error stack off while DOLFINx reads (a damaged .h5 printed some 20
    lines of HDF5-DIAG before pontryx's one-line error); back on after. A no-op
    where the library is not found by name (another build of DOLFINx)."""
    lib = None
    with contextlib.suppress(ImportError, OSError, AttributeError):
        import dolfinx_solver  # the PyPI wheel's libraries

        found = sorted(Path(dolfinx_solver.__file__).parent.glob("lib/libhdf5.so*"))
        lib = ctypes.CDLL(str(found[0])) if found else None
    if lib is None:
        yield
        return
    func, data = ctypes.c_void_p(), ctypes.c_void_p()
    default = ctypes.c_int64(0)  # H5E_DEFAULT
    saved = lib.H5Eget_auto2(default, ctypes.byref(func), ctypes.byref(data)) >= 0
    lib.H5Eset_auto2(default, None, None)
    try:
        yield
    finally:
        if saved:
            lib.H5Eset_auto2(default, func, data)


def read_msh(
    path: str | os.PathLike, gdim: int | None = None, *, comm: MPI.Comm
) -> dolfinx.mesh.Mesh:
    """Read a gmsh ``.msh`` file on rank 0 and distribute it. Collective.

    The cells are the elements of the highest dimension; if they have no
    physical group, all of them are taken. ``gdim`` defaults to the smallest
    dimension holding the node coordinates (at least the cell dimension); a
    given ``gdim`` must be at least the cell dimension and keep every coordinate
    that varies (a constant one, a plane z = c, may be dropped).
    """
    path = _path(path)
    if gdim is not None and (
        isinstance(gdim, bool) or not isinstance(gdim, int) or gdim not in (1, 2, 3)
    ):
        raise InputError(f"expected 1, 2, 3 or null, got {show(gdim)}", "gdim")

    def build(gmsh):
        _exists(path)
        model = gmsh.model
        try:
            gmsh.merge(str(path))
        except Exception as e:
            raise InputError(f"cannot read {path.absolute()}: {e}", "path") from None
        dims = [d for d in (3, 2, 1) if any(len(t) for t in model.mesh.getElements(d)[1])]
        if not dims:
            raise InputError(f"cannot read {path.absolute()}: no mesh elements", "path")
        tdim = dims[0]
        if not model.getPhysicalGroups(tdim):
            model.addPhysicalGroup(tdim, [t for _, t in model.getEntities(tdim)], 1)
        x = np.asarray(model.mesh.getNodes()[1]).reshape(-1, 3)
        if gdim is None:
            used = np.flatnonzero(np.abs(x).max(axis=0) > 0) if len(x) else []
            return max(tdim, int(used[-1]) + 1 if len(used) else 1)
        if gdim < tdim:
            raise InputError(
                f"expected at least {tdim}, the dimension of the cells of {path.absolute()} "
                f"(a {tdim}D mesh needs {tdim} coordinates), got {gdim}",
                "gdim",
            )
        varying = [a for a in range(gdim, 3) if len(x) and np.ptp(x[:, a]) > 0]
        if varying:
            name = "xyz"[varying[0]]
            raise InputError(
                f"the nodes of {path.absolute()} have varying {name} coordinates, which "
                f"gdim {gdim} would drop (flattening the mesh); expected at least "
                f"{varying[-1] + 1} or null",
                "gdim",
            )
        return gdim

    return distribute_gmsh(build, comm, f"reading {path}")


def read_mesh(
    path: str | os.PathLike,
    name: str = "mesh",
    gdim: int | None = None,
    *,
    comm: MPI.Comm,
) -> dolfinx.mesh.Mesh:
    """Read a mesh file by suffix: ``.xdmf``/``.xmf`` (grid ``name``) or ``.msh`` (``gdim``)."""
    path = _path(path)
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        suffix = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        expected = ", ".join(SUFFIXES)
        raise InputError(f"unsupported file {path} ({suffix}); expected {expected}", "path")
    if kind == "xdmf":
        if gdim is not None:
            raise InputError("only used for .msh files (XDMF stores the geometry)", "gdim")
        return read_xdmf(path, name, comm=comm)
    return read_msh(path, gdim, comm=comm)
