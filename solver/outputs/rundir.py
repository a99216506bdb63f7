"""The run directory: what it holds and when pontryx may write into it.

::

    RUN_DIR/
      config.yaml        the resolved configuration (every default filled in)
      metrics.jsonl      one JSON object per iteration
      metrics.csv        the same as CSV
      summary.json       final losses, metrics, time, ranks, versions
      model.npz          the trained model (see model_io)
      checkpoints/       iter-XXXXXXXX/{rank-RRRR.npz, manifest.json}
      paraview/          states.bp, controls.bp (VTX/ADIOS2, open in ParaView)
      plots/             PNG figures

Existing output is never overwritten silently: a non-empty directory is
refused unless ``--resume`` (continue it) or ``--overwrite`` (delete pontryx's
own entries above, nothing else) is given.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pontryx.meshes.errors import InputError

__all__ = ["ENTRIES", "check_run_directory", "prepare_run_directory"]

ENTRIES = (
    "config.yaml",
    "metrics.jsonl",
    "metrics.csv",
    "summary.json",
    "model.npz",
    "checkpoints",
    "paraview",
    "plots",
)


def check_run_directory(directory: Path, *, resume: bool, overwrite: bool) -> str:
    """What to do with ``directory``: "fresh" (empty or new), "resume" or
    "overwrite". Raises InputError (keyed ``directory``, or ``resume``) if it holds
    output and neither flag is given. Creates nothing."""
    if resume and overwrite:
        raise InputError("resume and overwrite exclude each other", "resume")
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise InputError(f"{str(path)!r} exists and is not a directory", "directory")
    has_content = path.is_dir() and any(path.iterdir())
    if not has_content:
        return "fresh"
    if resume:
        return "resume"
    if overwrite:
        return "overwrite"
    raise InputError(
        f"run directory {str(path)!r} is not empty; use --resume to continue it "
        "or --overwrite to replace its results",
        "directory",
    )


def prepare_run_directory(path: Path, mode: str) -> None:
    """Create ``path`` (mode "fresh"/"resume") or clear pontryx's entries in it
    ("overwrite"). Call on one rank."""
    path.mkdir(parents=True, exist_ok=True)
    if mode == "overwrite":
        for name in ENTRIES:
            p = path / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
