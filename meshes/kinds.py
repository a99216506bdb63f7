"""The registry of width-domain kinds: name → builder and its keys with defaults.

Light to import (no DOLFINx): the configuration schema checks ``mesh:`` sections
against it; :func:`pontryx.meshes.create_mesh` loads the builder on first use.
Adding a kind is a builder function plus one line here.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["DEFAULT_KIND", "MESH_KINDS", "REQUIRED", "builder"]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: Marks a key of :data:`MESH_KINDS` without a default.
REQUIRED: Any = _Required()

#: The kind used when a description has no ``kind``.
DEFAULT_KIND = "unit_square"

_KINDS: dict[str, tuple[str, dict[str, Any]]] = {
    "interval": ("builtin:interval", {"n": 32, "lower": 0.0, "upper": 1.0}),
    "unit_interval": ("builtin:unit_interval", {"n": 32}),
    "rectangle": (
        "builtin:rectangle",
        {
            "n": [16, 16],
            "lower": [0.0, 0.0],
            "upper": [1.0, 1.0],
            "cell": "triangle",
            "diagonal": "right",
        },
    ),
    "unit_square": ("builtin:unit_square", {"n": 16, "cell": "triangle", "diagonal": "right"}),
    "box": (
        "builtin:box",
        {"n": [4, 4, 4], "lower": [0.0, 0.0, 0.0], "upper": [1.0, 1.0, 1.0], "cell": "tetrahedron"},
    ),
    "unit_cube": ("builtin:unit_cube", {"n": 4, "cell": "tetrahedron"}),
    "disk": ("gmsh_domains:disk", {"radius": 1.0, "h": 0.1}),
    "annulus": ("gmsh_domains:annulus", {"inner_radius": 0.5, "outer_radius": 1.0, "h": 0.1}),
    "lshape": ("gmsh_domains:lshape", {"h": 0.1}),
    "hole": ("gmsh_domains:hole", {"radius": 0.25, "h": 0.1}),
    "file": ("files:read_mesh", {"path": REQUIRED, "name": "mesh", "gdim": None}),
}

#: Accepted keys (besides ``kind``) and their defaults, per kind. Read-only.
MESH_KINDS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {kind: MappingProxyType(keys) for kind, (_, keys) in _KINDS.items()}
)


def builder(kind: str) -> Callable:
    """The function that builds meshes of ``kind`` (imported on first use)."""
    module, name = _KINDS[kind][0].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)
