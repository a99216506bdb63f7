"""ParaView output: u(t, x) over depth and the learned controls, as VTX (ADIOS2 .bp).

* ``states.bp``   — one field ``u_<k>`` per chosen sample k, the state
  u_k(t_n, ·) at the depths t_n = nΔt, n = 0 … N_t (a time series);
* ``controls.bp`` — the bias b(t_n, ·) and the kernel at t_n, n = 0 … N_t−1,
  as the kernel declares (:mod:`pontryx.solver.model.kernels.base`): a few rows
  ``w_<i>`` = w(t_n, x_i, ·) when it ``has_rows`` (dense, low-rank; x_i evenly
  spread dofs in the canonical order, listed in ``controls.json``), and its
  ``fields`` (local: κ, r, a).

Open the ``.bp`` directories in ParaView (reader "ADIOS2VTXReader"); the time
slider runs through the layers. Collective on the width communicator.
"""

from __future__ import annotations

from pathlib import Path

import dolfinx.fem
import dolfinx.io
import numpy as np

__all__ = ["kernel_rows", "write_controls", "write_states"]


def _function(V, name: str, values: np.ndarray | None = None) -> dolfinx.fem.Function:
    f = dolfinx.fem.Function(V, name=name)
    if values is not None:
        _set(f, values)
    return f


def _set(f, values: np.ndarray) -> None:
    n = f.function_space.dofmap.index_map.size_local * f.function_space.dofmap.index_map_bs
    f.x.array[:n] = np.ravel(values)
    f.x.scatter_forward()


def write_states(path: str | Path, net, controls, X: np.ndarray, labels=None) -> None:
    """u_k(t_n, ·) for the samples X (n_in × S) into ``path`` (a .bp directory)."""
    sp = net.space
    S = X.shape[1]
    _, states = net.forward(controls, X, keep=range(net.layers + 1))
    names = [f"u_{k}" + (f"_class{labels[k]}" if labels is not None else "") for k in range(S)]
    fields = [_function(sp.V, name) for name in names]
    with dolfinx.io.VTXWriter(sp.comm, Path(path), fields, engine="BP4") as writer:
        for n, U in enumerate(states):
            for k, f in enumerate(fields):
                _set(f, U[:, k])
            writer.write(n * net.dt)


def kernel_rows(space, count: int) -> np.ndarray:
    """``count`` canonical dof indices evenly spread over 0 … N−1, the middles of
    ``count`` equal parts, ⌊(j + ½) N / count⌋ (all N for count ≥ N: the rows at
    both ends had never been written)."""
    if count <= 0:
        return np.zeros(0, dtype=np.int64)
    N = space.N
    count = min(count, N)  # output.paraview.kernel_rows may be any count
    return ((2 * np.arange(count, dtype=np.int64) + 1) * N) // (2 * count)


def write_controls(path: str | Path, net, controls, rows: int = 3) -> list[tuple[str, list]]:
    """b(t_n, ·) and the kernel fields into ``path``; returns (field, x_i) pairs of
    the kernel rows written."""
    sp, kernel = net.space, net.kernel
    fields = {"b": _function(sp.V, "b")}
    picked = kernel_rows(sp, rows) if kernel.has_rows else []
    coords = sp.to_canonical(sp.x)
    rows_info = []
    for i in picked:
        name = f"w_{i}"
        fields[name] = _function(sp.V, name)
        rows_info.append((name, [float(c) for c in coords[i]]))
    gdim = sp.mesh.geometry.dim
    for key, shape in kernel.fields.items():  # controls that are fields on V_h
        shape = (gdim,) if shape == "gdim" else tuple(shape)
        V = dolfinx.fem.functionspace(sp.mesh, ("Lagrange", sp.degree, shape)) if shape else sp.V
        fields[key] = _function(V, key)
    with dolfinx.io.VTXWriter(sp.comm, Path(path), list(fields.values()), engine="BP4") as w:
        for n in range(net.layers):
            theta = net.layer_controls(controls, n)
            _set(fields["b"], controls["b"][n])
            for i in picked:
                _set(fields[f"w_{i}"], kernel.row(theta, i))
            for key in kernel.fields:
                _set(fields[key], controls[key][n])
            w.write(n * net.dt)
    return rows_info
