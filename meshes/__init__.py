"""pontryx.meshes — width domains Ω.

The width of a continuum network is a finite-element mesh. This package makes
those meshes, distributed over an MPI communicator:

- built-in DOLFINx meshes: :func:`interval`, :func:`rectangle`, :func:`box` and
  their unit variants (:mod:`.builtin`);
- gmsh geometries meshed on rank 0 and distributed: :func:`disk`,
  :func:`annulus`, :func:`lshape`, :func:`hole` (:mod:`.gmsh_domains`);
- meshes read from XDMF or gmsh ``.msh`` files (:mod:`.files`);
- :func:`create_mesh`, which turns a description (the YAML ``mesh:`` section,
  keys in :data:`MESH_KINDS`) into one of the above (:mod:`.factory`).

Every error is a :class:`MeshError` (a ``ValueError``) with a one-line message
naming the offending field.
"""

from .builtin import box, interval, rectangle, unit_cube, unit_interval, unit_square
from .errors import MeshError
from .factory import DEFAULT_KIND, MESH_KINDS, REQUIRED, create_mesh, mesh_summary
from .files import read_mesh, read_msh, read_xdmf
from .gmsh_domains import annulus, disk, hole, lshape

__all__ = [
    "DEFAULT_KIND",
    "MESH_KINDS",
    "REQUIRED",
    "MeshError",
    "annulus",
    "box",
    "create_mesh",
    "disk",
    "hole",
    "interval",
    "lshape",
    "mesh_summary",
    "read_mesh",
    "read_msh",
    "read_xdmf",
    "rectangle",
    "unit_cube",
    "unit_interval",
    "unit_square",
]
