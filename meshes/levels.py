"""Coordinate levels: the distinct values of a coordinate axis up to round-off.

A grid's nodes along an axis are the same numbers up to the round-off of the
mesh generator (a box's x = 0 can be ±10⁻¹⁷). :func:`levels` tells them apart on
each axis's own scale, so a box 10⁴ wide and 10⁻⁵ deep has both grids exact;
:func:`lexicographic` orders points by their levels, a numbering that no
partition of the mesh changes.
"""

from __future__ import annotations

import numpy as np

__all__ = ["levels", "lexicographic"]

#: the tolerance of :func:`levels`: this part of the axis's extent plus
#: :data:`MAGNITUDE` of its largest |value| (mesh rules: cells at least 10⁻¹⁰ of the
#: coordinates' magnitude wide, :data:`.errors.CELL_RESOLUTION`)
EXTENT = 1e-9
MAGNITUDE = 1e-12


def levels(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(distinct, index, tol): the levels of one axis, each value's level index and
    the tolerance that told them apart.

    Sorted values more than tol = 10⁻⁹ (max − min) + 10⁻¹² max|v| apart start a
    new level; a level is the median of its values (one of the coordinates). The
    tolerance is above the round-off of mesh coordinates and below any cell's
    width. (Rounding every axis to 10⁻¹⁰ of the largest extent, as pontryx did
    before, put the conv kernel's channel weights 10 % off on a box 10⁴ × 10⁴ ×
    10⁻⁵.)"""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return np.empty(0), np.empty(0, dtype=np.int64), 0.0
    order = np.argsort(values, kind="stable")
    v = values[order]
    tol = EXTENT * float(v[-1] - v[0]) + MAGNITUDE * float(np.max(np.abs(v)))
    first = np.concatenate(([True], np.diff(v) > tol))
    index = np.empty(values.size, dtype=np.int64)
    index[order] = np.cumsum(first) - 1
    starts = np.flatnonzero(first)
    ends = np.append(starts[1:], v.size)
    return v[(starts + ends - 1) // 2], index, tol


def lexicographic(points: np.ndarray) -> np.ndarray:
    """``rank[i]``: the position of point i (a row of ``points``, N × d) in the
    lexicographic order of its coordinate levels, first axis first."""
    points = np.asarray(points, dtype=float).reshape(len(points), -1)
    keys = [levels(points[:, d])[1] for d in range(points.shape[1])]
    order = np.lexsort(keys[::-1])  # np.lexsort: the last key is the primary one
    rank = np.empty(len(points), dtype=np.int64)
    rank[order] = np.arange(len(points))
    return rank
