"""The ``pontryx`` console script (and ``python -m pontryx.solver``).

Light on purpose: it sets the stop signals' start-up handlers before the command
line's modules load (NumPy, PETSc, DOLFINx: about a second), so that Ctrl-C or a
batch system's SIGTERM then ends the command at once with 128 + the signal and
one line, not a traceback of an import; :func:`.cli.main` then takes the signals
over, and once it returns they are ignored while the interpreter, PETSc and MPI
finalise (the command is over and its exit code decided: a signal there killed a
rank with it, "BAD TERMINATION" under ``mpirun``, a finished run's exit code lost).
"""

from __future__ import annotations

import os
import signal
import sys

from pontryx.solver.app.signals import SIGNALS

__all__ = ["console"]


def _starting(signum, frame):
    if os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")) == "0":
        print("interrupted", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def console() -> int:
    """Run ``pontryx`` with ``sys.argv``; returns its exit code."""
    for s in SIGNALS:
        signal.signal(s, _starting)
    for stream in (sys.stdout, sys.stderr):  # θ, →, ‖∇J‖ on an ASCII terminal: escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    from pontryx.solver.app.cli import main

    return main(finally_ignore=True)
