"""Observations of the state u and the data misfit Φ.

Two observation operators B on V_h, both linear:

* :class:`PointObservations` — u(x_i) at M points x_i ∈ Ω_phys (given in a file or
  drawn uniformly in Ω_phys): each point is owned by the lowest rank holding an
  owned cell that contains it (DOLFINx bounding-box tree and GJK collision),
  (Bu)_i = Σ_j φ_j(x_i) u_j with the basis functions of that cell, evaluated at the
  pull-back of x_i; a point in no cell is outside Ω_phys and refused;
* :class:`NodalObservations` — the whole field: u at every dof of V_h (B = I).

With data d and noise standard deviation σ the misfit is the negative
log-likelihood of independent Gaussian noise,

    Φ(u) = ½ Σ_i ((Bu)_i − d_i)² / σ²,      ∂Φ/∂u = Bᵀ (Bu − d) / σ²,

about M/2 at the true state (the discrepancy principle: the RMS of the
normalised residual, :attr:`Observations.discrepancy`, is about 1 there).

Synthetic data (:func:`synthetic`): the state of the true coefficient κ† solved on
``refine`` uniformly refined copies of the mesh (so that the data do not come
from the very discretisation that inverts them — the "inverse crime"), observed
at the points, plus noise σ ξ_i with σ = η max_i |u†(x_i)| (η the relative noise
level) and ξ standard normal, drawn from ``seed`` in the order of the points (the
field: in the canonical dof order), so the data are the same on any number of
ranks.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mpi4py import MPI

import dolfinx.fem
import dolfinx.geometry
import dolfinx.la
import dolfinx.mesh
import numpy as np

from pontryx.meshes.errors import DTYPE_WORDS, InputError, show
from pontryx.meshes.levels import lexicographic
from pontryx.solver.inverse.expressions import require_finite
from pontryx.solver.npz import read_npz

__all__ = [
    "NodalObservations",
    "Observations",
    "PointObservations",
    "check_truth",
    "random_points",
    "read_observations",
    "synthetic",
]


# -- reading ------------------------------------------------------------------------------------
def read_observations(path, gdim: int) -> tuple[np.ndarray, np.ndarray]:
    """(points (M × gdim), values (M,)) from a CSV file (columns x[, y[, z]], value;
    an optional header line) or an NPZ file (arrays ``points`` and ``values``).
    InputError keyed ``file`` for a wrong shape, a non-number or a missing array."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        try:
            arrays = read_npz(path)
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read {path.name}: {e}", "file") from None
        missing = [k for k in ("points", "values") if k not in arrays]
        if missing:
            raise InputError(
                f"{path.name} has no array {missing[0]!r} (it needs 'points' of shape "
                f"(M, {gdim}) and 'values' of shape (M,))",
                "file",
            )
        points, values = np.asarray(arrays["points"]), np.asarray(arrays["values"])
        for name, a in (("points", points), ("values", values)):
            if a.dtype.kind not in "iuf":  # strings, objects, complex (its imaginary part
                raise InputError(  # would be dropped), booleans
                    f"{path.name}: {name!r} holds {DTYPE_WORDS[a.dtype.kind]} "
                    "values, expected real numbers",
                    "file",
                )
        if points.ndim == 1 and gdim == 1:
            points = points[:, None]
    else:
        rows = _csv_rows(path)
        width = {len(r) for r in rows}
        if width != {gdim + 1}:
            bad = next(i for i, r in enumerate(rows) if len(r) != gdim + 1)
            raise InputError(
                f"{path.name} row {bad + 1} has {len(rows[bad])} columns; a {gdim}D domain needs "
                f"{gdim + 1} (the coordinates and the value)",
                "file",
            )
        table = np.array(rows, dtype=float)
        points, values = table[:, :gdim], table[:, gdim]
    if points.ndim != 2 or points.shape[1] != gdim:
        raise InputError(
            f"{path.name}: points have shape {points.shape}, a {gdim}D domain needs (M, {gdim})",
            "file",
        )
    if values.shape != (points.shape[0],):
        raise InputError(
            f"{path.name}: values have shape {values.shape}, expected ({points.shape[0]},) — "
            "one per point",
            "file",
        )
    if points.shape[0] == 0:
        raise InputError(f"{path.name} holds no observation", "file")
    if not (np.all(np.isfinite(points)) and np.all(np.isfinite(values))):
        raise InputError(f"{path.name} holds non-finite numbers", "file")
    return points.astype(float), values.astype(float)


def _csv_rows(path: Path) -> list[list[float]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            lines = [r for r in csv.reader(f) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read {path.name}: {e}", "file") from None
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append([float(c) for c in line])
        except ValueError:
            if i == 0:  # a header
                continue
            raise InputError(
                f"{path.name} line {i + 1}: expected numbers, got {show(','.join(line))}", "file"
            ) from None
    if not rows:
        raise InputError(f"{path.name} holds no observation", "file")
    return rows


def random_points(mesh, count: int, seed: int) -> np.ndarray:
    """``count`` points uniform in Ω_phys (rejection from its bounding box, drawn
    from ``seed`` identically on every rank)."""
    from pontryx.solver.inverse.pde import bounding_box

    lo, hi = bounding_box(mesh)
    rng = np.random.default_rng([seed, 7919])
    points = np.zeros((0, len(lo)))
    for _ in range(100):
        trial = lo + (hi - lo) * rng.random((2 * count + 16, len(lo)))
        inside = _owner(mesh, trial) < mesh.comm.size
        points = np.concatenate([points, trial[inside]])
        if len(points) >= count:
            return points[:count]
    raise InputError(f"could not draw {count} points inside the domain", "points")


# -- point location -----------------------------------------------------------------------------
def _padded(points: np.ndarray) -> np.ndarray:
    out = np.zeros((len(points), 3))
    out[:, : points.shape[1]] = points
    return out


def _cells(mesh, points: np.ndarray):
    """For every point, the owned cells of this rank that contain it."""
    tdim = mesh.topology.dim
    owned = mesh.topology.index_map(tdim).size_local
    tree = dolfinx.geometry.bb_tree(mesh, tdim, entities=np.arange(owned, dtype=np.int32))
    p = _padded(points)
    candidates = dolfinx.geometry.compute_collisions_points(tree, p)
    return dolfinx.geometry.compute_colliding_cells(mesh, candidates, p)


def _owner(mesh, points: np.ndarray, cells=None) -> np.ndarray:
    """The lowest rank whose owned cells contain each point (``size``: none does)."""
    comm = mesh.comm
    cells = _cells(mesh, points) if cells is None else cells
    found = np.array([len(cells.links(i)) > 0 for i in range(len(points))], dtype=bool)
    owner = np.where(found, comm.rank, comm.size).astype(np.int64)
    comm.Allreduce(MPI.IN_PLACE, owner, op=MPI.MIN)
    return owner


# -- observation operators ----------------------------------------------------------------
class PointObservations:
    """(Bu)_i = u(x_i) for the points x_i (M × gdim, the same array on every rank).

    ``mine``: indices of the points this rank owns, in increasing order; ``count``:
    M. InputError keyed ``points`` when a point lies outside the mesh."""

    def __init__(self, V, points: np.ndarray):
        mesh = V.mesh
        gdim = mesh.geometry.dim
        points = np.asarray(points, dtype=float)
        if points.ndim != 2 or points.shape[1] != gdim:
            raise InputError(f"expected points of shape (M, {gdim}), got {points.shape}", "points")
        self.V, self.count = V, len(points)
        cells = _cells(mesh, points)
        owner = _owner(mesh, points, cells)
        outside = np.flatnonzero(owner == mesh.comm.size)
        if len(outside):
            i = int(outside[0])
            where = ", ".join(f"{c:g}" for c in points[i])
            raise InputError(
                f"{len(outside)} of the {len(points)} observation points lie outside Ω_phys "
                f"(the first: point {i} at ({where}))",
                "points",
            )
        self.mine = np.flatnonzero(owner == mesh.comm.rank)
        cell = np.array([cells.links(i)[0] for i in self.mine], dtype=np.int32)
        cmap = mesh.geometry.cmaps[0]
        element = V.ufl_element()
        geometry, gdofs = mesh.geometry.x[:, :gdim], mesh.geometry.dofmaps[0]
        dofmap = V.dofmap
        ndofs = dofmap.dof_layout.num_dofs
        self.dofs = np.zeros((len(cell), ndofs), dtype=np.int32)
        self.phi = np.zeros((len(cell), ndofs))
        for k, (i, c) in enumerate(zip(self.mine, cell, strict=True)):
            X = cmap.pull_back(points[i : i + 1], geometry[gdofs[c]])
            self.phi[k] = element.tabulate(0, X)[0, 0]
            self.dofs[k] = dofmap.cell_dofs(c)
        self.points = points[self.mine]

    def apply(self, u: dolfinx.fem.Function) -> np.ndarray:
        """(Bu)_i for the owned points (``u``'s ghosts must be current)."""
        return np.einsum("ij,ij->i", self.phi, u.x.array[self.dofs])

    def adjoint(self, r: np.ndarray, out: dolfinx.fem.Function) -> None:
        """out = Bᵀ r, assembled (owned entries complete, ghosts updated)."""
        out.x.array[:] = 0.0
        np.add.at(out.x.array, self.dofs, self.phi * r[:, None])
        out.x.scatter_reverse(dolfinx.la.InsertMode.add)
        out.x.scatter_forward()


class NodalObservations:
    """The field: (Bu)_j = u_j at every owned dof j of V_h (``mine``: their global
    indices, ``points``: their coordinates)."""

    def __init__(self, V):
        imap = V.dofmap.index_map
        self.V, self.n = V, imap.size_local
        self.count = imap.size_global
        self.mine = imap.local_range[0] + np.arange(self.n)
        self.points = V.tabulate_dof_coordinates()[: self.n, : V.mesh.geometry.dim].copy()

    def apply(self, u: dolfinx.fem.Function) -> np.ndarray:
        return u.x.array[: self.n].copy()

    def adjoint(self, r: np.ndarray, out: dolfinx.fem.Function) -> None:
        out.x.array[:] = 0.0
        out.x.array[: self.n] = r
        out.x.scatter_forward()


# -- data and misfit ----------------------------------------------------------------------
class Observations:
    """An observation operator ``B`` with this rank's data ``d`` (for ``B.mine``)
    and the noise standard deviation ``sigma``; the misfit Φ of the module
    docstring. ``truth``: the noise-free values B u† where known (synthetic data)."""

    def __init__(self, B, d: np.ndarray, sigma: float, truth: np.ndarray | None = None):
        if not (np.isfinite(sigma) and sigma > 0):
            raise InputError(f"expected a noise level σ > 0, got {show(sigma)}", "noise")
        self.B, self.d, self.sigma, self.truth = B, np.asarray(d, float), float(sigma), truth
        self.count = B.count
        self.comm = B.V.mesh.comm
        self._work = dolfinx.fem.Function(B.V)

    def misfit(self, u, gradient: bool = True):
        """(Φ(u), Σ_i r_i² with r = (Bu − d)/σ, ∂Φ/∂u as a Function or None); Φ and
        the sum are global."""
        r = (self.B.apply(u) - self.d) / self.sigma
        local = float(np.dot(r, r))
        total = self.comm.allreduce(local, op=MPI.SUM)
        grad = None
        if gradient:
            self.B.adjoint(r / self.sigma, self._work)
            grad = self._work
        return 0.5 * total, total, grad

    def discrepancy(self, total: float) -> float:
        """RMS of the normalised residual, √(Σ r_i² / M): about 1 at the noise level."""
        return float(np.sqrt(total / self.count))


def synthetic(B, clean: np.ndarray, noise: float, seed: int, order=None) -> Observations:
    """Observations d = u† + σ ξ of the noise-free values ``clean`` (this rank's
    points, ``B.mine``): σ = ``noise`` · max |u†| over all points; ξ standard normal
    from ``seed``, the draw indexed by the global point index (``order``: the
    indices to draw by, default ``B.mine``) among ``B.count`` draws."""
    if not noise > 0:
        raise InputError(f"expected a relative noise level > 0, got {show(noise)}", "noise")
    comm = B.V.mesh.comm
    peak = comm.allreduce(float(np.max(np.abs(clean), initial=0.0)), op=MPI.MAX)
    if peak == 0:
        raise InputError("the true state vanishes at every observation point", "noise")
    sigma = noise * peak
    xi = np.random.default_rng([seed, 104729]).standard_normal(B.count)
    index = B.mine if order is None else order
    return Observations(B, clean + sigma * xi[index], sigma, truth=clean)


def true_values(V, truth, points: np.ndarray, refine: int = 1, **pde_options) -> np.ndarray:
    """u†(x_i) at every point (the same array on every rank): the state of the true
    coefficient κ† (an :class:`~.expressions.Expression`, positive) solved in the
    space of V's degree on ``refine`` uniform refinements of V's mesh (simplices
    only); ``pde_options``: those of :class:`~.pde.EllipticPDE`."""
    from pontryx.forms.operators import function_space
    from pontryx.solver.inverse.pde import EllipticPDE

    mesh = V.mesh
    if refine and mesh.topology.cell_type.name not in ("interval", "triangle", "tetrahedron"):
        raise InputError(
            f"uniform refinement needs a simplex mesh, not {mesh.topology.cell_type.name}; "
            "set refine: 0",
            "refine",
        )
    for _ in range(int(refine)):
        mesh.topology.create_entities(1)
        mesh = dolfinx.mesh.refine(mesh)[0]
    W = V if not refine else function_space(mesh, V.ufl_element().embedded_superdegree)
    pde = EllipticPDE(W, **pde_options)
    try:
        gdim = mesh.geometry.dim
        where = f" of the mesh of the synthetic data ({refine} refinement(s))"
        check_truth(truth, truth(pde.x.T), pde.x, mesh.comm, where)
        pde.m.interpolate(lambda x: np.log(truth(x[:gdim])))
        u = pde.solve_state()
        B = PointObservations(W, points)
        out = np.zeros(len(points))
        out[B.mine] = B.apply(u)
    finally:
        pde.destroy()
    mesh.comm.Allreduce(MPI.IN_PLACE, out, op=MPI.SUM)
    return out


#: the range of κ† (its square is integrated in the relative error, and the state
#: operator's entries are κ† times 1/h: beyond it they under- or overflow)
TRUTH_RANGE = (1e-150, 1e150)


def check_truth(truth, values, points, comm, where: str = "") -> None:
    """κ† finite and positive at the dofs ``points`` (``values`` there; ``where``
    names the mesh in the message), within :data:`TRUTH_RANGE`; errors keyed
    ``truth``. Collective."""
    require_finite(values, points, comm, truth.text, "truth")
    low = comm.allreduce(float(np.min(values, initial=np.inf)), op=MPI.MIN)
    high = comm.allreduce(float(np.max(values, initial=-np.inf)), op=MPI.MAX)
    if not low > 0:
        raise InputError(
            "κ† must be positive on Ω_phys (its logarithm is the unknown); its minimum over "
            f"the dofs{where} is {low:g}",
            "truth",
        )
    if low < TRUTH_RANGE[0] or high > TRUTH_RANGE[1]:
        raise InputError(
            f"κ† must lie in [{TRUTH_RANGE[0]:g}, {TRUTH_RANGE[1]:g}] on Ω_phys (beyond, the "
            f"solves under- or overflow); over the dofs{where} it spans [{low:g}, {high:g}]",
            "truth",
        )


def canonical_index(points: np.ndarray) -> np.ndarray:
    """The index of every point in the lexicographic order of its coordinates (up
    to round-off, :func:`pontryx.meshes.levels.lexicographic`): a numbering that no
    partition changes."""
    return lexicographic(points)
