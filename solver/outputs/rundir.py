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
only once the new run has started (:meth:`RunDirectory.restore_replaced` puts
them back if it fails before, the move itself is undone if a rename fails, and a
later ``--resume`` or ``--overwrite`` puts back an old run an overwrite killed
before its first iteration left there: :meth:`RunDirectory.recover_cut_overwrite`),
so an interrupted overwrite never leaves a half-deleted run; while a run
writes, it holds ``.pontryx/lock``, and a second run into the same directory
fails at once. Before anything is written,
:meth:`RunDirectory.check` also refuses a path that cannot be looked up or
created (a name too long), a marker that is not pontryx's (not a JSON object
whose ``written`` lists names of :data:`KINDS`: a hand-edited ``"."``, ``".."``,
``"/etc"`` or ``"notes.txt"`` refuses the whole directory rather than being
skipped, since the marker decides what an overwrite deletes), and an entry
the run will write into that has the wrong kind (a file where pontryx writes
a folder, or a folder, link or device where it writes a file) — and, given the
files the run will write inside its folders, :meth:`RunDirectory.check_contents`
the same for those (``plots/curves.png``, ``paraview/states.bp``). Every problem
is an ``InputError`` keyed ``directory`` (or ``resume``/``overwrite``) with a
one-line message.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
from pathlib import Path

from pontryx.meshes.errors import InputError, show
from pontryx.solver.outputs.atomic import write_json

__all__ = [
    "ENTRIES",
    "KINDS",
    "MARKER",
    "RunDirectory",
    "check_new_names",
    "check_run_directory",
    "lstat",
    "prepare_run_directory",
]

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
#: Every entry pontryx writes into a run directory (train, an inverse run, hjb,
#: analyze), by name: True for a folder, False for a regular file. A marker
#: lists names of these only.
KINDS = {
    **{name: name in ("checkpoints", "paraview", "plots", "analysis") for name in ENTRIES},
    "inverse.npz": False,
    "value.npz": False,
}
MARKER = Path(".pontryx") / "run.json"
#: The longest relative name a run writes (with margin): an overwrite's old
#: ``.pontryx/replaced/checkpoints/iter-XXXXXXXX/.local-RRRR.npz.PID.tmp``, ParaView's files.
LONGEST_NAME = 128
_LOCK = Path(".pontryx") / "lock"
_REPLACED = Path(".pontryx") / "replaced"


def lstat(path: Path, key: str = "directory") -> os.stat_result | None:
    """``os.lstat(path)``, or None if nothing is there; a path that cannot be
    looked up at all (a name too long, a loop, no permission) is an error keyed
    ``key``."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise InputError(f"cannot use {str(path)!r}: {e.strerror}", key) from None


def check_new_names(path: Path, parent: Path, key: str = "directory") -> None:
    """The names ``path`` adds below its existing ``parent`` fit the file system
    (an :class:`InputError` keyed ``key`` if one is too long)."""
    try:
        limit = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for name in path.absolute().relative_to(parent).parts:
        if len(os.fsencode(name)) > limit:
            raise InputError(
                f"cannot create {str(path)!r}: a name in it is longer than {limit} bytes",
                key,
            )


def _is_legacy_run(path: Path) -> bool:
    """A run directory written by pontryx 0.1 (no marker): its resolved config.yaml."""
    config = path / "config.yaml"
    if not config.is_file() or config.is_symlink():
        return False
    with contextlib.suppress(OSError, UnicodeDecodeError):
        head = config.read_text(encoding="utf-8")[:200]
        return head.startswith("# Resolved configuration") and "written by pontryx" in head
    return False


def read_marker(marker: Path, key: str = "directory") -> list[str]:
    """The entries a marker lists as pontryx's own. A marker pontryx did not write
    as it is — not a JSON object, no list ``written``, or an entry that is not the
    name of one of :data:`KINDS` (``""``, ``"."``, ``".."``, ``".pontryx"``, a path,
    a user's file) — is an error naming the marker: an overwrite deletes what the
    marker lists, so a marker that cannot be trusted whole is not used at all
    (rather than skipping the entries that look wrong)."""
    advice = "pontryx deletes only its own entries — repair or remove the marker"
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        why = e.strerror if isinstance(e, OSError) else "not JSON text"
        raise InputError(f"{marker} is unreadable ({why}); {advice}", key) from None
    written = data.get("written") if isinstance(data, dict) else None
    if not isinstance(written, list):
        raise InputError(f"{marker} is not a pontryx run marker (no list 'written'); {advice}", key)
    for name in written:
        if not isinstance(name, str) or name not in KINDS:
            raise InputError(
                f"{marker} lists {show(name)}, not an entry pontryx writes; {advice}", key
            )
    return written


class RunDirectory:
    """One run directory and its policy (see the module docstring). Only world
    rank 0 touches the file system through it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.written: set[str] = set()
        self.moved_aside = False  # by this object's open("overwrite")
        self.created: Path | None = None  # the first folder open() made (this or a parent)
        self.opened = False  # open() took the lock: the directory is this object's run's
        self._lock_file = None

    # -- checks (nothing is created) --------------------------------------------------
    def check(self, *, resume: bool, overwrite: bool, resumable: bool = True) -> str:
        """What to do: "fresh" (empty or new), "resume" or "overwrite". With
        ``resumable=False`` (a command without ``--resume``: ``pontryx hjb``) the
        errors offer ``--overwrite`` alone."""
        if resume and overwrite:
            raise InputError("resume and overwrite exclude each other", "resume")
        path = self.path
        parents = path.absolute().parents
        self._check_not_inside_a_run(parents)
        self._check_path_length()
        parent = next((p for p in parents if lstat(p) is not None), None)
        if parent is not None and not parent.is_dir():
            raise InputError(f"{str(parent)!r} is not a directory", "directory")
        st = lstat(path)
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise InputError(
                f"{str(path)!r} is a symbolic link; give the directory it points to", "directory"
            )
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise InputError(f"{str(path)!r} exists and is not a directory", "directory")
        if st is None:
            if parent is None or not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"cannot create {str(path)!r} (not writable)", "directory")
            check_new_names(path, parent)
            return "fresh"
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(f"{str(path)!r} is not writable", "directory")
        if not any(path.iterdir()):
            return "fresh"
        if not (resume or overwrite):
            resume_it = "--resume to continue it or " if resumable else ""
            raise InputError(
                f"run directory {str(path)!r} is not empty; use {resume_it}--overwrite "
                "to replace its results",
                "directory",
            )
        self._check_own_folder("directory")
        self.recover_cut_overwrite()
        if not self.is_run():
            flags = "--resume and --overwrite only act" if resumable else "--overwrite only acts"
            raise InputError(
                f"{str(path)!r} is not a pontryx run directory (no {MARKER}); "
                f"{flags} on one — choose a new --output",
                "directory",
            )
        mode = "resume" if resume else "overwrite"
        self.listed(key=mode)  # the marker read and checked (one not pontryx's is refused)
        for name in KINDS:
            if (path / name).is_symlink():
                raise InputError(
                    f"{str(path / name)!r} is a symbolic link; pontryx writes and deletes "
                    "its own entries only — remove the link",
                    "directory",
                )
        # every entry of pontryx's names is of the kind pontryx writes: one of another
        # kind (a folder where it writes metrics.jsonl) is not pontryx's, and neither
        # --resume writes into it nor --overwrite deletes it
        self._check_kinds()
        return mode

    def _check_path_length(self) -> None:
        """Room below the run directory for the longest name pontryx writes there
        (``.pontryx/replaced/checkpoints/iter-…/.rows-….npz.PID.tmp``): a path near
        PATH_MAX failed half-way through the run (exit 5, a half-written run)."""
        here = os.fsencode(str(self.path.absolute()))
        try:
            most = os.pathconf("/", "PC_PATH_MAX")
        except (OSError, ValueError):
            most = 4096
        if len(here) + 1 + LONGEST_NAME >= most:
            raise InputError(
                f"{show(str(self.path))} is too long a path ({len(here)} bytes): pontryx writes "
                f"names of up to {LONGEST_NAME} bytes below it, within the {most} of PATH_MAX",
                "directory",
            )

    def _check_not_inside_a_run(self, parents) -> None:
        """The run directory is not inside a folder of another run's own (its
        ``plots/``, ``checkpoints/``, …, ``.pontryx/``), which an overwrite of that
        run would replace with everything in it."""
        here = self.path.absolute()
        for run in parents:
            own = here.relative_to(run).parts[0]
            if (KINDS.get(own) or own == ".pontryx") and (run / MARKER).is_file():
                raise InputError(
                    f"{str(self.path)!r} is inside {own}/ of the pontryx run {str(run)!r}, "
                    "which an overwrite of that run replaces; choose another --output",
                    "directory",
                )

    def recover_cut_overwrite(self) -> bool:
        """Put back the old run of an overwrite that was cut (killed, or a node lost,
        before its new run's first iteration): its entries still wait in
        ``.pontryx/replaced/``, which only a started run deletes. The cut run's own
        entries (those its marker lists) go, the old run's come back, as
        :meth:`restore_replaced` does for an overwrite that fails. Not while a run
        holds the lock (an overwrite in progress): that is refused as by
        :meth:`open`. Whether there was one. Rank 0."""
        replaced = self.path / _REPLACED
        if replaced.is_symlink() or not replaced.is_dir() or not any(replaced.iterdir()):
            return False
        self._lock()
        try:
            self.written = set(self.listed())
            self._put_back(replaced)
        finally:
            self.close()
        return True

    def _check_own_folder(self, key: str) -> None:
        """``.pontryx`` (marker, lock, an overwrite's old run) is absent or a
        folder, and its marker absent or a regular file — not a link, through which
        pontryx would write elsewhere."""
        for name, folder, use in (
            (Path(".pontryx"), True, "keeps its marker and lock there and writes through no link"),
            (MARKER, False, "writes its marker there"),
        ):
            st = lstat(self.path / name)
            if st is None or (stat.S_ISDIR if folder else stat.S_ISREG)(st.st_mode):
                continue
            kind = "not a folder" if folder else "not a regular file"
            what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else kind
            raise InputError(f"{str(self.path / name)!r} is {what}; pontryx {use} — remove it", key)

    def _check_kinds(self) -> None:
        """Every entry pontryx may write into is of its kind (a folder or a regular
        file), so that a run does not fail on it half-way."""
        for name, folder in KINDS.items():
            self._check_kind(name, folder)

    def _check_kind(self, name: str, folder: bool) -> None:
        """``name`` (relative to the run directory) is absent or of its kind: a
        folder, or a regular file (not a link, device, …)."""
        st = lstat(self.path / name)
        if st is None or (stat.S_ISDIR if folder else stat.S_ISREG)(st.st_mode):
            return
        kind = "folder" if folder else "regular file"
        raise InputError(
            f"{str(self.path / name)!r} is not a {kind}, but pontryx writes its "
            f"{name} there — move it away",
            "directory",
        )

    def check_contents(self, mode: str, entries: dict[str, bool]) -> None:
        """The entries a run will write inside its folders (``"plots/curves.png":
        False`` for a file, True for a folder such as ``"paraview/states.bp"``) are
        absent or of their kind, checked before anything is written (as
        :meth:`check` does for the entries of the run directory itself), for
        ``--overwrite`` too: one of another kind is not pontryx's, and moving its
        folder aside would delete it. Rank 0."""
        if mode == "fresh":  # a new or empty directory
            return
        for name, folder in entries.items():
            self._check_kind(name, folder)

    def is_run(self) -> bool:
        return (self.path / MARKER).is_file() or _is_legacy_run(self.path)

    def listed(self, key: str = "directory") -> list[str]:
        """The entries the marker lists as written by pontryx (:func:`read_marker`;
        for a 0.1 run: the standard entries that exist)."""
        marker = self.path / MARKER
        if marker.is_file():
            return read_marker(marker, key)
        return [name for name in ENTRIES if (self.path / name).exists()]

    # -- writing ----------------------------------------------------------------------
    def open(self, mode: str) -> None:
        """Create the directory, take the lock (or fail at once), and for an
        overwrite move the old run's entries aside. Rank 0."""
        try:
            missing = [p for p in [self.path, *self.path.absolute().parents] if lstat(p) is None]
            self.created = missing[-1] if missing else None
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / ".pontryx").mkdir(exist_ok=True)
        except OSError as e:
            raise InputError(
                f"cannot create {str(self.path)!r}: {e.strerror}", "directory"
            ) from None
        self._lock()
        self.opened = True
        if mode == "resume":
            self.written.update(self.listed())
        if mode == "overwrite":
            self._move_old_run_aside()
        self.register()

    def _lock(self) -> None:
        try:  # never through a link (O_NOFOLLOW: ELOOP)
            fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            f = os.fdopen(fd, "a+")
        except OSError as e:  # a folder or link in its place, no permission: nothing written
            why = "a symbolic link" if e.errno == errno.ELOOP else (e.strerror or str(e))
            lock = str(self.path / _LOCK)
            raise InputError(f"cannot open {lock!r}: {why}", "directory") from None
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
        if replaced.is_symlink() or (replaced.exists() and not replaced.is_dir()):
            replaced.unlink()  # pontryx's own name, never followed
        shutil.rmtree(replaced, ignore_errors=True)  # a previous overwrite that was cut
        replaced.mkdir(parents=True)
        moved = []
        try:
            for name in self.listed():
                entry = self.path / name
                if entry.is_symlink() or entry.exists():
                    os.replace(entry, replaced / name)  # one rename, never through a link
                    moved.append(name)
        except OSError:  # (a mount point, a permission): what moved goes back
            for name in moved:
                os.replace(replaced / name, self.path / name)
            replaced.rmdir()
            raise
        self.moved_aside = True

    def discard_replaced(self) -> None:
        """Delete the old run's entries once the new run has started. Rank 0."""
        replaced = self.path / _REPLACED
        if replaced.is_dir() and not replaced.is_symlink():
            shutil.rmtree(replaced, ignore_errors=True)

    def restore_replaced(self) -> bool:
        """Undo an overwrite whose new run failed before it started (an error before
        its first iteration): delete the entries the new run wrote and move the old
        run's back from ``.pontryx/replaced/``; whether there was one. Rank 0."""
        replaced = self.path / _REPLACED
        if not self.moved_aside or not replaced.is_dir() or replaced.is_symlink():
            return False
        self._put_back(replaced)
        return True

    def remove_new_run(self) -> None:
        """Delete what a fresh run (one opened in an empty or new directory) wrote —
        its registered entries and ``.pontryx/``, and the directory if this object
        made it — when it failed or was stopped before its outputs were complete
        (``pontryx hjb``: nothing of such a run is kept); nothing if open() did not
        take the lock (another run's directory). Rank 0."""
        if not self.opened:
            return
        self.close()
        for name in [*self.written, ".pontryx"]:
            entry = self.path / name
            if entry.is_symlink() or (entry.exists() and not entry.is_dir()):
                entry.unlink()
            elif entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
        self.written = set()
        if self.created is not None:  # the folders open() made, up to the first of them
            folder = self.path
            with contextlib.suppress(OSError):  # (unless something else was put there)
                while True:
                    folder.rmdir()
                    if folder.absolute() == self.created.absolute():
                        break
                    folder = folder.parent

    def _put_back(self, replaced: Path) -> None:
        """The old run's entries from ``replaced`` back in place, the entries the new
        run wrote (``written``) deleted first; the marker lists the old run's."""
        old = [entry.name for entry in replaced.iterdir()]
        # the new run's own entries, and what it made at the old run's names before
        # registering them (it came after the move aside), never through a link
        for name in self.written | {name for name in old if name in KINDS}:
            entry = self.path / name
            if entry.is_symlink() or (entry.exists() and not entry.is_dir()):
                entry.unlink()
            elif entry.is_dir():
                shutil.rmtree(entry)
        for name in old:
            os.replace(replaced / name, self.path / name)
        replaced.rmdir()
        self.written = {name for name in old if name in KINDS}
        self.register()

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
        self._check_own_folder("directory")
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
        """Delete the temporary files a killed run left: ``.NAME.PID.tmp`` of an
        entry NAME of :data:`KINDS` in the run directory and of the marker in
        ``.pontryx/``, and any ``.NAME.PID.tmp`` inside the folders the marker lists
        as pontryx's own — nothing of a user's (a ``.draft.tmp`` of theirs, in
        the run directory or a folder of theirs, stays). Rank 0."""
        own = {f".{name}" for name in KINDS} | {f".{MARKER.name}"}
        places = [(self.path, own), (self.path / ".pontryx", own)]
        places += [(self.path / n, None) for n in self.listed() if KINDS.get(n)]
        for folder, names in places:
            if not folder.is_dir() or folder.is_symlink():
                continue
            found = folder.glob(".*.tmp") if names is not None else folder.rglob(".*.tmp")
            for tmp in found:
                stem, _, pid = tmp.name[: -len(".tmp")].rpartition(".")
                if not (pid.isdigit() and stem and (names is None or stem in names)):
                    continue
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
