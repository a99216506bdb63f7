"""Checkpoints: the trainer's state every K iterations, written atomically.

Layout of ``RUN_DIR/checkpoints/``::

    iter-00000010/rank-0000.npz    Trainer.state() of each rank (its local arrays:
    iter-00000010/rank-0001.npz    controls, optimiser memory, random-number state)
    iter-00000010/manifest.json    written last, by rank 0: iteration, ranks, layout, …

Each rank writes its file to a temporary name and renames it (``os.replace``);
after a barrier rank 0 writes the manifest the same way. A checkpoint exists
once its manifest does, so a run killed at any moment (even by SIGKILL) leaves
the previous checkpoint intact. Only the newest ``keep`` checkpoints are kept.
Restoring needs the same number of ranks and the same width × data layout.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from pontryx.meshes.errors import InputError
from pontryx.solver.outputs.atomic import atomic_path, write_json

__all__ = ["Checkpoints"]

_DIR = re.compile(r"^iter-(\d{8,})$")


class Checkpoints:
    """The checkpoints of one run directory, for the ranks of ``comm``."""

    def __init__(self, directory: str | Path, comm, keep: int = 2):
        self.directory = Path(directory)
        self.comm = comm
        self.keep = int(keep)

    def _dir(self, iteration: int) -> Path:
        return self.directory / f"iter-{iteration:08d}"

    def save(self, iteration: int, state: dict[str, np.ndarray], **info) -> Path:
        """Write ``state`` (this rank's arrays) for ``iteration``. Collective."""
        comm = self.comm
        target = self._dir(iteration)
        if comm.rank == 0:
            target.mkdir(parents=True, exist_ok=True)
            stale = target / "manifest.json"
            if stale.exists():
                stale.unlink()  # being rewritten: not a checkpoint until the new manifest
        comm.Barrier()
        with atomic_path(target / f"rank-{comm.rank:04d}.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, **state)
        comm.Barrier()
        if comm.rank == 0:
            manifest = {"iteration": int(iteration), "ranks": comm.size, **info}
            write_json(target / "manifest.json", manifest)
            self._prune()
        comm.Barrier()
        return target

    def _prune(self) -> None:
        complete = self.list()
        for _, path in complete[: max(len(complete) - self.keep, 0)]:
            shutil.rmtree(path, ignore_errors=True)
        newest = complete[-1][0] if complete else -1
        for path in self.directory.glob("iter-*"):  # incomplete ones older than the newest
            m = _DIR.match(path.name)
            if m and int(m.group(1)) < newest and not (path / "manifest.json").exists():
                shutil.rmtree(path, ignore_errors=True)

    def list(self) -> list[tuple[int, Path]]:
        """Complete checkpoints (those with a manifest), oldest first."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            m = _DIR.match(path.name)
            if m and (path / "manifest.json").is_file():
                found.append((int(m.group(1)), path))
        return sorted(found)

    def latest(self) -> dict | None:
        """The manifest of the newest complete checkpoint (rank 0 decides), or None."""
        manifest = None
        if self.comm.rank == 0:
            complete = self.list()
            if complete:
                path = complete[-1][1]
                manifest = json.loads((path / "manifest.json").read_text())
                manifest["path"] = str(path)
        return self.comm.bcast(manifest, root=0)

    def load(self, manifest: dict, layout: dict | None = None) -> dict[str, np.ndarray]:
        """This rank's state from the checkpoint ``manifest`` (from :meth:`latest`)."""
        comm = self.comm
        if manifest["ranks"] != comm.size:
            raise InputError(
                f"the checkpoint at iteration {manifest['iteration']} was written "
                f"on {manifest['ranks']} MPI ranks; restart on {manifest['ranks']}, "
                f"not {comm.size}",
                "--resume",
            )
        if layout is not None and manifest.get("layout", layout) != layout:
            raise InputError(
                f"the checkpoint has the layout {manifest['layout']}, this run {layout}", "--resume"
            )
        path = Path(manifest["path"]) / f"rank-{comm.rank:04d}.npz"
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
