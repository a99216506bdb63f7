"""Outputs of an inverse run (``inverse:``): arrays, plots and ParaView.

* ``inverse.npz``  — on Ω_phys in the canonical dof order: ``x``, ``cells``,
  ``cell_type``, ``log_kappa``, ``kappa``, ``kappa_true`` (if κ† is known), ``u``
  (the state of the recovered κ); the observations: ``points``, ``data`` d,
  ``predicted`` Bu, ``sigma``;
* ``plots/kappa.png`` — κ† against the recovered κ (1D: curves; 2D: fields and
  their difference; 3D: the same on the coordinate plane z = const through the
  dofs nearest the middle);
* ``plots/state.png`` — u with the data (1D: u against d ± σ; 2D/3D: u and the
  observation points) and the histogram of the normalised residuals
  r_i = ((Bu)_i − d_i)/σ against N(0, 1);
* ``plots/curves.png`` — the misfit Φ + R, J and the discrepancy per iteration,
  and the relative L² error of κ (every ``training.test_every`` iterations);
* ``paraview/inverse.bp`` — κ, κ†, log κ and u on Ω_phys (VTX, ADIOS2).
"""

from __future__ import annotations

from pathlib import Path

from mpi4py import MPI

import dolfinx.fem
import dolfinx.io
import numpy as np

from pontryx.meshes.levels import levels
from pontryx.solver.outputs.atomic import atomic_path
from pontryx.solver.outputs.model_io import mesh_arrays
from pontryx.solver.outputs.plots import _pyplot, _save, _triangles, column, objective_panel

__all__ = ["gather_fields", "plot_inverse", "write_arrays", "write_paraview"]


def _points(comm: MPI.Comm, obs, *arrays):
    """Observation arrays (indexed by ``obs.B.mine``) in the global point order, on rank 0."""
    parts = comm.gather((obs.B.mine, *arrays), root=0)
    if comm.rank != 0:
        return None
    index = np.concatenate([p[0] for p in parts])
    order = np.argsort(index, kind="stable")
    return [np.concatenate([p[k] for p in parts])[order] for k in range(1, len(arrays) + 1)]


def gather_fields(problem, controls) -> dict | None:
    """The arrays of ``inverse.npz`` (collective; the dict on world rank 0, None
    elsewhere). Solves the state equation once at the recovered κ."""
    ph, pde, obs, rf = problem.physical, problem.pde, problem.observations, problem.rf
    comm = ph.comm
    mesh = mesh_arrays(ph)
    m = rf.parameter(controls)
    pde.set_parameter(m)
    u = pde.solve_state()
    out = {
        **{k: mesh[k] for k in ("x", "cells", "cell_type", "gdim")},
        "log_kappa": ph.gather_canonical(m),
        "u": ph.gather_canonical(u.x.array[: ph.n].copy()),
    }
    if problem.truth is not None:
        out["kappa_true"] = ph.gather_canonical(problem.truth(ph.x.T))
    observed = _points(comm, obs, obs.B.points, obs.d, obs.B.apply(u))
    if comm.rank != 0:
        return None
    out["points"], out["data"], out["predicted"] = observed
    out["sigma"] = np.array(obs.sigma)
    out["kappa"] = np.exp(out["log_kappa"])
    return out


def write_arrays(path: Path, fields: dict) -> None:
    """``inverse.npz`` (rank 0), written atomically."""
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        np.savez(f, **fields)


def write_paraview(problem, controls, directory: Path) -> None:
    """``inverse.bp``: κ, κ† (if known), log κ and u on Ω_phys (collective)."""
    ph, pde, comm = problem.physical, problem.pde, problem.physical.comm
    if comm.rank == 0:
        Path(directory).mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    V = pde.V
    m = problem.rf.parameter(controls)
    pde.set_parameter(m)
    pde.solve_state()
    kappa = dolfinx.fem.Function(V, name="kappa")
    kappa.x.array[:] = np.exp(pde.m.x.array)
    log_kappa = dolfinx.fem.Function(V, name="log_kappa")
    log_kappa.x.array[:] = pde.m.x.array
    u = dolfinx.fem.Function(V, name="u")
    u.x.array[:] = pde.u.x.array
    fields = [kappa, log_kappa, u]
    if problem.truth is not None:
        true = dolfinx.fem.Function(V, name="kappa_true")
        gdim = ph.mesh.geometry.dim
        true.interpolate(lambda x: problem.truth(x[:gdim]))
        fields.append(true)
    with dolfinx.io.VTXWriter(comm, Path(directory) / "inverse.bp", fields, engine="BP4") as w:
        w.write(0.0)


# -- plots (rank 0) ------------------------------------------------------------------------------
def _slice(x: np.ndarray):
    """Dofs of a 3D mesh on the plane z = const nearest the middle (a boolean mask)."""
    z = x[:, 2]
    zs, index, _ = levels(z)
    i = int(np.argmin(np.abs(zs - 0.5 * (z.min() + z.max()))))
    return index == i, zs[i]


def _field(ax, fields, values, title, plt, **kw):
    x, gdim = fields["x"], int(fields["gdim"])
    lo, hi = kw.pop("vmin", None), kw.pop("vmax", None)
    levels = 30 if lo is None or not hi > lo else np.linspace(lo, hi, 31)
    if gdim == 2:
        cell = str(fields["cell_type"])
        if cell in ("triangle", "quadrilateral"):
            tri = _triangles(fields["cells"], cell)
            im = ax.tripcolor(
                x[:, 0], x[:, 1], tri[:, :3], values, shading="gouraud", vmin=lo, vmax=hi, **kw
            )
        else:
            im = ax.tricontourf(x[:, 0], x[:, 1], values, levels, **kw)
    else:
        mask, level = _slice(x)
        im = ax.tricontourf(x[mask, 0], x[mask, 1], values[mask], levels, **kw)
        title += f" (z = {level:.3g})"
    ax.set_aspect("equal")
    ax.set_title(title)
    plt.colorbar(im, ax=ax, shrink=0.8)


def _kappa(fields, path: Path) -> None:
    plt = _pyplot()
    x, gdim = fields["x"], int(fields["gdim"])
    truth = fields.get("kappa_true")
    if gdim == 1:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        order = np.argsort(x[:, 0])
        if truth is not None:
            ax.plot(x[order, 0], truth[order], "k-", lw=2, label="κ† (true)")
        ax.plot(x[order, 0], fields["kappa"][order], "C1-", label="κ (recovered)")
        ax.set_xlabel("x")
        ax.set_ylabel("κ")
        ax.legend()
        _save(fig, path)
        return
    panels = [("κ (recovered)", fields["kappa"])]
    if truth is not None:
        panels = [("κ† (true)", truth), *panels, ("κ − κ†", fields["kappa"] - truth)]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    axes = np.atleast_1d(axes)
    lo = min(float(np.min(p[1])) for p in panels[:2])
    hi = max(float(np.max(p[1])) for p in panels[:2])
    for ax, (title, values) in zip(axes, panels, strict=True):
        kw = {"cmap": "RdBu_r"} if title == "κ − κ†" else {"vmin": lo, "vmax": hi}
        _field(ax, fields, values, title, plt, **kw)
    _save(fig, path)


def _state(fields, path: Path) -> None:
    plt = _pyplot()
    x, gdim = fields["x"], int(fields["gdim"])
    pts, d, pred, sigma = fields["points"], fields["data"], fields["predicted"], fields["sigma"]
    r = (pred - d) / sigma
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    if gdim == 1:
        order = np.argsort(x[:, 0])
        a1.plot(x[order, 0], fields["u"][order], "C0-", label="u (recovered κ)")
        a1.errorbar(pts[:, 0], d, yerr=sigma, fmt="k.", ms=3, lw=0.6, label="data d ± σ")
        a1.set_xlabel("x")
        a1.legend(fontsize=8)
        a1.set_title("state and data")
    else:
        _field(a1, fields, fields["u"], "u (recovered κ)", plt)
        if len(pts) <= 5000:
            a1.plot(pts[:, 0], pts[:, 1], "k.", ms=2)
    a2.hist(r, bins=max(10, min(60, len(r) // 10)), density=True, alpha=0.6, label="r_i")
    t = np.linspace(-4, 4, 200)
    a2.plot(t, np.exp(-t * t / 2) / np.sqrt(2 * np.pi), "k-", label="N(0, 1)")
    a2.set_xlabel("r = (Bu − d)/σ")
    a2.set_title(f"normalised residuals (RMS {np.sqrt(np.mean(r * r)):.3f})")
    a2.legend(fontsize=8)
    _save(fig, path)


def _curves(rows: list[dict], path: Path) -> None:
    if not rows:
        return
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    it = objective_panel(a1, rows, {"loss": "J(θ)", "misfit": "Φ + R (misfit)"})
    a1.set_title("objective")
    a1.legend()
    a2.semilogy(it, column(rows, "train_metric"), label="discrepancy √(Σr²/M)")
    a2.axhline(1.0, color="k", lw=0.6, ls=":")
    test = column(rows, "test_metric")
    ok = np.isfinite(test)
    if np.any(ok):
        a2.semilogy(it[ok], test[ok], "o-", ms=3, label="‖κ − κ†‖/‖κ†‖")
    a2.set_xlabel("iteration")
    a2.set_title("discrepancy and κ error")
    a2.legend()
    _save(fig, path)


def plot_inverse(fields: dict, rows: list[dict], directory: Path) -> None:
    """kappa.png, state.png and curves.png (rank 0)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _kappa(fields, directory / "kappa.png")
    _state(fields, directory / "state.png")
    _curves(rows, directory / "curves.png")
