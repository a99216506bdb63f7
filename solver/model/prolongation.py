"""Prolongation of controls between networks: finer meshes in width, more layers in depth.

Width. For Lagrange spaces V_H (coarse) and V_h (fine) on two meshes of the same
domain and communicator, the interpolation I_h: V_H → V_h is the matrix

    P_ij = φ^H_j(x^h_i)        (Lagrange interpolation = evaluation at the fine dofs),

built once by DOLFINx's interpolation between non-matching meshes
(``Function.interpolate_nonmatching``) of the coarse basis functions, a block of
them at a time. For nested meshes (unit squares n → 2n) V_H ⊂ V_h and P is exact;
otherwise fine points outside the coarse mesh (curved boundaries) take the value
of the nearest coarse cell's polynomial. Controls that are fields move by P: b,
the readout functions c_k (C), a trainable embedding E, the low-rank factors
a_r, g_r and the local kernel's κ, r, a; the dense kernel w(x, y) is
interpolated in x and in y, W_h = P W_H Pᵀ.

Depth. Layer n of N_t holds the controls of [t_n, t_{n+1}); they are read as
values at the midpoints t_{n+½} and interpolated linearly to the midpoints of the
finer depth grid (constant beyond the first and last midpoint), so controls that
are smooth in t are prolonged to second order and layer counts need not divide.

Nested iteration (Cyr, Günther & Schroder 2019, "Multilevel initialization for
layer-parallel deep neural network training"; in width too here):
:func:`prolong_controls` gives the fine network the coarse network's trained
controls as its initial guess (:mod:`pontryx.solver.training.levels`).
"""

from __future__ import annotations

from mpi4py import MPI

import dolfinx.fem
import numpy as np
import scipy.sparse

from pontryx.meshes.errors import InputError
from pontryx.solver.model.controls import REPLICATED, Controls

__all__ = ["Prolongation", "check_prolongable", "prolong_controls", "prolong_depth"]


def _blocked(space, block: int):
    return dolfinx.fem.functionspace(space.mesh, ("Lagrange", space.degree, (block,)))


class Prolongation:
    """The interpolation P: V_H → V_h from ``coarse`` to ``fine`` (two
    :class:`~pontryx.solver.model.width.WidthSpace` on the same communicator).

    ``P`` holds this rank's rows (n_h × N_H, columns in the coarse global dof
    order); ``full`` all rows (N_h × N_H, on every rank). Collective."""

    def __init__(self, coarse, fine, block: int = 32):
        if coarse.comm.size != fine.comm.size:
            raise InputError("the two meshes live on different communicators", "fine")
        self.coarse, self.fine = coarse, fine
        Vc, Vf = _blocked(coarse, block), _blocked(fine, block)
        uc, uf = dolfinx.fem.Function(Vc), dolfinx.fem.Function(Vf)
        cmap = coarse.V.dofmap.index_map
        glob = cmap.local_to_global(np.arange(cmap.size_local + cmap.num_ghosts, dtype=np.int32))
        tdim = fine.mesh.topology.dim
        cells = np.arange(fine.mesh.topology.index_map(tdim).size_local, dtype=np.int32)
        coarse_cells = np.arange(coarse.mesh.topology.index_map(tdim).size_local, dtype=np.int32)
        h = float(np.max(coarse.mesh.h(tdim, coarse_cells), initial=0.0))
        h = coarse.comm.allreduce(h, op=MPI.MAX)  # fine points up to h/2 outside: nearest cell
        data = dolfinx.fem.create_interpolation_data(Vf, Vc, cells, padding=0.5 * h)
        rows, cols, vals = [], [], []
        values = uc.x.array.reshape(-1, block)
        for start in range(0, coarse.N, block):
            values[:] = 0.0
            k = glob - start
            mine = (k >= 0) & (k < block)
            values[np.flatnonzero(mine), k[mine]] = 1.0
            uf.x.array[:] = 0.0
            uf.interpolate_nonmatching(uc, cells, data)
            Y = uf.x.array.reshape(-1, block)[: fine.n]
            r, c = np.nonzero(np.abs(Y) > 1e-12)
            rows.append(r)
            cols.append(c + start)
            vals.append(Y[r, c])
        self.P = scipy.sparse.csr_matrix(
            (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
            shape=(fine.n, coarse.N),
        )
        parts = fine.comm.allgather(self.P)
        self.full = scipy.sparse.vstack(parts, format="csr")

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """I_h X: coarse rows (n_H × …) → fine rows (n_h × …); the trailing axes
        are separate functions."""
        full = self.coarse.allgather(np.ascontiguousarray(X))
        shape = full.shape
        out = self.P @ full.reshape(shape[0], -1)
        return np.ascontiguousarray(out.reshape(self.fine.n, *shape[1:]))

    def restrict(self, Y: np.ndarray) -> np.ndarray:
        """Pᵀ Y: fine rows (n_h × k) → coarse rows (n_H × k) (the transpose, which
        maps load vectors ⟨f, φ^h_i⟩ to ⟨f, φ^H_j⟩ on nested meshes)."""
        partial = np.ascontiguousarray(self.P.T @ Y)
        if self.fine.comm.size == 1:
            return partial
        out = np.empty((self.coarse.n, *partial.shape[1:]))
        counts = np.array(self.coarse.comm.allgather(self.coarse.n)) * int(
            np.prod(partial.shape[1:], dtype=np.int64)
        )
        self.coarse.comm.Reduce_scatter(partial, out, counts)
        return out

    def kernel(self, W: np.ndarray) -> np.ndarray:
        """w(x, y) interpolated in x and y: P W Pᵀ for coarse rows W (n_H × N_H,
        columns in the coarse global order) → fine rows (n_h × N_h)."""
        full = self.coarse.allgather(np.ascontiguousarray(W))
        return np.ascontiguousarray((self.full @ (self.P @ full).T).T)


def prolong_depth(values: np.ndarray, layers: int) -> np.ndarray:
    """Layer controls (N_t^H, …) → (``layers``, …), linear in t between the layer
    midpoints (constant beyond the outer ones); the identity when the counts agree."""
    coarse = values.shape[0]
    if coarse == layers:
        return values.copy()
    tc = (np.arange(coarse) + 0.5) / coarse
    tf = (np.arange(layers) + 0.5) / layers
    j = np.clip(np.searchsorted(tc, tf) - 1, 0, max(coarse - 2, 0))
    if coarse == 1:
        return np.repeat(values, layers, axis=0)
    s = np.clip((tf - tc[j]) / (tc[j + 1] - tc[j]), 0.0, 1.0)
    s = s.reshape(-1, *([1] * (values.ndim - 1)))
    return (1.0 - s) * values[j] + s * values[j + 1]


def check_prolongable(coarse_net, fine_net) -> None:
    """The controls of ``coarse_net`` can be prolonged to ``fine_net``: the same
    kernel (type and rank), inputs and outputs, and width domains of one dimension
    (an InputError keyed ``kernel`` or ``fine_net`` otherwise)."""
    kc, kf = coarse_net.kernel, fine_net.kernel
    if kc.name != kf.name or getattr(kc, "rank", None) != getattr(kf, "rank", None):
        raise InputError(
            f"cannot prolong a {kc.name} kernel to a {kf.name} kernel (or another rank)", "kernel"
        )
    if (coarse_net.n_in, coarse_net.n_out) != (fine_net.n_in, fine_net.n_out):
        raise InputError("the networks have different inputs or outputs", "fine_net")
    mc, mf = coarse_net.space.mesh, fine_net.space.mesh
    dims = [(m.topology.dim, m.geometry.dim) for m in (mc, mf)]
    if dims[0] != dims[1]:
        raise InputError(
            f"the width domains differ in dimension ({dims[0][0]}D and {dims[1][0]}D meshes)",
            "fine_net",
        )


def prolong_controls(coarse_net, controls: Controls, fine_net, prolongation=None) -> Controls:
    """The controls of ``coarse_net`` as controls of ``fine_net`` (same kernel type
    and options, same inputs and outputs, same T): depth by :func:`prolong_depth`,
    width by :class:`Prolongation` (given, or built here). E is prolonged when
    both networks train it, else the fine network's own; d is copied. Collective."""
    check_prolongable(coarse_net, fine_net)
    coarse_net.check_controls(controls)
    kf = fine_net.kernel
    P = prolongation or Prolongation(coarse_net.space, fine_net.space)
    out = {}
    for name in fine_net.layer_names:
        deep = prolong_depth(controls[name], fine_net.layers)
        if name in kf.full_axis:
            out[name] = np.stack([P.kernel(v) for v in deep])
        else:
            out[name] = np.stack([P(v) for v in deep])
    out["E"] = (
        P(controls["E"])
        if "E" in coarse_net.trainable and "E" in fine_net.trainable
        else (fine_net.E0.copy())
    )
    out["C"] = P(controls["C"])
    for name in REPLICATED:
        out[name] = controls[name].copy()
    return Controls(out, fine_net.space.comm)
