"""Stopping a run cleanly on the signals batch systems send.

Slurm sends SIGTERM when a job hits its time limit or is cancelled (and, with
``--signal=B:USR1@…``, SIGUSR1 before); PBS sends SIGTERM; Ctrl-C is SIGINT;
``mpirun``/``srun`` pass them on to every rank. :class:`StopRequest` replaces
PETSc's own signal handler (which would print ``Caught signal number 15`` and
abort) by handlers that only note the signal; :meth:`StopRequest.requested`,
called by the training loop after every iteration, agrees over all ranks (one
Allreduce) so that every rank stops after the same iteration. A second signal
of the same kind ends the process at once (exit status 128 + signal): the first
one's delivery restores the default action (SA_RESETHAND), so this holds while
the main thread is in a long C call too.
"""

from __future__ import annotations

import os
import signal

from mpi4py import MPI

__all__ = ["SIGNALS", "Interrupted", "StopRequest"]

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Interrupted(Exception):
    """Training stopped on a signal after a complete iteration (exit 128 + signal)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


#: sigaction's flag that restores the default action as a signal is delivered
SA_RESETHAND = 0x80000000


def _reset_on_delivery(signum: int) -> bool:
    """Add SA_RESETHAND to the installed handler of ``signum`` (Linux, glibc's
    ``struct sigaction``: handler, 1024-bit mask, flags): the kernel restores the
    default action as the first signal is delivered, so a second one ends the
    process at once (killed by it: exit status 128 + signal) even while the main
    thread is in a long C call — PETSc's TAO between two callbacks, a GEMM —
    where Python would run its handler only later, for both signals together
    (CPython notes a pending signal once). Whether it was set; where it cannot
    be (another platform), :meth:`StopRequest._handle` ends the process on the
    second signal it sees."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        size = ctypes.sizeof(ctypes.c_void_p) + 128 + 8 + ctypes.sizeof(ctypes.c_void_p)
        action = ctypes.create_string_buffer(size)
        if libc.sigaction(signum, None, action) != 0:
            return False
        offset = ctypes.sizeof(ctypes.c_void_p) + 128  # after the handler and the mask
        flags = ctypes.c_int.from_buffer(action, offset)
        flags.value |= ctypes.c_int(SA_RESETHAND).value
        return libc.sigaction(signum, action, None) == 0
    except (OSError, AttributeError):
        return False


class StopRequest:
    """Signal handlers for the duration of a run (a context manager)."""

    def __init__(self, comm: MPI.Comm):
        self.comm = comm
        self.signum = 0
        self._previous = {}

    def _handle(self, signum, frame):
        if self.signum == signum:  # the second time (where the reset was not made): now
            os._exit(128 + signum)
        self.signum = self.signum or signum

    def __enter__(self) -> StopRequest:
        from petsc4py import PETSc

        PETSc.Sys.popSignalHandler()  # PETSc's handler would abort with its own message
        # (popping it resets every signal PETSc caught to the default: SIGPIPE back to
        # Python's "ignore", so a closed stdout is an EPIPE the command line absorbs)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
            _reset_on_delivery(s)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()

    def requested(self) -> int:
        """The signal any rank received (0: none). Collective."""
        return int(self.comm.allreduce(self.signum, op=MPI.MAX))

    def check(self) -> None:
        """Raise :class:`Interrupted` on every rank if any rank received a signal."""
        signum = self.requested()
        if signum:
            raise Interrupted(signum)
