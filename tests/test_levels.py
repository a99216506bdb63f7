"""Coordinate levels (meshes/levels.py): each axis's grid values told apart up to
round-off on the axis's own scale, and the lexicographic numbering built on them."""

import numpy as np
import pytest

from pontryx.meshes.levels import levels, lexicographic


@pytest.mark.parametrize("h", [1e-5 / 3, 1.0 / 3, 1e4 / 3])
def test_levels_are_the_grid_up_to_round_off(h):
    """Nodes of a grid of spacing h, each perturbed by a few ulps of the largest
    coordinate (as a mesh generator leaves them): one level per node, its value
    a coordinate within round-off of the node; the scale of another axis does not
    enter (rounding to 10⁻¹⁰ of the largest extent had merged or shifted them)."""
    rng = np.random.default_rng(0)
    nodes = h * np.arange(4)
    values = np.repeat(nodes, 5) * (1 + 4e-16 * rng.standard_normal(20))
    values += 1e-17 * h * rng.standard_normal(20)  # x = 0 as ±10⁻¹⁷
    rng.shuffle(values)
    distinct, index, tol = levels(values)
    assert distinct.size == 4
    assert np.allclose(distinct, nodes, rtol=1e-14, atol=1e-14 * h)
    assert np.array_equal(np.sort(index), np.repeat(np.arange(4), 5))
    assert np.all(np.abs(distinct[index] - values) <= tol)
    assert tol < 1e-6 * h


def test_levels_of_one_value_and_of_none():
    assert levels(np.full(3, 2.5))[0].tolist() == [2.5]
    distinct, index, _ = levels(np.empty(0))
    assert distinct.size == 0 and index.size == 0


def test_lexicographic_order_does_not_depend_on_the_order_of_the_points():
    """The position of every point in the order (first axis first) is the same
    whatever order the points come in (a partition's)."""
    x, y = np.meshgrid(np.linspace(0, 1e4, 5), np.linspace(0, 1e-5, 4), indexing="ij")
    points = np.column_stack([x.ravel(), y.ravel()])
    rank = lexicographic(points)
    assert np.array_equal(rank, np.arange(20))  # x-major, as built
    perm = np.random.default_rng(1).permutation(20)
    noisy = points[perm] * (1 + 1e-16 * np.random.default_rng(2).standard_normal((20, 2)))
    assert np.array_equal(lexicographic(noisy), rank[perm])
