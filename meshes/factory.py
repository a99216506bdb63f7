"""``create_mesh``: the one entry point from a description (the YAML ``mesh:``
section) to a distributed DOLFINx mesh, plus ``mesh_summary``.

A description is a mapping with ``kind`` (default ``unit_square``) and the keys
of :data:`MESH_KINDS` for that kind; omitted keys take the defaults listed
there. Any problem raises :class:`MeshError` with a one-line message naming
the field, e.g. ``mesh.n: expected a positive integer or a list of 2 positive
integers, got -3``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from mpi4py import MPI

import dolfinx.mesh

from . import builtin, files, gmsh_domains
from .errors import MeshError, fmt

__all__ = ["DEFAULT_KIND", "MESH_KINDS", "REQUIRED", "create_mesh", "mesh_summary"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Marks a key of :data:`MESH_KINDS` without a default.
REQUIRED: Any = _Required()

#: The kind used when a description has no ``kind``.
DEFAULT_KIND = "unit_square"

_KINDS: dict[str, tuple[Any, dict[str, Any]]] = {
    "interval": (builtin.interval, {"n": 32, "lower": 0.0, "upper": 1.0}),
    "unit_interval": (builtin.unit_interval, {"n": 32}),
    "rectangle": (
        builtin.rectangle,
        {
            "n": [16, 16],
            "lower": [0.0, 0.0],
            "upper": [1.0, 1.0],
            "cell": "triangle",
            "diagonal": "right",
        },
    ),
    "unit_square": (builtin.unit_square, {"n": 16, "cell": "triangle", "diagonal": "right"}),
    "box": (
        builtin.box,
        {"n": [4, 4, 4], "lower": [0.0, 0.0, 0.0], "upper": [1.0, 1.0, 1.0], "cell": "tetrahedron"},
    ),
    "unit_cube": (builtin.unit_cube, {"n": 4, "cell": "tetrahedron"}),
    "disk": (gmsh_domains.disk, {"radius": 1.0, "h": 0.1}),
    "annulus": (gmsh_domains.annulus, {"inner_radius": 0.5, "outer_radius": 1.0, "h": 0.1}),
    "lshape": (gmsh_domains.lshape, {"h": 0.1}),
    "hole": (gmsh_domains.hole, {"radius": 0.25, "h": 0.1}),
    "file": (files.read_mesh, {"path": REQUIRED, "name": "mesh", "gdim": None}),
}

#: Accepted keys (besides ``kind``) and their defaults, per kind. Read-only.
MESH_KINDS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {kind: MappingProxyType(keys) for kind, (_, keys) in _KINDS.items()}
)


def create_mesh(desc: Mapping[str, Any] | None = None, comm: MPI.Comm | None = None):
    """Build the distributed mesh described by ``desc`` on ``comm`` (default COMM_WORLD).

    Collective on ``comm``; validation is identical on every rank, so invalid
    descriptions raise :class:`MeshError` everywhere before any communication.
    """
    comm = MPI.COMM_WORLD if comm is None else comm
    desc = {} if desc is None else desc
    if not isinstance(desc, Mapping):
        raise MeshError(f"expected a mapping with a 'kind', got {fmt(desc)}", "mesh")
    kind = desc.get("kind", DEFAULT_KIND)
    if not isinstance(kind, str) or kind not in _KINDS:
        raise MeshError(
            f"unknown kind {fmt(kind)}; expected one of {', '.join(_KINDS)}", "mesh.kind"
        )
    build, defaults = _KINDS[kind]
    for key in desc:
        if key != "kind" and key not in defaults:
            allowed = ", ".join(["kind", *defaults])
            raise MeshError(f"unknown key for kind {kind!r} (allowed: {allowed})", f"mesh.{key}")
    params = {**defaults, **{k: v for k, v in desc.items() if k != "kind"}}
    for key, value in params.items():
        if value is REQUIRED:
            raise MeshError(f"required for kind {kind!r}", f"mesh.{key}")
    try:
        return build(**params, comm=comm)
    except MeshError as e:
        raise e.prefixed("mesh") from None


def mesh_summary(mesh: dolfinx.mesh.Mesh) -> str:
    """One line: cell type, global cells and vertices, gdim and ranks. Not collective."""
    topology = mesh.topology
    cells = topology.index_map(topology.dim).size_global
    vertices = topology.index_map(0).size_global
    ranks = mesh.comm.size
    return (
        f"{topology.cell_type.name} mesh: {cells} cells, {vertices} vertices, "
        f"gdim {mesh.geometry.dim}, {ranks} rank{'s' if ranks > 1 else ''}"
    )
