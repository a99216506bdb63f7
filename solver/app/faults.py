"""Ending a job cleanly when something goes wrong on one rank, and the fault hook
the tests use.

``PONTRYX_FAULT_INJECT`` makes a run fail on purpose: ``RANK:ITERATION`` raises
an exception on world rank RANK when iteration ITERATION is logged (the other
ranks are then waiting in a collective; the job must still end),
``nan:ITERATION`` turns the loss of that iteration into NaN on every rank (the
non-finite stop, exit code 3).
"""

from __future__ import annotations

import os
import re
import sys
import time
import traceback

from mpi4py import MPI

from pontryx.meshes.errors import InputError, show
from pontryx.solver.errors import NonFiniteError

__all__ = ["abort", "abort_on_error", "fault_plan"]

#: Seconds an aborting rank waits after its last message, so that the MPI
#: launcher forwards it before it tears the job down.
FLUSH_SECONDS = 0.5


def abort(code: int) -> None:
    """End the whole job from this rank (its messages printed first)."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(FLUSH_SECONDS)
    MPI.COMM_WORLD.Abort(code)


def fault_plan() -> tuple[int | str, int] | None:
    """Parse ``PONTRYX_FAULT_INJECT`` (``RANK:ITERATION`` or ``nan:ITERATION``)."""
    text = os.environ.get("PONTRYX_FAULT_INJECT", "").strip()
    if not text:
        return None
    m = re.fullmatch(r"(\d+|nan):(\d+)", text)
    if m is None:
        raise InputError(
            f"expected RANK:ITERATION or nan:ITERATION, got {show(text)}", "PONTRYX_FAULT_INJECT"
        )
    who = m.group(1) if m.group(1) == "nan" else int(m.group(1))
    return who, int(m.group(2))


def abort_on_error(callback, comm: MPI.Comm):
    """``callback`` for use inside PETSc solver callbacks (e.g. a TAO monitor).

    An exception there on one rank cannot travel back through TaoSolve while
    the other ranks wait in the solver's collectives, so with several ranks an
    unexpected exception ends the job at once (traceback, one line, MPI Abort).
    :class:`NonFiniteError` and :class:`Interrupted` are raised on every rank alike
    (after a collective agreement) and pass through."""
    from pontryx.solver.app.signals import Interrupted

    def guarded(*args):
        try:
            return callback(*args)
        except (NonFiniteError, Interrupted):
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
            abort(1)

    return guarded
