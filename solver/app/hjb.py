"""``pontryx hjb CONFIG.yaml``: the HJB value function of the network reduced to two
states, its feedback law, and the closed-loop against the open-loop costs.

From a configuration with an ``hjb:`` section (validated by the schema; the
network of ``model:`` on ``mesh: {kind: interval, n: 1}``, the running cost α of
``training.alpha``, the open-loop method of ``training``), everything that can
fail on bad input is built first (the value-function grid, the network); then the
run directory is written (the rules of :mod:`pontryx.solver.outputs.rundir`):

* ``config.yaml``, ``summary.json`` — per initial state u₀: V_h(0, u₀), the
  closed-loop cost of the feedback law, the open-loop cost pontryx's method
  reached (and its status), their differences; the grid, Δτ, time levels, timings;
* ``value.npz`` — the grid axes, V_h at the layer times t_n, the feedback b*(0, ·)
  at the grid nodes, the closed- and open-loop trajectories (their controls are in
  summary.json);
* ``plots/value.png`` — V_h(0, ·) with the closed-loop (HJB feedback) and the
  open-loop (pontryx) trajectories from every u₀; ``plots/feedback.png`` — b*(0, ·);
* ``paraview/value.bp`` — V_h(t_n, ·) on the DOLFINx grid (VTX time series).

The plots and the ParaView file follow ``output.plots`` and ``output.paraview``, as
for ``pontryx train``.

Exit code 0, or 4 when an open-loop solve did not converge (its tolerance not
met within ``training.max_iterations``, or a line-search failure: the comparison
is then against a cost that is not the open-loop minimum); bad input is one line
and exit 2 before anything is written. Every rank computes the same (the grid
solve is serial); rank 0 writes.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

from mpi4py import MPI

import numpy as np
import yaml

from pontryx.meshes.errors import InputError
from pontryx.solver.app import petsc_options
from pontryx.solver.app.directory import OUTPUT, check_directory
from pontryx.solver.app.memory import format_bytes, least_available
from pontryx.solver.app.network import section, use_blas
from pontryx.solver.app.problem import probed_trainer
from pontryx.solver.app.signals import StopRequest
from pontryx.solver.config.schema import petsc_key_paths
from pontryx.solver.errors import EXIT_NOT_CONVERGED
from pontryx.solver.hjb.compare import ReducedNetwork, open_loop_options
from pontryx.solver.hjb.ranges import check_ranges
from pontryx.solver.hjb.scheme import ValueFunction
from pontryx.solver.outputs.atomic import atomic_path, write_json, write_text
from pontryx.solver.outputs.rundir import RunDirectory

__all__ = ["run_hjb"]


#: where an argument of :class:`ReducedNetwork` (or of :func:`check_ranges`) comes from
#: in the configuration; any other key ``k`` is ``hjb.k``
_KEYS = {
    "width_mesh": "mesh",
    "alpha": "training.alpha",
    "W": "hjb.kernel",
    "C": "hjb.readout",
    "d": "hjb.offset",
    "y": "hjb.target",
    "bound": "hjb.bound",
    "T": "model.T",
    "layers": "model.layers",
    "activation": "model.activation",
}


def _config_key(key: str | None) -> str:
    """The configuration key of an argument key (``width_mesh.upper`` → ``mesh.upper``)."""
    head, dot, rest = (key or "").partition(".")
    if head in _KEYS:
        return _KEYS[head] + dot + rest
    return f"hjb.{key}" if key else "hjb"


#: bytes per grid node beside the K + 1 time levels of 8 bytes: the DOLFINx grid and
#: Q1 space, the node arrays, the upwind differences and the control search of a step
#: with the default 41 candidates (measured 2.6–3.2 kB at 201² and 401² nodes; rounded up)
NODE_BYTES = 3000
#: bytes per grid node and control candidate of a step's search (the candidates, ψ at
#: them and the values: a few arrays of candidates × nodes), beyond the default 41
CANDIDATE_BYTES = 32


def _check_memory(grid, levels: int, comm) -> None:
    """Refuse a value-function grid whose ``levels`` time levels and control search
    (``grid.controls`` candidates at every node) would not fit in the memory
    available to this rank (every rank solves the whole grid)."""
    nodes = int(np.prod(np.broadcast_to(np.asarray(grid.n), 2) + 1, dtype=float))
    search = nodes * CANDIDATE_BYTES * max(float(grid.controls) - 41, 0.0)
    need = nodes * (8.0 * levels + NODE_BYTES) + search
    avail = least_available(comm)
    if need > avail:
        many = search > need / 2
        raise InputError(
            f"the value function needs about {format_bytes(need)} per rank ({nodes:.3g} grid "
            f"nodes × {levels} time levels, {grid.controls:.3g} control candidates) but the "
            f"memory available is {format_bytes(avail)} per rank: use "
            + ("fewer control candidates" if many else "fewer cells"),
            "controls" if many else "n",
        )


def _check_open_loop(config, reduced, comm) -> None:
    """The open-loop method as ``pontryx train`` checks one: the ``petsc:`` options
    inserted, the method with ``training.options`` made and its PETSc objects
    probed, then every ``petsc:`` option checked (one nothing read under the TAO's
    prefix is an error, one of a solver the study does not have a warning)."""
    t = config.training
    petsc_options.apply(config.petsc_options, petsc_key_paths(config.petsc))
    try:
        rf = reduced.functional()
        controls = reduced.controls(config.hjb.initial_states[0])
        options = open_loop_options(dict(t.options))
        probed_trainer(t.method, rf, controls, options, reduced.bounds).destroy()
        quiet = comm.rank != 0
        petsc_options.check_used(
            config.petsc_options,
            petsc_key_paths(config.petsc),
            say=(lambda *a, **k: None) if quiet else print,
        )
    except BaseException:
        petsc_options.remove(config.petsc_options)
        raise


def _build(config, comm):
    h, m, t = config.hjb, config.model, config.training
    with section("parallel"):  # the library asked for must exist, as for train
        use_blas(config.parallel.blas)
    try:
        reduced = ReducedNetwork(
            h.kernel,
            h.readout,
            h.offset,
            h.target,
            t.alpha,
            h.bound,
            m.T,
            m.layers,
            m.activation,
            width_mesh=config.mesh,
        )
    except InputError as e:
        raise InputError(e.message, _config_key(e.key)) from None
    try:  # every quantity of the study finite, before the grid is built
        check_ranges(reduced, h.grid.lower, h.grid.upper, h.grid.n, m.T)
    except InputError as e:
        reduced.destroy()
        raise InputError(e.message, _config_key(e.key)) from None
    try:  # a lower bound first (at least one time level per layer), the exact count after
        _check_memory(h.grid, m.layers + 1, comm)
        vf = ValueFunction(
            reduced.system,
            h.grid.lower,
            h.grid.upper,
            h.grid.n,
            m.T,
            multiple=m.layers,
            cfl=h.grid.cfl,
            controls=h.grid.controls,
        )
        _check_memory(h.grid, vf.steps + 1, comm)
    except InputError as e:
        reduced.destroy()
        raise e.under("hjb.grid") from None
    try:  # last: from here the petsc: options are in PETSc's database (_release)
        _check_open_loop(config, reduced, comm)
    except BaseException:
        reduced.destroy()
        raise
    return reduced, vf


def _release(config, reduced) -> None:
    """Free what :func:`_build` made and take the ``petsc:`` options out again."""
    reduced.destroy()
    petsc_options.remove(config.petsc_options)


class HJBProblem:
    """What ``pontryx validate`` and ``check-gradient`` need of an ``hjb:``
    configuration (nothing is solved): the reduced network, the value-function
    grid, and the open-loop functional J(b) at b = 0 from the first initial state
    (``rf``, ``controls``, ``net``; ``trainable``: the bias, the only control)."""

    trainable = ("b",)

    def __init__(self, config, comm=None):
        self.config = config
        self.reduced, self.vf = _build(config, MPI.COMM_WORLD if comm is None else comm)
        self.net = self.reduced.net
        self.controls = self.reduced.controls(config.hjb.initial_states[0])
        self.rf = self.reduced.functional()

    def describe(self) -> list[str]:
        h, vf, r = self.config.hjb, self.vf, self.reduced
        return [
            f"grid:   [{h.grid.lower[0]:g}, {h.grid.upper[0]:g}] × [{h.grid.lower[1]:g}, "
            f"{h.grid.upper[1]:g}], {vf.n[0]} × {vf.n[1]} cells, Δτ = {vf.dt:.3e} "
            f"({vf.steps} steps; CFL speeds {vf.speed[0]:.3g}, {vf.speed[1]:.3g})",
            f"system: {r.system.name}, W = {h.kernel}, C = {h.readout}, d = {h.offset:g}, "
            f"y = {h.target:g}, |b_i| ≤ {h.bound:g}, α = {r.alpha:g}; {r.layers} layers, "
            f"T = {self.config.model.T:g}",
            f"states: {len(h.initial_states)} initial states u₀",
        ]

    def destroy(self) -> None:
        _release(self.config, self.reduced)


def run_hjb(
    config,
    run_dir: Path,
    *,
    overwrite=False,
    quiet=False,
    source="",
    comm=None,
    directory_key: str = OUTPUT,
) -> dict:
    """One ``pontryx hjb``; returns the summary (``exit_code`` inside). Errors about
    the run directory are keyed by ``directory_key`` (what gave it)."""
    comm = MPI.COMM_WORLD if comm is None else comm
    if config.hjb is None:
        raise InputError("this configuration has no hjb: section (pontryx train runs it)", "hjb")
    directory = RunDirectory(run_dir)
    mode = check_directory(
        directory, comm, resume=False, overwrite=overwrite, resumable=False, key=directory_key
    )
    reduced, vf = _build(config, comm)
    root = comm.rank == 0
    say = print if root and not quiet else (lambda *a, **k: None)
    try:
        with StopRequest(comm) as stop:  # a signal is noted, taken between the stages
            if root:
                directory.open(mode)
                stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                head = (
                    f"# Resolved configuration, written by pontryx hjb from {source} on {stamp}\n"
                )
                write_text(
                    run_dir / "config.yaml",
                    head + yaml.safe_dump(config.resolved(), sort_keys=False, allow_unicode=True),
                )
                directory.register("config.yaml")
            summary = _study(config, reduced, vf, say, stop.check)
            if root:
                _outputs(run_dir, directory, config, reduced, vf, summary)
                directory.discard_replaced()  # only now: the old run stays until then
            comm.Barrier()
            return summary
    except BaseException:  # a failure or a signal: nothing of the new run kept, an
        if root:  # overwritten old run back as it was
            if mode == "fresh":
                directory.remove_new_run()
            else:
                directory.restore_replaced()
        raise
    finally:
        if root:
            directory.close()
        _release(config, reduced)


def _study(config, reduced, vf, say, check=lambda: None) -> dict:
    """The value function, then the closed and open loops of every initial state
    (``check`` after each stage: a signal stops the study there, collectively)."""
    h, t = config.hjb, config.training
    say(
        f"pontryx hjb: V(t, u) of the two-dof network on [{h.grid.lower[0]:g}, "
        f"{h.grid.upper[0]:g}] × [{h.grid.lower[1]:g}, {h.grid.upper[1]:g}], "
        f"{vf.n[0]} × {vf.n[1]} cells, Δτ = {vf.dt:.3e} ({vf.steps} steps; CFL speeds "
        f"{vf.speed[0]:.3g}, {vf.speed[1]:.3g}); network: {reduced.layers} layers"
    )
    t0 = time.perf_counter()
    vf.solve()
    check()
    t_solve = time.perf_counter() - t0
    say(f"  value function: {t_solve:.1f} s")
    rows, failed = [], False
    for u0 in h.initial_states:
        t1 = time.perf_counter()
        Jc, cc = reduced.closed_loop(vf, u0)
        t_closed = time.perf_counter() - t1
        t1 = time.perf_counter()
        Jo, co, result = reduced.open_loop(u0, t.method, dict(t.options), t.max_iterations)
        check()
        t_open = time.perf_counter() - t1
        failed |= not result.converged
        V0 = vf.value(0.0, u0)
        rows.append(
            {
                "u0": list(map(float, u0)),
                "value": V0,
                "closed_loop": Jc,
                "open_loop": Jo,
                "open_loop_reason": result.reason,
                "open_loop_iterations": len(result.history),
                "closed_minus_open": Jc - Jo,
                "value_minus_open": V0 - Jo,
                "time_closed_loop": t_closed,
                "time_open_loop": t_open,
                "closed_trajectory": reduced.trajectory(cc).tolist(),
                "open_trajectory": reduced.trajectory(co).tolist(),
                "closed_controls": _controls(reduced, cc),
                "open_controls": _controls(reduced, co),
            }
        )
        say(
            f"  u₀ = ({u0[0]:g}, {u0[1]:g}): V_h(0, u₀) {V0:.6f}  closed loop {Jc:.6f}  "
            f"open loop {Jo:.6f} ({result.reason}, {len(result.history)} its)  "
            f"closed − open {Jc - Jo:+.2e}"
        )
    return {
        "status": "not_converged" if failed else "done",
        "exit_code": EXIT_NOT_CONVERGED if failed else 0,
        "grid": {
            "lower": list(h.grid.lower),
            "upper": list(h.grid.upper),
            "cells": vf.n.tolist(),
            "h": vf.h.tolist(),
            "dt": vf.dt,
            "steps": vf.steps,
            "speed": vf.speed.tolist(),
        },
        "layers": reduced.layers,
        "T": config.model.T,
        "method": t.method,
        "time_value_function": t_solve,
        "initial_states": rows,
    }


def _controls(reduced, controls) -> list:
    sp = reduced.space
    return [sp.to_canonical(b).tolist() for b in controls["b"]]


def _outputs(run_dir: Path, directory, config, reduced, vf, summary) -> None:
    times = [n * reduced.net.dt for n in range(reduced.layers + 1)]
    with atomic_path(run_dir / "value.npz") as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            x=vf.axes[0],
            y=vf.axes[1],
            t=np.array(times),
            V=np.array([vf.levels[vf.level(s)] for s in times]),
            feedback=vf.minimisers,
            closed=np.array([r["closed_trajectory"] for r in summary["initial_states"]]),
            open=np.array([r["open_trajectory"] for r in summary["initial_states"]]),
        )
    written = ["summary.json", "value.npz"]
    if config.output.paraview.enabled:
        (run_dir / "paraview").mkdir(exist_ok=True)
        vf.write_paraview(run_dir / "paraview" / "value.bp", times)
        written.append("paraview")
    if config.output.plots:
        _plots(run_dir / "plots", config, vf, summary)
        written.append("plots")
    write_json(run_dir / "summary.json", summary)
    directory.register(*written)


def _plots(plots: Path, config, vf, summary) -> None:
    from pontryx.solver.outputs.plots import _pyplot, _save

    plots.mkdir(exist_ok=True)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    X, Y = np.meshgrid(*vf.axes, indexing="ij")
    cs = ax.contourf(X, Y, vf.levels[0], 40, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="V_h(0, u)")
    for k, r in enumerate(summary["initial_states"]):
        c, o = np.array(r["closed_trajectory"]), np.array(r["open_trajectory"])
        ax.plot(
            c[:, 0], c[:, 1], "w-", lw=2, label="closed loop (HJB feedback)" if k == 0 else None
        )
        ax.plot(o[:, 0], o[:, 1], "r--", lw=1.3, label="open loop (pontryx)" if k == 0 else None)
        ax.plot(*c[0], "wo", ms=5)
    ax.set_xlabel("u₁")
    ax.set_ylabel("u₂")
    ax.set_title(f"value function at t = 0 and optimal trajectories (T = {config.model.T:g})")
    ax.legend(loc="upper right", fontsize=8)
    _save(fig, plots / "value.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for i, ax in enumerate(axes):
        cs = ax.contourf(X, Y, vf.minimisers[i], 30, cmap="RdBu_r")
        fig.colorbar(cs, ax=ax)
        ax.set_title(f"feedback b*_{i + 1}(0, u)")
        ax.set_xlabel("u₁")
        ax.set_ylabel("u₂")
    _save(fig, plots / "feedback.png")
