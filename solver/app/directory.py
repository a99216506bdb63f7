"""The run directory seen from the command line: checked on rank 0 (one file
system, one verdict), its errors keyed by the flag they are about (``--output``,
``--resume``, ``--overwrite``) and raised on every rank alike."""

from __future__ import annotations

from mpi4py import MPI

from pontryx.meshes.errors import InputError
from pontryx.solver.outputs.rundir import RunDirectory

__all__ = ["by_flag", "check_directory", "flag_key", "on_root"]


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


#: where the run directory was given: ``--output`` (or the default), or the
#: configuration's ``output.directory`` (set by the command line, :func:`given_by`)
_DIRECTORY = {"key": "--output"}


def given_by(key: str) -> None:
    """Key the errors about the run directory by ``key`` from now on."""
    _DIRECTORY["key"] = key


def flag_key(e: InputError) -> InputError:
    """A run-directory error keyed by what gave the directory (``--output`` or
    ``output.directory``), or by the command-line flag it is about."""
    return InputError(e.message, _DIRECTORY["key"] if e.key == "directory" else f"--{e.key}")


def by_flag(action):
    """``action`` with its run-directory errors keyed by :func:`flag_key`."""

    def keyed():
        try:
            return action()
        except InputError as e:
            raise flag_key(e) from None

    return keyed


def check_directory(
    directory: RunDirectory, comm: MPI.Comm, *, resume: bool, overwrite: bool, resumable=True
):
    """:meth:`RunDirectory.check` on rank 0, its mode (or its error, keyed by
    :func:`flag_key`) on every rank. Collective."""
    return on_root(
        comm,
        by_flag(lambda: directory.check(resume=resume, overwrite=overwrite, resumable=resumable)),
    )
