"""The training run behind ``pontryx train``: config → problem → trainer → run directory.

:class:`TrainingRun` builds the problem (:mod:`.problem`: everything that can
fail on bad input, checked before the run directory is touched: the schema, the
mesh, data, network and method, the PETSc options, the memory the run needs, the
checkpoint to resume from), then runs the one training loop
(:func:`pontryx.solver.training.loop.train`) in chunks of
``output.checkpoint_every`` iterations, logs every iteration (``metrics.jsonl``,
``metrics.csv``, a progress line on rank 0, ``train.log``), writes a checkpoint
after every chunk and, at the end, ``model.npz``, ``summary.json``, ParaView
files and plots.

How a run ends (``summary.json`` ``status``, the exit code of ``pontryx train``):
``converged`` (0: the method met its tolerance), ``max_iterations`` (0: the
iterations asked for are done), ``not_converged`` (4: the method stopped without
meeting its tolerance — a line-search failure, a Newton solve that did not
converge, no descent), ``non-finite`` (3: the summary holds the iterations and,
if finite, the scores of the last finite iterate the trainer went back to),
``interrupted`` (128 + the signal:
SIGTERM, SIGUSR1 or SIGINT; every rank finished the iteration it was in, a
checkpoint and ``model.npz`` are written, ``--resume`` continues).
"""

from __future__ import annotations

import datetime
import math
import sys
import time
import warnings
from pathlib import Path

from mpi4py import MPI

import numpy as np
import yaml

from pontryx.meshes.errors import InputError
from pontryx.solver.app.directory import OUTPUT, by_flag, check_directory, on_root
from pontryx.solver.app.faults import abort_on_error, fault_plan
from pontryx.solver.app.memory import check_memory
from pontryx.solver.app.problem import (
    Problem,
    build_problem,
    evaluate,
    make_method,
    train_coarse_levels,
)
from pontryx.solver.app.signals import Interrupted
from pontryx.solver.config.schema import Config
from pontryx.solver.errors import EXIT_NON_FINITE, EXIT_NOT_CONVERGED, NonFiniteError, SolveError
from pontryx.solver.layout import ranks
from pontryx.solver.model import blas
from pontryx.solver.outputs import (
    Checkpoints,
    MetricsLog,
    environment,
    model_io,
    paraview,
    plots,
    read_metrics,
)
from pontryx.solver.outputs.atomic import write_json, write_text
from pontryx.solver.outputs.canonical import canonical_shape
from pontryx.solver.outputs.rundir import RunDirectory
from pontryx.solver.outputs.trajectory import FILE as TRAJECTORY
from pontryx.solver.outputs.trajectory import TrajectoryLog, read_trajectory
from pontryx.solver.training.loop import MAX_ITERATIONS
from pontryx.solver.training.loop import train as train_loop

__all__ = ["TrainingRun", "status_of"]


def _exchange(space) -> str:
    """How the width ranks exchanged rows: ``shared`` (node-shared arrays), ``mpi``
    (the collectives) or ``none`` (one width rank)."""
    if space.comm.size == 1:
        return "none"
    return "shared" if space.shared is not None else "mpi"


def status_of(reason: str, trainer=None) -> str:
    """``summary.json`` status of a stop reason of the training loop: a method that
    solves a system to a tolerance (:attr:`Trainer.solves_to_tolerance`, the
    one-shot KKT solve) is ``not_converged`` when the iterations ran out."""
    if reason.startswith("converged"):
        return "converged"
    if reason == MAX_ITERATIONS and not getattr(trainer, "solves_to_tolerance", False):
        return "max_iterations"
    return "not_converged"


# -------------------------------------------------------------- progress ---


class Progress:
    """One line per iteration on world rank 0 — ``k/N``, the loss, metrics, ‖∇J‖
    in the method's metric, elapsed time, an estimate of the time left and the
    clock — on the terminal (unless ``quiet``) and in ``train.log`` (always)."""

    def __init__(
        self, world: MPI.Comm, quiet: bool, metric: str, total: int, norm: str, test: str = "test"
    ):
        self.root, self.test = world.rank == 0, test
        self.active = self.root and not quiet
        self.metric = "acc" if metric == "accuracy" else metric
        self.total, self.norm = int(total), "‖∇J‖_L2" if norm == "l2" else "‖∇J‖_2"
        self.log = None
        self.first: tuple[int, float] | None = None

    def open_log(self, path: Path) -> None:
        if self.root:
            self.log = open(path, "a", encoding="utf-8", errors="backslashreplace")

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def say(self, text: str = "", error: bool = False) -> None:
        if self.log is not None:
            self.log.write(text + "\n")
            self.log.flush()
        if self.active or (error and self.root):
            print(text, file=sys.stderr if error else sys.stdout, flush=True)

    def record(self, row: dict) -> None:
        if not self.root:
            return
        k, t = row["iteration"], row["time"]
        if self.first is None:
            self.first = (k, t)
        k0, t0 = self.first
        eta = ""
        if k > k0 and self.total > k:
            eta = f"  ETA {(t - t0) / (k - k0) * (self.total - k):7.0f} s"
        test = row.get("test_metric")
        test = f"  {self.test} {test:.4f}" if isinstance(test, float) else ""
        clock = datetime.datetime.now().strftime("%H:%M:%S")
        width = len(str(self.total))
        self.say(
            f"iter {k:{width}d}/{self.total}  loss {row['loss']:.6e}  "
            f"{self.metric} {row['train_metric']:.4f}{test}  "
            f"{self.norm} {row['grad_norm']:.3e}  ‖∂θH‖ {row['stationarity']:.3e}  "
            f"{t:8.1f} s{eta}  {clock}"
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


#: What may differ when a run is resumed (everything else must be as before):
#: the iterations, the method and its options (e.g. a smaller step after a
#: divergence; a new method takes the controls only), how often to test, the
#: outputs, PETSc options and the MPI layout.
RESUME_FREE = (
    "training.max_iterations",
    "training.method",
    "training.options",
    "training.test_every",
    "output",
    "petsc",
    "parallel",
)


def _differences(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in dict.fromkeys([*a, *b]):
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    path = prefix[:-1]
    if a != b and not any(path == p or path.startswith(p + ".") for p in RESUME_FREE):
        return [f"{path} ({a!r} there, {b!r} here)"]
    return []


def check_resume_config(run_dir: Path, config: Config, checkpointed: bool = True) -> None:
    """A resumed run must use the configuration of the run it continues, up to
    :data:`RESUME_FREE`: a run directory with checkpoints (``checkpointed``) but
    no ``config.yaml`` cannot be resumed, since no change could be refused."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        if checkpointed:
            raise InputError(
                f"{path} is missing, so the configuration of the run to continue is unknown; "
                "restore it, or use --overwrite to start again",
                "--resume",
            )
        return
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        raise InputError(
            f"{path} is unreadable; use --overwrite to start again", "--resume"
        ) from None
    if not isinstance(old, dict):
        raise InputError(f"{path} is not a configuration", "--resume")
    diff = _differences(old, config.resolved())
    if diff:
        free = ", ".join(RESUME_FREE)
        raise InputError(
            f"the configuration differs from {path} at {diff[0]}; a resumed run may change "
            f"only {free} — use a new --output directory for a changed configuration",
            "--resume",
        )


class TrainingRun:
    """One ``pontryx train``: set-up (everything that can fail on bad input, before
    the run directory is touched), the chunked loop, and the final outputs."""

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        *,
        resume,
        overwrite,
        quiet,
        source,
        comm,
        max_memory: float | None = None,
        directory_key: str = OUTPUT,
    ):
        self.config, self.run_dir, self.source, self.comm = config, run_dir, source, comm
        self.directory_key = directory_key  # what gave run_dir: errors are keyed by it
        self.root = comm.rank == 0
        self.faults = fault_plan()
        self.directory, self._started = RunDirectory(run_dir), False
        self.mode = check_directory(
            self.directory, comm, resume=resume, overwrite=overwrite, key=directory_key
        )
        t = config.training
        check_memory(config, comm, max_memory)  # before anything large exists
        self.problem = build_problem(config, comm)
        try:
            self._check_outputs()
            self.trainer = make_method(self.problem)
            if self.trainer.memory_bytes():
                check_memory(config, comm, max_memory, method_bytes=self.trainer.memory_bytes())
        except BaseException:
            self.problem.destroy()
            raise
        self.progress = Progress(
            comm,
            quiet,
            self.problem.metric_name,
            t.max_iterations,
            self.trainer.metric,
            getattr(self.problem, "test_label", "test"),
        )
        lay = self.problem.layout
        self.layout = {"width": lay.n_width, "data": lay.n_data, "depth": lay.n_depth}
        self.checkpoints = Checkpoints(
            run_dir / "checkpoints",
            self.problem.net,
            self.problem.layout,
            keep=config.output.keep_checkpoints,
        )
        self.manifest = self.state = None
        self.controls_only = False
        self.warnings: list[str] = []  # damaged checkpoints skipped (rank 0), said in open()
        self.kept: dict[str, list] = {}  # the logs' records up to the checkpoint (rank 0)
        if self.mode == "resume":
            try:
                self._find_resume_point()
            except BaseException:
                self.trainer.destroy()
                self.problem.destroy()
                raise
        self.offset, self.t0 = 0.0, time.perf_counter()
        self.last_checkpoint = None
        self.in_levels = False  # training the coarse levels of training.levels
        # the coarse levels' record: a resumed run keeps its checkpoint's (not retrained)
        levels = self.manifest.get("levels") if self.manifest else None
        self.levels_summary: list[dict] = list(levels) if isinstance(levels, list) else []

    def _check_outputs(self) -> None:
        """The files the run will write inside plots/ and paraview/ are not in the
        way (:meth:`RunDirectory.check_contents`), before anything is written.
        Collective."""
        check = by_flag(
            lambda: self.directory.check_contents(self.mode, self._output_entries()),
            self.directory_key,
        )
        on_root(self.comm, check)

    def _output_entries(self) -> dict[str, bool]:
        """What :meth:`_write_outputs` may write inside the run's folders, as
        ``output.*`` says: path → True for a folder (a .bp), False for a file."""
        out, entries = self.config.output, {}
        if out.paraview.enabled:
            entries |= {f"paraview/{n}.bp": True for n in ("states", "controls")}
            entries["paraview/controls.json"] = False
        if out.plots:
            names = ["curves", "hamiltonian", "decision_boundary", "features"]
            names += ["digits"] if _draws_digits(self.problem) else []
            entries |= {f"plots/{n}.png": False for n in names}
        return entries

    def _find_resume_point(self) -> None:
        """The configuration checked against the run's, the newest intact checkpoint
        loaded and the logs read: everything --resume needs, before anything is
        written. Collective."""
        comm, t = self.comm, self.config.training
        on_root(
            comm,
            lambda: check_resume_config(
                self.run_dir, self.config, checkpointed=bool(self.checkpoints.list())
            ),
        )
        self.manifest = self.checkpoints.latest(
            warn=self.warnings.append, prefer=self._on_the_chunk_grid
        )
        if self.manifest is not None:
            self.state, bound = self.checkpoints.load(self.manifest)
            self.controls_only = self.manifest.get("method", t.method) != t.method
            if not bound and not self.controls_only:
                self.warnings.append(
                    f"warning: the checkpoint of iteration {self.manifest['iteration']} was "
                    f"written on another layout ({self.manifest.get('layout')}): {t.method} "
                    "continues from its controls without its layout-bound state (e.g. the "
                    "one-shot's KKT vector and L-BFGS pairs), so its iterates differ from "
                    "an uninterrupted run's by more than round-off"
                )
            on_root(comm, self._read_logs)

    def _on_the_chunk_grid(self, manifest: dict) -> bool:
        """Whether a run may continue from ``manifest`` as an uninterrupted one would:
        any checkpoint for a method that resumes anywhere; for one whose internal state
        restarts at chunk boundaries (TAO), a checkpoint on the grid of
        ``checkpoint_every`` (a run stopped by max_iterations off the grid, then
        continued, resumes from the grid point before it and recomputes the rest)."""
        from pontryx.solver.training import method_class

        t, every = self.config.training, self.config.output.checkpoint_every
        if manifest.get("method", t.method) != t.method:
            return True
        if method_class(t.method).resumable_anywhere or manifest["iteration"] % every == 0:
            return True
        # a finished run that does not continue: nothing is recomputed
        done = manifest.get("reason") != MAX_ITERATIONS or manifest["iteration"] >= t.max_iterations
        return bool(manifest.get("finished")) and done

    def _read_logs(self) -> None:
        """The records of metrics.jsonl (and trajectory.jsonl) a resumed run keeps,
        read and checked before anything is written. Rank 0."""
        try:
            self.kept["metrics"] = rows = read_metrics(self.run_dir)
            k = self.manifest["iteration"]
            logged = {r.get("iteration") for r in rows}
            missing = next((i for i in range(1, k + 1) if i not in logged), None)
            if missing is not None:  # emptied or cut: the kept rows would be lost
                raise InputError(
                    f"{self.run_dir / 'metrics.jsonl'} has no record of iteration {missing}, "
                    f"before the checkpoint of iteration {k} (a damaged log)"
                )
            if self.config.output.trajectory_every:
                path = self.run_dir / TRAJECTORY
                header, self.kept["trajectory"] = read_trajectory(self.run_dir)
                if header is None and path.is_file() and path.stat().st_size:
                    raise InputError(f"{path} does not start with a pontryx trajectory header")
        except InputError as e:
            raise InputError(f"{e.message}; use --overwrite to start again", "--resume") from None

    def elapsed(self) -> float:
        """Seconds of training so far, over all restarts."""
        return self.offset + time.perf_counter() - self.t0

    # -- the run directory is written from here on ----------------------------
    def _open_directory(self) -> None:
        """The run directory opened (locked, an overwrite's old entries aside), the
        resolved config.yaml written and the run's entries registered. Rank 0."""
        self.directory.open(self.mode)
        self.directory.remove_stale_temporaries()
        write_text(
            self.run_dir / "config.yaml", _resolved_yaml(self.config, self.run_dir, self.source)
        )
        self.directory.register(
            "config.yaml", "train.log", "metrics.jsonl", "metrics.csv", "checkpoints"
        )
        if self.config.output.trajectory_every:
            self.directory.register(TRAJECTORY)

    def open(self) -> None:
        on_root(self.comm, by_flag(self._open_directory, self.directory_key))
        m = self.manifest
        if self.state is not None:
            self.trainer.restore(self.state, controls_only=self.controls_only)
            self.offset = float(m.get("elapsed", 0.0))
        self.t0 = time.perf_counter()
        keep = m["iteration"] if m else None
        self.last_checkpoint = keep
        kept = self.kept
        self.metrics = MetricsLog(self.run_dir, active=self.root)
        self.metrics.open(keep_until=keep, rows=kept.get("metrics"))
        self.trajectory = None
        if self.config.output.trajectory_every:
            p = self.problem
            self.trajectory = TrajectoryLog(self.run_dir, p.net, p.rf, active=self.root)
            self.trajectory.open(
                self.trainer.controls, keep_until=keep, rows=kept.get("trajectory")
            )
            if m is None:  # a fresh start records θ₀
                self.trajectory.record(0, self.trainer.controls, self.config.training.method)
        self.progress.open_log(self.run_dir / "train.log")
        for text in self.warnings:
            self.progress.say(text, error=True)
        say, c = self.progress.say, self.config
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")
        say(f"pontryx train {self.source} → {self.run_dir}  ({stamp}, {ranks(self.comm.size)})")
        for line in self.problem.describe():
            say("  " + line)
        resuming = ""
        if m:
            resuming = f"; resuming at iteration {m['iteration']}"
            if self.controls_only:
                resuming += f" (controls of the {m.get('method')} run)"
        say(
            f"  method: {c.training.method}, {c.training.max_iterations} iterations, "
            f"checkpoint every {c.output.checkpoint_every}{resuming}"
        )

    def started(self) -> None:
        """The new run has a result (its first iteration logged, or a finished or
        interrupted summary): an old run it overwrites goes. Until then an error —
        a non-finite J or a failed solve at θ₀ too — puts it back (:meth:`abandon`)."""
        if not self._started:
            self._started = True
            if self.root:
                self.directory.discard_replaced()

    def abandon(self) -> None:
        """The run failed before it started: an overwritten old run is put back as
        it was (the new run's files deleted). Rank 0; nothing collective."""
        if self.root and not self._started and self.mode == "overwrite":
            self.directory.restore_replaced()

    def handle(self, rec) -> None:
        """Log one iteration (the loop hands each over once, with its test metric),
        then stop here if any rank received a signal."""
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
        self.started()
        self.progress.record(row)
        every = self.config.output.trajectory_every
        if every and rec.iteration % every == 0:
            method = self.config.training.method
            self.trajectory.record(rec.iteration, self.trainer.controls, method)
        self.stop.check()

    def _checkpoint(self, trainer, reason, finished) -> None:
        every = self.config.output.checkpoint_every
        off_grid = not trainer.resumable_anywhere and trainer.iteration % every
        self.checkpoints.save(
            trainer.iteration,
            trainer.state(),
            trainer.state_kinds(),
            # a TAO run continued from off the grid resumes from the grid point before
            pin=trainer.iteration - trainer.iteration % every if off_grid else None,
            elapsed=self.elapsed(),
            finished=finished,
            reason=reason,
            method=self.config.training.method,
            **({"levels": self.levels_summary} if self.levels_summary else {}),
        )
        self.last_checkpoint = trainer.iteration

    def loop(self) -> str:
        """The one training loop in chunks ending at multiples of
        ``checkpoint_every``, a checkpoint after each; returns why training stopped."""
        trainer, t, m = self.trainer, self.config.training, self.manifest
        # a run that stopped at max_iterations continues when max_iterations was raised
        if (
            m
            and m.get("finished")
            and not self.controls_only
            and (m.get("reason") != MAX_ITERATIONS or trainer.iteration >= t.max_iterations)
        ):
            return m.get("reason")
        if m is None and t.levels:  # a fresh start: nested iteration from the coarse levels
            self.in_levels = True  # a signal now stops the run without a checkpoint
            check = abort_on_error(lambda k, rec: self.stop.check(), self.comm)
            train_coarse_levels(self.problem, on_level=self.level_done, on_record=check)
            self.in_levels = False
        result = train_loop(
            trainer,
            t.max_iterations,
            chunk=self.config.output.checkpoint_every,
            test_rf=self.problem.rf_test,
            test_every=t.test_every,
            on_record=abort_on_error(self.handle, self.comm),
            on_chunk=self._checkpoint,
        )
        return result.reason

    def level_done(self, k: int, done) -> None:
        """Report coarse level k of ``training.levels`` (progress and summary.json)."""
        last, net = done.history[-1] if done.history else None, done.level.net
        row = {  # plain JSON values: the row goes into the checkpoints' manifests too
            "dofs": int(net.space.N),
            "layers": int(net.layers),
            "iterations": int(done.result.trainer.iteration),
            "reason": str(done.result.reason),
            "loss": _number(last.loss if last else None),
            "test_metric": _number(last.test_metric if last else None),
            "time": float(done.seconds),
        }
        self.levels_summary.append(row)
        self.progress.say(
            f"level {k + 1}/{len(self.config.training.levels)}: N = {row['dofs']}, "
            f"{row['layers']} layers: {row['iterations']} iterations ({row['reason']}), "
            f"loss {row['loss']}, test {row['test_metric']}, {row['time']:.1f} s"
        )

    def non_finite(self, error: NonFiniteError) -> NonFiniteError:
        """Close the log, write the summary (the iterations done, and the scores of
        the last finite iterate if it has finite ones); the error to report (exit
        code 3). Collective."""
        if self.in_levels:  # the iteration is the coarse level's, not the run's
            k, count = len(self.levels_summary) + 1, len(self.config.training.levels)
            error = type(error)(f"{error} of coarse level {k}/{count} (training.levels)")
        reason = str(error).removeprefix("training: ")
        return self._stopped(error, "non-finite", reason, EXIT_NON_FINITE, self._finite_scores)

    def solve_failed(self, error: SolveError) -> SolveError:
        """An inner solve did not converge: close the log, write the summary
        (``not_converged``, the solve's reason; no scores, whose forward sweeps
        would need the same solve); the error to report (exit code 4). Collective."""
        return self._stopped(error, "not_converged", str(error), EXIT_NOT_CONVERGED)

    def _stopped(self, error, status: str, reason: str, code: int, scores=dict):
        """A run stopped by ``error``: the log closed, the summary written (``status``,
        ``reason``, ``scores()``, the exit code and the last complete checkpoint), a
        line in train.log; returns the error to report, of ``error``'s type, saying
        where the last complete checkpoint is. Collective."""
        self.metrics.close()
        last = self.last_checkpoint
        where = (
            f"the last complete checkpoint is iteration {last} in {self.run_dir / 'checkpoints'}"
            if last is not None
            else "no checkpoint was written"
        )
        reported = type(error)(f"{error}; training stopped, {where}")
        summary = self._summary(status, reason, scored=False)
        summary.update(scores())
        summary.update(exit_code=code, message=str(reported), last_checkpoint=last)
        self._write_summary(summary)
        self.progress.say(f"error: {error}")  # to train.log; the command line prints it
        return reported

    def _finite_scores(self) -> dict:
        """The scores (and weights' sparsity) of the trainer's controls after a
        non-finite stop — the last finite iterate, which the training loop puts
        back (``iterations`` in the summary) — or nothing if the controls or a
        score are not finite (never a NaN in summary.json). Collective."""
        comm, controls = self.comm, self.trainer.controls
        mine = all(np.isfinite(v).all() for v in controls.values())
        if not comm.allreduce(bool(mine), op=MPI.LAND):
            return {}
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            scores = {**evaluate(self.problem, controls), **self._weights()}
        return scores if comm.allreduce(_all_finite(scores), op=MPI.LAND) else {}

    def interrupted(self, stop: Interrupted) -> dict:
        """Every rank finished the same iteration: a checkpoint (methods that resume
        only at chunk boundaries resume from the last one), model.npz, summary."""
        trainer = self.trainer
        self.started()
        fine = not self.in_levels  # not stopped in the coarse levels
        if fine and trainer.resumable_anywhere and trainer.iteration != self.last_checkpoint:
            self._checkpoint(trainer, "interrupted", False)
        self.metrics.close()
        summary = self._summary("interrupted", "interrupted")
        summary["signal"] = stop.signum
        summary["exit_code"] = stop.exit_code
        summary["resume_from"] = self.last_checkpoint
        self._write_model()
        self._write_summary(summary)
        where = (
            f"from iteration {self.last_checkpoint}"
            if self.last_checkpoint is not None
            else "no checkpoint yet: it starts again"
            + (", with the coarse levels" if not fine else "")
        )
        stage = "in the coarse levels" if not fine else f"after iteration {trainer.iteration}"
        self.progress.say(f"{stop}: stopped {stage}; resume with --resume ({where})", error=True)
        return summary

    def _summary(self, status: str, reason: str, scored: bool = True) -> dict:
        """The summary of the trainer's iterate; ``scored``: with its train/test
        scores (:func:`.problem.evaluate`) and the weights' sparsity. Collective."""
        problem, comm = self.problem, self.comm
        controls, net = self.trainer.controls, problem.net
        levels = {"levels": self.levels_summary} if self.levels_summary else {}
        scores = evaluate(problem, controls) if scored else {}
        return {
            **levels,
            "status": status,
            "reason": reason,
            "iterations": int(self.trainer.iteration),
            "method": self.config.training.method,
            **scores,
            "metric": problem.metric_name,
            "grad_norm_metric": self.trainer.metric,
            "time": self.elapsed(),
            "ranks": comm.size,
            "layout": self.layout,
            "blas": blas.current(),
            "exchange": _exchange(problem.space),
            "dofs": problem.space.N,
            "trainable": {
                k: int(np.prod(canonical_shape(net, k, controls[k].shape))) for k in net.trainable
            },
            "versions": environment.versions(),
            **(self._weights() if scored else {}),
        }

    def _weights(self) -> dict:
        """summary["weights"] of a discrete-weight run: its kind and the fraction of
        zero kernel values. Collective."""
        discrete = getattr(self.trainer, "discrete", None)
        if discrete is None:
            return {}
        sparsity = discrete.sparsity(self.trainer.controls)
        return {"weights": {"kind": discrete.kind, "sparsity": sparsity}}

    def _write_model(self) -> None:
        problem, out = self.problem, self.config.output
        if out.model and problem.layout.writes:  # one (data group, depth rank) writes
            d = problem.dataset
            model_io.save_model(
                self.run_dir / "model.npz",
                problem.net,
                self.trainer.controls,
                task=d.task,
                input_shape=d.input_shape,
                classes=d.classes,
                noise=problem.noise,
                weights=self.trainer.options.get("weights", "real"),
            )
        if self.root and out.model:
            self.directory.register("model.npz")

    def _write_summary(self, summary: dict) -> None:
        if self.root:
            write_json(self.run_dir / "summary.json", summary)
            self.directory.register("summary.json")
        self.comm.Barrier()

    def finish(self, reason: str) -> dict:
        """Final evaluation, model.npz, ParaView files, plots and summary.json."""
        self.started()
        self.metrics.close()
        out = self.config.output
        status = status_of(reason, self.trainer)
        summary = self._summary(status, reason)
        summary["exit_code"] = EXIT_NOT_CONVERGED if status == "not_converged" else 0
        self._write_model()
        self._write_outputs()
        if self.root:
            self.directory.register(
                *(["paraview"] if out.paraview.enabled else []), *(["plots"] if out.plots else [])
            )
        summary["output_time"] = self.elapsed() - summary["time"]
        self._write_summary(summary)
        self._say_done(summary, reason, status)
        return summary

    def _write_outputs(self) -> None:
        """ParaView files and plots of the trained network (collective)."""
        problem, out = self.problem, self.config.output
        if problem.layout.writes:
            controls = self.trainer.controls
            if out.paraview.enabled:
                write_paraview(problem, controls, self.run_dir / "paraview")
            if out.plots:
                write_plots(problem, controls, self.run_dir / "plots", self.metrics.rows)

    def _say_done(self, summary: dict, reason: str, status: str) -> None:
        m = self.problem.metric_name
        self.progress.say(
            f"done: {summary['iterations']} iterations ({reason}; status {status}) in "
            f"{summary['time']:.1f} s; train {m} {summary['train'][m]:.4f}, "
            f"test {m} {summary['test'][m]:.4f}"
        )
        self.progress.say(f"results in {self.run_dir}/: {', '.join(self._results())}")

    def _results(self) -> list[str]:
        """The main results the run wrote, for its last line."""
        out = self.config.output
        return [
            "summary.json",
            "metrics.csv",
            *(["model.npz"] if out.model else []),
            *(["plots/"] if out.plots else []),
            *(["paraview/"] if out.paraview.enabled else []),
        ]

    def destroy(self) -> None:
        if getattr(self, "trajectory", None) is not None:
            self.trajectory.close()
        self.progress.close()
        if self.root:
            self.directory.close()
        self.trainer.destroy()
        self.problem.destroy()


def _number(x) -> float | None:
    return None if x is None else float(x)


def _all_finite(obj) -> bool:
    """No NaN or infinity among the numbers of a (nested) summary entry."""
    if isinstance(obj, dict):
        return all(_all_finite(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return all(_all_finite(v) for v in obj)
    if isinstance(obj, (float, np.floating)):
        return math.isfinite(obj)
    return True


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


def _draws_digits(problem: Problem) -> bool:
    """Whether the plots include digits.png (image data on a 2D or 3D mesh)."""
    gdim = problem.net.space.mesh.geometry.dim
    return len(problem.dataset.input_shape) == 2 and gdim in (2, 3)


def write_plots(problem: Problem, controls, directory: Path, rows: list[dict]) -> None:
    """PNG figures (evaluations collective on the width comm of data group 0); the
    files are those of :meth:`TrainingRun._output_entries`."""
    net, d = problem.net, problem.dataset
    draw = problem.space.comm.rank == 0
    # huge values (a loss of 1e300 on a log axis) draw what they can, without
    # NumPy's or matplotlib's overflow warnings on the terminal
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if draw:
            directory.mkdir(parents=True, exist_ok=True)
            plots.plot_curves(rows, directory / "curves.png", problem.metric_name)
            plots.plot_hamiltonian(rows, directory / "hamiltonian.png")
        boundary, features = directory / "decision_boundary.png", directory / "features.png"
        plots.plot_decision_boundary(net, controls, d, boundary, draw=draw)
        plots.plot_features(net, controls, d, features, draw=draw)
        if _draws_digits(problem):
            mesh = model_io.mesh_arrays(net.space)
            plots.plot_digits(net, controls, d, mesh, directory / "digits.png", draw=draw)
