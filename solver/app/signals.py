"""Stopping a run cleanly on the signals batch systems send.

Slurm sends SIGTERM when a job hits its time limit or is cancelled (and, with
``--signal=B:USR1@…``, SIGUSR1 before); PBS sends SIGTERM; Ctrl-C is SIGINT;
``mpirun``/``srun`` pass them on to every rank. :class:`StopRequest` replaces
PETSc's own signal handler (which would print ``Caught signal number 15`` and
abort) by handlers that only note the signal; :meth:`StopRequest.requested`,
called by the training loop after every iteration, agrees over all ranks (one
Allreduce) so that every rank stops after the same iteration. A second signal
of the same kind ends the process at once (killed by it: exit status 128 +
signal), also while the main thread is in a long C call, where CPython runs its
handlers only afterwards: a watcher thread reads every delivery from the wakeup
socket the C-level handler writes to (:func:`signal.set_wakeup_fd`), as soon as
the call releases the interpreter lock (NumPy's BLAS and LAPACK do; one that
holds it delays the second signal until it returns). A second
delivery within :data:`DUPLICATE` seconds of the first is the same request sent
twice, not a second one: coreutils' ``timeout`` signals the command and then its
process group, and under a batch system the launcher forwards a signal the
ranks already received (the first delivery had reset the handler, SA_RESETHAND,
and such a duplicate killed the process with nothing saved).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import threading
import time

from mpi4py import MPI

__all__ = ["DUPLICATE", "SIGNALS", "Interrupted", "StopRequest"]

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
#: seconds within which a second delivery of a signal is the first one sent twice
DUPLICATE = 0.05


class Interrupted(Exception):
    """Training stopped on a signal after a complete iteration (exit 128 + signal)."""

    def __init__(self, signum: int):
        self.signum = int(signum)
        super().__init__(f"interrupted by {signal.Signals(self.signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _die_by(signum: int) -> None:
    """End the process at once, killed by ``signum`` (its default action restored
    through libc: Python's signal.signal works in the main thread only)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.signal(signum, None)  # SIG_DFL
        os.kill(os.getpid(), signum)
        time.sleep(1.0)  # (delivered to some thread meanwhile)
    finally:
        os._exit(128 + signum)


class StopRequest:
    """Signal handlers for the duration of a run (a context manager)."""

    def __init__(self, comm: MPI.Comm):
        self.comm = comm
        self.signum = 0
        self._previous = {}

    def _handle(self, signum, frame):
        self.signum = self.signum or signum

    def _watch(self, wakeup: socket.socket) -> None:
        """Every delivery, as the C-level handler wrote it: a second one of a signal
        later than :data:`DUPLICATE` after its first ends the process."""
        first: dict[int, float] = {}
        with wakeup:
            while True:
                try:
                    data = wakeup.recv(64)
                except OSError:
                    return
                if not data:  # the writer closed by __exit__
                    return
                now = time.monotonic()
                for signum in data:
                    if signum in SIGNALS and now - first.setdefault(signum, now) > DUPLICATE:
                        _die_by(signum)

    def __enter__(self) -> StopRequest:
        from petsc4py import PETSc

        PETSc.Sys.popSignalHandler()  # PETSc's handler would abort with its own message
        # (popping it resets every signal PETSc caught to the default: SIGPIPE back to
        # Python's "ignore", so a closed stdout is an EPIPE the command line absorbs)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        reader, self._writer = socket.socketpair()
        self._writer.setblocking(False)
        self._wakeup_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        threading.Thread(target=self._watch, args=(reader,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        signal.set_wakeup_fd(self._wakeup_fd)
        self._writer.close()  # the watcher's recv ends

    def requested(self) -> int:
        """The signal any rank received (0: none). Collective."""
        return int(self.comm.allreduce(self.signum, op=MPI.MAX))

    def check(self) -> None:
        """Raise :class:`Interrupted` on every rank if any rank received a signal."""
        signum = self.requested()
        if signum:
            raise Interrupted(signum)
