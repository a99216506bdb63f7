"""The training run behind ``pontryx train``: config → problem → trainer → run directory.

:func:`train` builds the problem (:mod:`.problem`: everything that can fail on
bad input, before the run directory is touched), then runs the one training loop
(:func:`pontryx.solver.training.loop.train`) in chunks of
``output.checkpoint_every`` iterations, logs every iteration (``metrics.jsonl``,
``metrics.csv``, a progress line on rank 0), writes a checkpoint after every
chunk and, at the end, ``model.npz``, ``summary.json``, ParaView files and plots.
"""

from __future__ import annotations

import datetime
import math
import time
from pathlib import Path

from mpi4py import MPI

import numpy as np
import yaml

from pontryx.meshes.errors import InputError
from pontryx.solver.app.faults import abort_on_error, fault_plan
from pontryx.solver.app.problem import Problem, build_problem, evaluate, make_method
from pontryx.solver.config.schema import Config
from pontryx.solver.errors import NonFiniteError
from pontryx.solver.outputs import (
    Checkpoints,
    MetricsLog,
    check_run_directory,
    environment,
    model_io,
    paraview,
    plots,
    prepare_run_directory,
)
from pontryx.solver.outputs.atomic import write_json, write_text
from pontryx.solver.outputs.canonical import canonical_shape
from pontryx.solver.training.loop import MAX_ITERATIONS
from pontryx.solver.training.loop import train as train_loop

__all__ = ["TrainingRun", "train"]


# -------------------------------------------------------------- progress ---


class Progress:
    """One line per iteration on world rank 0 (silent with ``quiet``)."""

    def __init__(self, world: MPI.Comm, quiet: bool, metric: str):
        self.active = world.rank == 0 and not quiet
        self.metric = "acc" if metric == "accuracy" else metric

    def say(self, text: str = "") -> None:
        if self.active:
            print(text, flush=True)

    def record(self, row: dict) -> None:
        if not self.active:
            return
        test = row.get("test_metric")
        test = f"  test {test:.4f}" if isinstance(test, float) else ""
        self.say(
            f"iter {row['iteration']:5d}  loss {row['loss']:.6e}  "
            f"{self.metric} {row['train_metric']:.4f}{test}  "
            f"|∇J| {row['grad_norm']:.3e}  Pontryagin {row['pontryagin']:.3e}  "
            f"{row['time']:8.1f} s"
        )


# ----------------------------------------------------------------- train ---


def _resolved_yaml(config: Config, run_dir: Path, source: str) -> str:
    resolved = config.resolved()
    resolved["output"]["directory"] = str(run_dir)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    head = (
        f"# Resolved configuration (every default filled in), written by pontryx "
        f"{environment.versions()['pontryx']}\n# from {source} on {stamp}.\n"
        f"# Re-run with: pontryx train {run_dir / 'config.yaml'} --output NEW_DIR\n"
    )
    return head + yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True)


_RESUME_FREE = ("training.max_iterations", "output", "petsc", "parallel")


def _differences(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in dict.fromkeys([*a, *b]):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    path = prefix[:-1]
    if a != b and not any(path == p or path.startswith(p + ".") for p in _RESUME_FREE):
        return [f"{path} ({a!r} there, {b!r} here)"]
    return []


def check_resume_config(run_dir: Path, config: Config) -> None:
    """A resumed run must use the configuration of the run it continues (only
    ``training.max_iterations``, ``output``, ``petsc`` and ``parallel`` may change)."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    old = yaml.safe_load(path.read_text(encoding="utf-8"))
    diff = _differences(old, config.resolved())
    if diff:
        raise InputError(
            f"the configuration differs from {path} at {diff[0]}; "
            "use a new --output directory (or --overwrite) for a changed configuration",
            "--resume",
        )


def _run_directory(run_dir: Path, resume: bool, overwrite: bool) -> str:
    """:func:`check_run_directory` with its errors keyed by the command-line flag."""
    try:
        return check_run_directory(run_dir, resume=resume, overwrite=overwrite)
    except InputError as e:
        raise InputError(e.message, "--output" if e.key == "directory" else f"--{e.key}") from None


def _on_root(comm: MPI.Comm, action):
    """``action()`` on rank 0; its result, or its ValueError raised, on every rank."""
    result = None
    if comm.rank == 0:
        try:
            result = action()
        except ValueError as e:
            result = e
    result = comm.bcast(result, root=0)
    if isinstance(result, Exception):
        raise result
    return result


class TrainingRun:
    """One ``pontryx train``: set-up (everything that can fail on bad input, before
    the run directory is touched), the chunked loop, and the final outputs."""

    def __init__(self, config: Config, run_dir: Path, *, resume, overwrite, quiet, source, comm):
        self.config, self.run_dir, self.source, self.comm = config, run_dir, source, comm
        self.root = comm.rank == 0
        self.faults = fault_plan()
        self.mode = _on_root(comm, lambda: _run_directory(run_dir, resume, overwrite))
        self.problem = build_problem(config, comm)
        self.trainer = make_method(self.problem)
        self.progress = Progress(comm, quiet, self.problem.metric_name)
        self.layout = {"width": self.problem.layout.n_width, "data": self.problem.layout.n_data}
        self.checkpoints = Checkpoints(
            run_dir / "checkpoints", comm, keep=config.output.keep_checkpoints
        )
        self.manifest = self.checkpoints.latest() if self.mode == "resume" else None
        if self.mode == "resume":
            _on_root(comm, lambda: check_resume_config(run_dir, config))
        self.state = self.checkpoints.load(self.manifest, self.layout) if self.manifest else None
        self.offset, self.t0 = 0.0, time.perf_counter()

    def elapsed(self) -> float:
        """Seconds of training so far, over all restarts."""
        return self.offset + time.perf_counter() - self.t0

    # -- the run directory is written from here on ----------------------------
    def open(self) -> None:
        if self.root:
            prepare_run_directory(self.run_dir, self.mode)
            text = _resolved_yaml(self.config, self.run_dir, self.source)
            write_text(self.run_dir / "config.yaml", text)
        self.comm.Barrier()
        m = self.manifest
        if self.state is not None:
            self.trainer.restore(self.state)
            self.offset = float(m.get("elapsed", 0.0))
        self.t0 = time.perf_counter()
        keep = m["iteration"] if m else None
        self.metrics = MetricsLog(self.run_dir, active=self.root).open(keep_until=keep)
        say, c = self.progress.say, self.config
        say(f"pontryx train {self.source} → {self.run_dir}")
        for line in self.problem.describe():
            say("  " + line)
        say(
            f"  method: {c.training.method}, {c.training.max_iterations} iterations, "
            f"checkpoint every {c.output.checkpoint_every}"
            + (f"; resuming at iteration {m['iteration']}" if m else "")
        )

    def handle(self, rec) -> None:
        """Log one iteration (the loop hands each over once, with its test metric)."""
        comm, faults = self.comm, self.faults
        if faults is not None and rec.iteration == faults[1]:
            if faults[0] == "nan":
                rec.loss = float("nan")
            elif faults[0] == comm.rank:
                raise RuntimeError(
                    f"PONTRYX_FAULT_INJECT: injected fault on rank {comm.rank} "
                    f"at iteration {rec.iteration}"
                )
        if not (math.isfinite(rec.loss) and math.isfinite(rec.grad_norm)):
            what = "loss" if not math.isfinite(rec.loss) else "gradient"
            raise NonFiniteError(f"training: non-finite {what} at iteration {rec.iteration}")
        rec.time = self.elapsed()
        row = rec.as_dict()
        self.metrics.append(row)
        self.progress.record(row)

    def loop(self) -> str:
        """The one training loop in chunks ending at multiples of
        ``checkpoint_every``, a checkpoint after each; returns why training stopped."""
        trainer, t, m = self.trainer, self.config.training, self.manifest
        # a run that stopped at max_iterations continues when max_iterations was raised
        if (
            m
            and m.get("finished")
            and (m.get("reason") != MAX_ITERATIONS or trainer.iteration >= t.max_iterations)
        ):
            return m.get("reason")
        self.last_checkpoint = m["iteration"] if m else None

        def checkpoint(trainer, reason, finished):
            self.checkpoints.save(
                trainer.iteration,
                trainer.state(),
                layout=self.layout,
                elapsed=self.elapsed(),
                finished=finished,
                reason=reason,
                method=t.method,
            )
            self.last_checkpoint = trainer.iteration

        result = train_loop(
            trainer,
            t.max_iterations,
            chunk=self.config.output.checkpoint_every,
            test_rf=self.problem.rf_test,
            test_every=t.test_every,
            on_record=abort_on_error(self.handle, self.comm),
            on_chunk=checkpoint,
        )
        return result.reason

    def non_finite(self, error: NonFiniteError) -> NonFiniteError:
        """Close the log, record the failure; the error to report (exit code 3)."""
        self.metrics.close()
        last = self.last_checkpoint
        where = (
            f"the last good checkpoint is iteration {last} in {self.run_dir / 'checkpoints'}"
            if last is not None
            else "no checkpoint was written"
        )
        if self.root:
            write_json(
                self.run_dir / "summary.json",
                {"status": "non-finite", "message": str(error), "last_checkpoint": last},
            )
        return NonFiniteError(f"{error}; training stopped, {where}")

    def finish(self, reason: str) -> dict:
        """Final evaluation, model.npz, ParaView files, plots and summary.json."""
        self.metrics.close()
        problem, comm, out = self.problem, self.comm, self.config.output
        controls, net = self.trainer.controls, problem.net
        results = evaluate(problem, controls)
        summary = {
            "status": "finished",
            "reason": reason,
            "iterations": int(self.trainer.iteration),
            "method": self.config.training.method,
            **results,
            "metric": problem.metric_name,
            "time": self.elapsed(),
            "ranks": comm.size,
            "layout": self.layout,
            "dofs": problem.space.N,
            "trainable": {
                k: int(np.prod(canonical_shape(net, k, controls[k].shape))) for k in net.trainable
            },
            "versions": environment.versions(),
        }
        if problem.layout.group == 0:  # one data group writes (collective on its width comm)
            d = problem.dataset
            if out.model:
                model_io.save_model(
                    self.run_dir / "model.npz",
                    net,
                    controls,
                    task=d.task,
                    input_shape=d.input_shape,
                    classes=d.classes,
                )
            if out.paraview.enabled:
                write_paraview(problem, controls, self.run_dir / "paraview")
            if out.plots:
                write_plots(problem, controls, self.run_dir / "plots", self.metrics.rows)
        summary["output_time"] = self.elapsed() - summary["time"]
        if self.root:
            write_json(self.run_dir / "summary.json", summary)
        comm.Barrier()
        m = problem.metric_name
        self.progress.say(
            f"done: {summary['iterations']} iterations ({reason}) in {summary['time']:.1f} s; "
            f"train {m} {results['train'][m]:.4f}, test {m} {results['test'][m]:.4f}"
        )
        self.progress.say(
            f"results in {self.run_dir}/: summary.json, metrics.csv, model.npz, plots/, paraview/"
        )
        return summary

    def destroy(self) -> None:
        self.trainer.destroy()
        self.problem.destroy()


def train(
    config: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    source: str = "",
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> dict:
    """A complete training run into ``run_dir``; returns the summary (on every rank).

    Bad input raises InputError before anything is
    written; a non-finite loss or gradient raises NonFiniteError after keeping
    the last good checkpoint."""
    run = TrainingRun(
        config, run_dir, resume=resume, overwrite=overwrite, quiet=quiet, source=source, comm=comm
    )
    run.open()
    try:
        # overflow on the way to a non-finite loss is reported once, as NonFiniteError
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            reason = run.loop()
    except NonFiniteError as e:
        raise run.non_finite(e) from None
    summary = run.finish(reason)
    run.destroy()
    return summary


def write_paraview(problem: Problem, controls, directory: Path) -> None:
    """states.bp and controls.bp (collective on the width comm of data group 0)."""
    net, d = problem.net, problem.dataset
    count = min(problem.config.output.paraview.samples, d.n_test)
    if problem.space.comm.rank == 0:
        directory.mkdir(parents=True, exist_ok=True)
    problem.space.comm.Barrier()
    if count:
        X = np.ascontiguousarray(d.X_test[:count].T)
        labels = list(d.y_test[:count]) if d.task == "classification" else None
        paraview.write_states(directory / "states.bp", net, controls, X, labels)
    rows = paraview.write_controls(
        directory / "controls.bp", net, controls, problem.config.output.paraview.kernel_rows
    )
    if problem.space.comm.rank == 0:
        write_json(
            directory / "controls.json",
            {
                "times": [n * net.dt for n in range(net.layers)],
                "kernel_rows": {name: x for name, x in rows},
            },
        )


def write_plots(problem: Problem, controls, directory: Path, rows: list[dict]) -> None:
    """PNG figures (evaluations collective on the width comm of data group 0)."""
    net, d = problem.net, problem.dataset
    draw = problem.space.comm.rank == 0
    if draw:
        directory.mkdir(parents=True, exist_ok=True)
        plots.plot_curves(rows, directory / "curves.png", problem.metric_name)
    plots.plot_decision_boundary(net, controls, d, directory / "decision_boundary.png", draw=draw)
    plots.plot_features(net, controls, d, directory / "features.png", draw=draw)
    if len(d.input_shape) == 2 and net.space.mesh.geometry.dim == 2:
        mesh = model_io.mesh_arrays(net.space)
        plots.plot_digits(net, controls, d, mesh, directory / "digits.png", draw=draw)
