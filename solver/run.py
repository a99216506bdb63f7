"""The training driver: config → layout → data → mesh → network → trainer → run directory.

:func:`build_problem` does everything that can fail on bad input (collective,
nothing written): the width × data layout, the PETSc options, the data set,
the mesh, the network, the reduced functionals and the trainer. Errors that
name a configuration key become :class:`ConfigError`.

:func:`train` runs the trainer in chunks of ``output.checkpoint_every``
iterations (in fresh and resumed runs alike, so both take identical steps),
logs every iteration (``metrics.jsonl``/``.csv``, a progress line on rank 0),
writes a checkpoint after every chunk and, at the end, ``model.npz``,
``summary.json``, ParaView files and plots.

Testing hook: the environment variable ``PONTRYX_FAULT_INJECT`` makes a run
fail on purpose — ``RANK:ITERATION`` raises an exception on world rank RANK
when iteration ITERATION is logged (the other ranks are then waiting in a
collective; the job must still end), ``nan:ITERATION`` turns the loss of that
iteration into NaN on every rank (the non-finite stop, exit code 3).
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from mpi4py import MPI

import numpy as np
import yaml
from petsc4py import PETSc

from pontryx.meshes import MeshError, create_mesh, mesh_summary
from pontryx.solver.config import SECTIONS, Config, ConfigError
from pontryx.solver.data import DataError, Dataset, load_dataset, shard
from pontryx.solver.layout import Layout, LayoutError
from pontryx.solver.network import ContinuumNetwork
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
from pontryx.solver.reduced import ReducedFunctional
from pontryx.solver.training import NonFiniteError, make_trainer
from pontryx.solver.width import WidthSpace

__all__ = ["Problem", "build_problem", "config_errors", "set_petsc_options", "train"]

_KEYED = re.compile(rf"^((?:{'|'.join(SECTIONS)})(?:\.[\w\-]+)*): (.+)$", re.S)


@contextlib.contextmanager
def config_errors():
    """Turn the builders' one-line errors that name a key (``mesh.n: …``,
    ``data.path: …``, ``model.kernel.rank: …``) into :class:`ConfigError`."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        m = _KEYED.match(str(e))
        if m is None and not isinstance(e, MeshError | DataError | LayoutError):
            raise
        if m is None:
            raise ConfigError("", str(e)) from None
        raise ConfigError(m.group(1), m.group(2)) from None


#: Defaults for reproducibility: PETSc's BLAS-GEMV kernels of VecMDot/VecMAXPY (used by
#: TAO's L-BFGS and Krylov methods) round differently depending on the memory alignment
#: of the vectors, so a resumed process (another heap layout) would drift from an
#: uninterrupted run in the last bits. The plain kernels are alignment-independent.
REPRODUCIBLE = {"vec_mdot_use_gemv": "false", "vec_maxpy_use_gemv": "false"}


def set_petsc_options(options: dict[str, str | None]) -> None:
    """Insert ``petsc:`` options into PETSc's database (before any solver exists),
    after the :data:`REPRODUCIBLE` defaults (which ``petsc:`` may override)."""
    db = PETSc.Options()
    for name, value in REPRODUCIBLE.items():
        if not db.hasName(name):
            db.setValue(name, value)
            db.getBool(name)  # mark as used: no "unused option" warning for a default
    for name, value in options.items():
        db.setValue(name, value)


@dataclass
class Problem:
    """Everything a command needs, built from a validated configuration."""

    config: Config
    layout: Layout
    dataset: Dataset
    space: WidthSpace
    net: ContinuumNetwork
    controls: object  # Controls
    rf: ReducedFunctional
    rf_test: ReducedFunctional

    @property
    def metric_name(self) -> str:
        return "accuracy" if self.dataset.task == "classification" else "rmse"

    def describe(self) -> list[str]:
        d, sp, net, m = self.dataset, self.space, self.net, self.config.model
        kernel = m.kernel.type + (f" (rank {m.kernel.rank})" if m.kernel.rank else "")
        return [
            f"layout: {self.layout.describe()}",
            f"mesh:   {mesh_summary(sp.mesh)}; P{sp.degree}, N = {sp.N} dofs",
            f"data:   {d.description}",
            f"model:  {kernel} kernel, {m.activation}, {m.scheme}, T = {m.T:g}, "
            f"{m.layers} layers, ε = {m.epsilon:g}; trains {', '.join(net.trainable)}",
        ]

    def destroy(self) -> None:
        self.net.destroy()
        self.space.destroy()


def build_problem(config: Config, comm: MPI.Comm = MPI.COMM_WORLD) -> Problem:
    """Layout, PETSc options, data, mesh, network, functionals. Collective."""
    c, m = config, config.model
    with config_errors():
        layout = Layout.create(comm, *c.parallel.sizes(comm.size))
        set_petsc_options(c.petsc_options)
        dataset = load_dataset(c.data)
        mesh = create_mesh(c.mesh, layout.width)
        space = WidthSpace(mesh, degree=m.degree, lumping=m.lumping)
        net = ContinuumNetwork(
            space,
            dataset.n_in,
            dataset.n_outputs,
            kernel=m.kernel.type,
            kernel_options={"rank": m.kernel.rank} if m.kernel.type == "lowrank" else None,
            activation=m.activation,
            scheme=m.scheme,
            T=m.T,
            layers=m.layers,
            epsilon=m.epsilon,
            embedding=m.embedding.type,
            input_shape=dataset.input_shape,
            train_embedding=m.embedding.trainable,
            train_readout=m.readout.trainable,
        )
        controls = net.init_controls(seed=m.init.seed, gain=m.init.gain)

        def functional(X, y, alpha, beta):
            part = shard(len(X), layout.group, layout.n_data)
            return ReducedFunctional(
                net,
                X[part],
                y[part],
                dataset.task,
                alpha=alpha,
                beta=beta,
                layout=layout,
                checkpoint=c.training.checkpointing,
            )

        t = c.training
        rf = functional(dataset.X_train, dataset.y_train, t.alpha, t.beta)
        rf_test = functional(dataset.X_test, dataset.y_test, 0.0, 0.0)
    return Problem(c, layout, dataset, space, net, controls, rf, rf_test)


#: Key paths in the training methods' messages → the YAML key paths.
_ALIASES = {"model.train_embedding": "model.embedding.trainable"}


def make_method(problem: Problem):
    """The configured trainer on the problem's functional and controls. The
    methods name their options ``training.<option>``; the YAML key is
    ``training.options.<option>``."""
    t = problem.config.training
    try:
        return make_trainer(t.method, problem.rf, problem.controls, dict(t.options))
    except (ValueError, TypeError) as e:  # bad options: the input is training.options
        m = _KEYED.match(str(e))
        if m is None:
            raise ConfigError("training.options", str(e)) from None
        key, message = _ALIASES.get(m.group(1), m.group(1)), m.group(2)
        head, _, rest = key.partition(".")
        if head == "training" and rest and rest.split(".")[0] not in type(t).model_fields:
            key = f"training.options.{rest}"
        raise ConfigError(key, message) from None


def evaluate(problem: Problem, controls) -> dict:
    """Loss and metric on the training and test sets at ``controls``. Collective."""
    out = {}
    for split, rf in (("train", problem.rf), ("test", problem.rf_test)):
        J = rf(controls)
        out[split] = {
            "loss": float(J),
            "misfit": float(rf.last["misfit"]),
            problem.metric_name: float(rf.metric()),
            "samples": int(rf.S),
        }
    return out


# ------------------------------------------------------------- faults ---


def fault_plan(world: MPI.Comm) -> tuple[int | str, int] | None:
    """Parse ``PONTRYX_FAULT_INJECT`` (``RANK:ITERATION`` or ``nan:ITERATION``)."""
    text = os.environ.get("PONTRYX_FAULT_INJECT", "").strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d+|nan):(\d+)", text)
    if m is None:
        raise ConfigError(
            "PONTRYX_FAULT_INJECT", f"expected RANK:ITERATION or nan:ITERATION, got {text!r}"
        )
    who = m.group(1) if m.group(1) == "nan" else int(m.group(1))
    return who, int(m.group(2))


def abort_on_error(callback, comm: MPI.Comm):
    """``callback`` for use inside PETSc solver callbacks (e.g. a TAO monitor).

    An exception there on one rank cannot travel back through TaoSolve while
    the other ranks wait in the solver's collectives, so with several ranks an
    unexpected exception ends the job at once (traceback, one line, MPI Abort).
    :class:`NonFiniteError` is raised on every rank alike and passes through."""

    def guarded(*args):
        try:
            return callback(*args)
        except NonFiniteError:
            raise
        except Exception as e:
            if comm.size == 1:
                raise
            traceback.print_exc()
            text = " ".join(str(e).split())
            print(
                f"[rank {comm.rank}/{comm.size}] pontryx: error: {type(e).__name__}: {text}",
                file=sys.stderr,
                flush=True,
            )
            MPI.COMM_WORLD.Abort(1)

    return guarded


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
        raise ConfigError(
            "--resume",
            f"the configuration differs from {path} at {diff[0]}; "
            "use a new --output directory (or --overwrite) for a changed configuration",
        )


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
        self.faults = fault_plan(comm)
        self.mode = _on_root(
            comm, lambda: check_run_directory(run_dir, resume=resume, overwrite=overwrite)
        )
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
        self.handled: set[int] = set()
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
        """Log one iteration (once, whether it arrives live or yielded)."""
        if rec.iteration in self.handled:
            return
        self.handled.add(rec.iteration)
        comm, faults, t = self.comm, self.faults, self.config.training
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
        if t.test_every and rec.iteration % t.test_every == 0:
            self.problem.rf_test(self.trainer.controls)
            rec.test_metric = float(self.problem.rf_test.metric())
        rec.time = self.elapsed()
        row = rec.as_dict()
        self.metrics.append(row)
        self.progress.record(row)

    def loop(self) -> str:
        """Chunks ending at multiples of ``checkpoint_every``, a checkpoint after
        each; returns why training stopped."""
        trainer, t, m = self.trainer, self.config.training, self.manifest
        if hasattr(trainer, "on_record"):  # live progress for methods iterating inside PETSc
            trainer.on_record = abort_on_error(self.handle, self.comm)
        # a run that stopped at max_iterations continues when max_iterations was raised
        finished = bool(m and m.get("finished")) and (
            m.get("reason") != "max_iterations" or trainer.iteration >= t.max_iterations
        )
        reason = m.get("reason") if m else "max_iterations"
        self.last_checkpoint = m["iteration"] if m else None
        every = self.config.output.checkpoint_every
        while not finished:
            k = min(every - trainer.iteration % every, t.max_iterations - trainer.iteration)
            count = 0
            for rec in trainer.iterate(k) if k > 0 else ():
                self.handle(rec)
                count += 1
            converged = getattr(trainer, "converged", None)
            failed = getattr(trainer, "failed", None)
            if converged:
                reason = f"converged: {converged}"
            elif failed:
                reason = f"stopped: {failed}"
            elif k > 0 and count == 0:
                reason = "no progress"
            else:
                reason = "max_iterations"
            finished = reason != "max_iterations" or trainer.iteration >= t.max_iterations
            if k > 0:
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
        return reason

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
        if hasattr(self.trainer, "destroy"):
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

    Bad input raises ConfigError/RunDirError/CheckpointError before anything is
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
