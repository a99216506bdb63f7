"""Curved and non-convex width domains meshed with gmsh (OpenCASCADE kernel).

The geometry is built and meshed on rank 0 of the communicator only, then
distributed with :func:`dolfinx.io.gmsh.model_to_mesh`. gmsh is initialised
only if it is not already, runs silently, and is left exactly as found (a
temporary model is removed, options restored, gmsh finalised if we started
it). An error on rank 0 is raised as :class:`InputError` on every rank.

All domains are 2D (gdim 2) with target element size ``h``; the cells carry
physical tag 1 ("domain") and the boundary facets tag 1 ("boundary").
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from mpi4py import MPI

import dolfinx.mesh

from . import errors as chk
from .errors import InputError

__all__ = ["annulus", "disk", "distribute_gmsh", "gmsh_session", "hole", "lshape"]

_models = itertools.count()


@contextmanager
def gmsh_session() -> Iterator:
    """Yield the ``gmsh`` module with a fresh, current, empty model.

    Initialises gmsh (without config files or a SIGINT handler) only if it is
    not initialised yet; afterwards finalises it, or else removes the model and
    restores the previous current model and ``General.Terminal``.
    """
    import gmsh

    owner = not gmsh.isInitialized()
    if owner:
        gmsh.initialize(readConfigFiles=False, interruptible=False)
    else:
        previous_model = gmsh.model.getCurrent()
        previous_terminal = gmsh.option.getNumber("General.Terminal")
    gmsh.option.setNumber("General.Terminal", 0)
    name = f"pontryx-{next(_models)}"
    gmsh.model.add(name)
    try:
        yield gmsh
    finally:
        if owner:
            gmsh.finalize()
        else:
            gmsh.model.setCurrent(name)
            gmsh.model.remove()
            if previous_model in gmsh.model.list():
                gmsh.model.setCurrent(previous_model)
            gmsh.option.setNumber("General.Terminal", previous_terminal)


def distribute_gmsh(
    build: Callable[..., int], comm: MPI.Comm, what: str = "gmsh"
) -> dolfinx.mesh.Mesh:
    """Run ``build(gmsh)`` on rank 0 and distribute the resulting mesh over ``comm``.

    ``build`` fills the current gmsh model with a meshed geometry whose cells
    are in physical groups, and returns the geometric dimension. Collective.
    """
    from dolfinx.io.gmsh import model_to_mesh

    if comm.rank != 0:
        error, gdim = comm.bcast(None, root=0)
        if error is not None:
            raise error
        return _to_mesh(model_to_mesh, None, comm, gdim, what)
    with gmsh_session() as gmsh:
        error, gdim = None, None
        try:
            gdim = int(build(gmsh))
        except InputError as e:
            error = e
        except Exception as e:
            error = InputError(f"{what} failed: {e}")
        comm.bcast((error, gdim), root=0)
        if error is not None:
            raise error
        return _to_mesh(model_to_mesh, gmsh.model, comm, gdim, what)


def _to_mesh(model_to_mesh, model, comm, gdim, what):
    try:
        return model_to_mesh(model, comm, 0, gdim=gdim).mesh
    except RuntimeError as e:  # model_to_mesh raises its checks on every rank
        raise InputError(f"{what}: cannot convert the gmsh mesh: {e}") from None


def _mesh_surface(gmsh, h: float) -> int:
    """Tag the OCC surfaces and their boundary, set size ``h``, mesh in 2D."""
    occ, model = gmsh.model.occ, gmsh.model
    occ.synchronize()
    surfaces = [tag for _, tag in model.getEntities(2)]
    curves = model.getBoundary([(2, s) for s in surfaces], combined=True, oriented=False)
    model.addPhysicalGroup(2, surfaces, 1, name="domain")
    model.addPhysicalGroup(1, [abs(tag) for _, tag in curves], 1, name="boundary")
    model.mesh.setSize(model.getEntities(0), h)
    model.mesh.generate(2)
    return 2


def disk(radius: float = 1.0, h: float = 0.1, *, comm: MPI.Comm):
    """The disk of ``radius`` centred at the origin."""
    r, h = chk.length(radius, "radius"), chk.length(h, "h")

    def build(gmsh):
        gmsh.model.occ.addDisk(0.0, 0.0, 0.0, r, r)
        return _mesh_surface(gmsh, h)

    return distribute_gmsh(build, comm, "disk")


def annulus(
    inner_radius: float = 0.5,
    outer_radius: float = 1.0,
    h: float = 0.1,
    *,
    comm: MPI.Comm,
):
    """The annulus inner_radius < |x| < outer_radius centred at the origin."""
    r0, r1 = chk.length(inner_radius, "inner_radius"), chk.length(outer_radius, "outer_radius")
    h = chk.length(h, "h")
    if r0 >= r1:
        raise InputError(
            f"expected inner_radius < outer_radius, got {r0:g} >= {r1:g}", "inner_radius"
        )

    def build(gmsh):
        occ = gmsh.model.occ
        occ.cut([(2, occ.addDisk(0, 0, 0, r1, r1))], [(2, occ.addDisk(0, 0, 0, r0, r0))])
        return _mesh_surface(gmsh, h)

    return distribute_gmsh(build, comm, "annulus")


def lshape(h: float = 0.1, *, comm: MPI.Comm):
    """The L-shape [0, 1]² minus [0.5, 1]² (area 3/4, re-entrant corner at (0.5, 0.5))."""
    h = chk.length(h, "h")

    def build(gmsh):
        occ = gmsh.model.occ
        occ.cut(
            [(2, occ.addRectangle(0, 0, 0, 1, 1))], [(2, occ.addRectangle(0.5, 0.5, 0, 0.5, 0.5))]
        )
        return _mesh_surface(gmsh, h)

    return distribute_gmsh(build, comm, "lshape")


def hole(radius: float = 0.25, h: float = 0.1, *, comm: MPI.Comm):
    """The unit square [0, 1]² minus the disk of ``radius`` < 0.5 centred at (0.5, 0.5)."""
    r, h = chk.length(radius, "radius"), chk.length(h, "h")
    if r >= 0.5:
        raise InputError(
            f"expected 0 < radius < 0.5 (hole inside the unit square), got {r:g}", "radius"
        )

    def build(gmsh):
        occ = gmsh.model.occ
        occ.cut([(2, occ.addRectangle(0, 0, 0, 1, 1))], [(2, occ.addDisk(0.5, 0.5, 0, r, r))])
        return _mesh_surface(gmsh, h)

    return distribute_gmsh(build, comm, "hole")
