"""``create_mesh``: from a description (the YAML ``mesh:`` section) to a
distributed DOLFINx mesh, plus ``mesh_summary``.

A description is a mapping with ``kind`` (default ``unit_square``) and the keys
of :data:`~pontryx.meshes.kinds.MESH_KINDS` for that kind; omitted keys take the
defaults listed there. Any problem raises :class:`InputError` keyed by the
description's own key (``kind``, ``n``, ``path``, …): the configuration layer
puts it under ``mesh``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mpi4py import MPI

import dolfinx.mesh

from .errors import InputError, resolve, show
from .kinds import DEFAULT_KIND, MESH_KINDS, builder

__all__ = ["create_mesh", "mesh_summary"]


def create_mesh(desc: Mapping[str, Any] | None, comm: MPI.Comm):
    """Build the distributed mesh described by ``desc`` on ``comm``.

    Collective on ``comm``; validation is identical on every rank, so invalid
    descriptions raise :class:`InputError` everywhere before any communication.
    """
    if not isinstance(comm, MPI.Comm):
        raise InputError(f"expected an MPI communicator, got {show(comm)}", "comm")
    params = resolve(
        {} if desc is None else desc, MESH_KINDS, "kind", default=DEFAULT_KIND, what="kind"
    )
    kind = params.pop("kind")
    return builder(kind)(**params, comm=comm)


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
