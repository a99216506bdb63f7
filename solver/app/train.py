"""One ``pontryx train``: the run of a configuration from start to summary.

:func:`train` picks the run — a :class:`~.run.TrainingRun`, or for a
configuration with an ``inverse:`` section an :class:`~.inverse_run.InverseRun`
(the same loop with the inverse problem's outputs) — opens it, runs its loop
under the stop signals (:mod:`.signals`) and ends it: finished, interrupted
(checkpoint and model written), non-finite or stopped by an inner solve that did
not converge (the last complete checkpoint kept).
"""

from __future__ import annotations

from pathlib import Path

from mpi4py import MPI

import numpy as np

from pontryx.solver.app.directory import OUTPUT
from pontryx.solver.app.inverse_run import InverseRun
from pontryx.solver.app.run import TrainingRun
from pontryx.solver.app.signals import Interrupted, StopRequest
from pontryx.solver.config.schema import Config
from pontryx.solver.errors import NonFiniteError, SolveError, caused_by

__all__ = ["train"]


def train(
    config: Config,
    run_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    source: str = "",
    comm: MPI.Comm = MPI.COMM_WORLD,
    max_memory: float | None = None,
    directory_key: str = OUTPUT,
) -> dict:
    """A complete training run into ``run_dir``; returns the summary (on every rank),
    whose ``exit_code`` is what ``pontryx train`` exits with. Errors about the run
    directory are keyed by ``directory_key`` (what gave it: ``--output`` or
    ``output.directory``).

    Bad input raises InputError before anything is written; a non-finite loss or
    gradient raises NonFiniteError, and an inner PETSc solve that does not converge
    SolveError, after keeping the last complete checkpoint. A
    configuration with an ``inverse:`` section runs as an :class:`~.inverse_run.InverseRun`."""
    cls = TrainingRun if config.inverse is None else InverseRun
    run = cls(
        config,
        run_dir,
        resume=resume,
        overwrite=overwrite,
        quiet=quiet,
        source=source,
        comm=comm,
        max_memory=max_memory,
        directory_key=directory_key,
    )
    try:
        with StopRequest(comm) as run.stop:
            run.open()
            try:
                # overflow on the way to a non-finite loss is reported once, as NonFiniteError
                with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                    reason = run.loop()
            except NonFiniteError as e:
                raise run.non_finite(e) from None
            except Interrupted as stop:
                return run.interrupted(stop)
            except Exception as e:  # a SolveError, or a PETSc solve's error caused by one
                failed = caused_by(e, SolveError)
                if failed is None:
                    raise
                raise run.solve_failed(failed) from None
            # a signal from here on is noted and the outputs are finished: the run
            # ends as it finished (a second signal ends the process at once)
            return run.finish(reason)
    except BaseException:
        run.abandon()  # an overwrite that never started: the old run back as it was
        raise
    finally:
        run.destroy()
