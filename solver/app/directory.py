"""The run directory seen from the command line: checked on rank 0 (one file
system, one verdict), its errors keyed by the flag they are about (``--output``,
``--resume``, ``--overwrite``) and raised on every rank alike."""

from __future__ import annotations

from mpi4py import MPI

from pontryx.meshes.errors import InputError
from pontryx.solver.outputs.rundir import RunDirectory

__all__ = ["OUTPUT", "by_flag", "check_directory", "flag_key", "on_root"]


def on_root(comm: MPI.Comm, action):
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


#: what gives the run directory by default (``--output``, or its default ``runs/NAME``);
#: ``output.directory`` where the configuration gives it
OUTPUT = "--output"


def flag_key(e: InputError, key: str = OUTPUT) -> InputError:
    """A run-directory error keyed by what gave the directory (``key``: ``--output``
    or ``output.directory``), or by the command-line flag it is about."""
    return InputError(e.message, key if e.key == "directory" else f"--{e.key}")


def by_flag(action, key: str = OUTPUT):
    """``action`` with its run-directory errors keyed by :func:`flag_key`."""

    def keyed():
        try:
            return action()
        except InputError as e:
            raise flag_key(e, key) from None

    return keyed


def check_directory(
    directory: RunDirectory,
    comm: MPI.Comm,
    *,
    resume: bool,
    overwrite: bool,
    resumable=True,
    key: str = OUTPUT,
):
    """:meth:`RunDirectory.check` on rank 0, its mode (or its error, keyed by
    :func:`flag_key` with ``key``) on every rank. Collective."""

    def check():
        return directory.check(resume=resume, overwrite=overwrite, resumable=resumable)

    return on_root(comm, by_flag(check, key))
