"""The run directory: what it holds, when pontryx may write into it, and what it may delete.

::

    RUN_DIR/
      .pontryx/run.json  the marker of a pontryx run: every file and folder pontryx wrote
      .pontryx/lock      held (flock) by the run that is writing the directory
      config.yaml        the resolved configuration (every default filled in)
      metrics.jsonl      one JSON object per iteration   metrics.csv  the same as CSV
      trajectory.jsonl   projections of the controls (output.trajectory_every; see trajectory)
      analysis/          what ``pontryx analyze`` wrote (diffusion maps of the runs)
      train.log          what the run printed (all restarts)
      summary.json       status, final losses and metrics, time, ranks, versions
      model.npz          the trained model (see model_io)
      checkpoints/       iter-XXXXXXXX/ (see checkpoint)
      paraview/, plots/  ParaView files and PNG figures

Rules (:class:`RunDirectory`): a directory that is not empty is used only with
``resume`` (continue it) or ``overwrite`` (replace its results), and both only
if it is a pontryx run (it has the marker, or the files of a run written by
pontryx 0.1); pontryx deletes only what its marker lists as written by it,
never follows a symbolic link when deleting and refuses a run directory that is
one or that holds one in place of its own entries; an overwrite first moves the
old run's entries into ``.pontryx/replaced/`` (one rename each) and deletes them
only once the new run has started, so an interrupted overwrite never leaves a
half-deleted run; while a run writes, it holds ``.pontryx/lock``, and a second
run into the same directory fails at once. Every problem is an ``InputError``
keyed ``directory`` (or ``resume``) with a one-line message.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
from pathlib import Path

from pontryx.meshes.errors import InputError
from pontryx.solver.outputs.atomic import write_json

__all__ = ["ENTRIES", "MARKER", "RunDirectory", "check_run_directory", "prepare_run_directory"]

#: What a run writes, by name (files and folders directly in the run directory).
ENTRIES = (
    "config.yaml",
    "metrics.jsonl",
    "metrics.csv",
    "train.log",
    "summary.json",
    "model.npz",
    "checkpoints",
    "paraview",
    "plots",
    "trajectory.jsonl",
    "analysis",
)
MARKER = Path(".pontryx") / "run.json"
_LOCK = Path(".pontryx") / "lock"
_REPLACED = Path(".pontryx") / "replaced"


def _is_legacy_run(path: Path) -> bool:
    """A run directory written by pontryx 0.1 (no marker): its resolved config.yaml."""
    config = path / "config.yaml"
    if not config.is_file() or config.is_symlink():
        return False
    with contextlib.suppress(OSError, UnicodeDecodeError):
        head = config.read_text(encoding="utf-8")[:200]
        return head.startswith("# Resolved configuration") and "written by pontryx" in head
    return False


class RunDirectory:
    """One run directory and its policy (see the module docstring). Only world
    rank 0 touches the file system through it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.written: set[str] = set()
        self._lock_file = None

    # -- checks (nothing is created) --------------------------------------------------
    def check(self, *, resume: bool, overwrite: bool) -> str:
        """What to do: "fresh" (empty or new), "resume" or "overwrite"."""
        if resume and overwrite:
            raise InputError("resume and overwrite exclude each other", "resume")
        path = self.path
        if path.is_symlink():
            raise InputError(
                f"{str(path)!r} is a symbolic link; give the directory it points to", "directory"
            )
        parent = next((p for p in path.absolute().parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise InputError(f"{str(parent)!r} is not a directory", "directory")
        if path.exists() and not path.is_dir():
            raise InputError(f"{str(path)!r} exists and is not a directory", "directory")
        if not path.exists():
            if parent is None or not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"cannot create {str(path)!r} (not writable)", "directory")
            return "fresh"
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{str(path)!r} is not writable", "directory")
        if not any(path.iterdir()):
            return "fresh"
        if not (resume or overwrite):
            raise InputError(
                f"run directory {str(path)!r} is not empty; use --resume to continue it "
                "or --overwrite to replace its results",
                "directory",
            )
        if not self.is_run():
            raise InputError(
                f"{str(path)!r} is not a pontryx run directory (no {MARKER}); "
                "--resume and --overwrite only act on one — choose a new --output",
                "directory",
            )
        for name in ENTRIES:
            if (path / name).is_symlink():
                raise InputError(
                    f"{str(path / name)!r} is a symbolic link; pontryx writes and deletes "
                    "its own entries only — remove the link",
                    "directory",
                )
        return "resume" if resume else "overwrite"

    def is_run(self) -> bool:
        return (self.path / MARKER).is_file() or _is_legacy_run(self.path)

    def listed(self) -> list[str]:
        """The entries the marker lists as written by pontryx (for a 0.1 run: the
        standard entries that exist)."""
        marker = self.path / MARKER
        if marker.is_file():
            try:
                files = json.loads(marker.read_text(encoding="utf-8")).get("written", [])
            except (OSError, ValueError):
                files = []
            return [f for f in files if isinstance(f, str) and "/" not in f.strip("/")]
        return [name for name in ENTRIES if (self.path / name).exists()]

    # -- writing ----------------------------------------------------------------------
    def open(self, mode: str) -> None:
        """Create the directory, take the lock (or fail at once), and for an
        overwrite move the old run's entries aside. Rank 0."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / ".pontryx").mkdir(exist_ok=True)
        except OSError as e:
            raise InputError(
                f"cannot create {str(self.path)!r}: {e.strerror}", "directory"
            ) from None
        self._lock()
        if mode == "resume":
            self.written.update(self.listed())
        if mode == "overwrite":
            self._move_old_run_aside()
        self.register()

    def _lock(self) -> None:
        f = open(self.path / _LOCK, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            f.close()
            if e.errno in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise InputError(
                    f"another pontryx run is writing {str(self.path)!r} (it holds {_LOCK})",
                    "directory",
                ) from None
            raise
        self._lock_file = f

    def _move_old_run_aside(self) -> None:
        replaced = self.path / _REPLACED
        shutil.rmtree(replaced, ignore_errors=True)  # a previous overwrite that was cut
        replaced.mkdir(parents=True)
        for name in self.listed():
            entry = self.path / name
            if entry.is_symlink() or entry.exists():
                os.replace(entry, replaced / name)  # one rename, never through a link

    def discard_replaced(self) -> None:
        """Delete the old run's entries once the new run has started. Rank 0."""
        replaced = self.path / _REPLACED
        if replaced.is_dir() and not replaced.is_symlink():
            shutil.rmtree(replaced, ignore_errors=True)

    def register(self, *names: str) -> None:
        """Record entries as written by pontryx (in the marker, atomically)."""
        self.written.update(names)
        write_json(
            self.path / MARKER,
            {"format": "pontryx-run", "version": 1, "written": sorted(self.written)},
        )

    def attach(self, name: str) -> Path:
        """Record ``name`` as one of pontryx's own entries of an existing run (taking
        the lock for the moment: a run that is writing the directory is refused)
        and return its path, for what a command adds to a finished run (``pontryx
        analyze``'s ``analysis/``). Rank 0."""
        if not self.is_run():
            raise InputError(f"{str(self.path)!r} is not a pontryx run directory", "directory")
        entry = self.path / name
        if entry.is_symlink():
            raise InputError(f"{str(entry)!r} is a symbolic link; remove the link", "directory")
        (self.path / ".pontryx").mkdir(exist_ok=True)
        self._lock()
        try:
            self.written = set(self.listed())
            self.register(name)
        finally:
            self.close()
        return entry

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def remove_stale_temporaries(self) -> None:
        """Delete temporary files a killed run left (``.NAME.PID.tmp``). Rank 0."""
        for tmp in self.path.rglob(".*.tmp"):
            if tmp.is_file() and not tmp.is_symlink():
                with contextlib.suppress(OSError):
                    tmp.unlink()


def check_run_directory(directory: Path, *, resume: bool, overwrite: bool) -> str:
    """``RunDirectory(directory).check(...)``: "fresh", "resume" or "overwrite"."""
    return RunDirectory(directory).check(resume=resume, overwrite=overwrite)


def prepare_run_directory(path: Path, mode: str) -> RunDirectory:
    """Open a run directory for writing (rank 0): create it, lock it, move an old
    run aside for an overwrite. The caller deletes the old entries with
    :meth:`RunDirectory.discard_replaced` once its run has started."""
    run = RunDirectory(path)
    run.open(mode)
    return run
