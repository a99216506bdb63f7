"""pontryx.meshes — width domains Ω.

The width of a continuum network is a finite-element mesh. This package makes
those meshes, distributed over an MPI communicator (always given explicitly):

- built-in DOLFINx meshes: :func:`interval`, :func:`rectangle`, :func:`box` and
  their unit variants (:mod:`.builtin`);
- gmsh geometries meshed on rank 0 and distributed: :func:`disk`,
  :func:`annulus`, :func:`lshape`, :func:`hole` (:mod:`.gmsh_domains`);
- meshes read from XDMF or gmsh ``.msh`` files (:mod:`.files`);
- :func:`create_mesh`, which turns a description (the YAML ``mesh:`` section,
  keys in :data:`MESH_KINDS`, :mod:`.kinds`) into one of the above (:mod:`.factory`).

Bad input raises :class:`InputError` (a ``ValueError``, :mod:`.errors`) keyed by
the offending argument. Names load on first use, so the light registry
(:mod:`.kinds`) and :mod:`.errors` import without DOLFINx.
"""

from mpi4py import MPI  # noqa: F401  (libmpi before DOLFINx/PETSc, with the binary wheels)

from pontryx.meshes.lazy import lazy_exports

_EXPORTS = {
    "InputError": "errors",
    "show": "errors",
    "DEFAULT_KIND": "kinds",
    "MESH_KINDS": "kinds",
    "REQUIRED": "kinds",
    "create_mesh": "factory",
    "mesh_summary": "factory",
    **dict.fromkeys(
        ("box", "interval", "rectangle", "unit_cube", "unit_interval", "unit_square"), "builtin"
    ),
    **dict.fromkeys(("read_mesh", "read_msh", "read_xdmf"), "files"),
    **dict.fromkeys(("annulus", "disk", "hole", "lshape"), "gmsh_domains"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
