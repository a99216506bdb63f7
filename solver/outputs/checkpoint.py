"""Checkpoints: the trainer's state, written atomically, verified on load, readable
on any number of ranks.

Layout of ``RUN_DIR/checkpoints/``::

    iter-00000010/shared.npz      replicated entries (iteration, random-number state,
                                  ρ, …) and the replicated controls (d); world rank 0
    iter-00000010/rows-0000.npz   control-shaped entries (controls, optimiser moments) as
    iter-00000010/rows-0001.npz   the rows each width rank of data group 0 owns, with
                                  their canonical dof indices (dense W's columns in
                                  canonical order too): any layout can pick its rows
    iter-00000010/local-0000.npz  layout-bound entries (per-sample states of the one-shot
                                  method), one file per world rank
    iter-00000010/manifest.json   written last, by rank 0: iteration, layout, the SHA-256
                                  of every file, the entries and their global shapes,
                                  and a checksum of the manifest itself

A trainer says how each entry of its :meth:`Trainer.state` is distributed
(:meth:`Trainer.state_kinds`): ``("control", name)``, ``("flat", names)`` (a
flat local vector of those controls, :meth:`Controls.to_flat` layout),
``("replicated",)`` or ``("local",)``. Every file is written to a temporary name
and renamed; the manifest comes last, so a checkpoint exists once its manifest
does and a run killed at any moment leaves the previous one intact.

:meth:`Checkpoints.latest` verifies the newest checkpoint (manifest schema and
checksum, every file present with its SHA-256, the iteration in the directory
name, the manifest and the data) and falls back to the next older intact one with a
one-line warning; with none intact, ``--resume`` fails in one line. A
checkpoint written on another layout loads on this one: values are the same,
so the resumed run agrees with an uninterrupted one to round-off (bit for bit
on the same layout); layout-bound entries are then left out (the trainer
rebuilds them). Only the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np

from pontryx.meshes.errors import InputError
from pontryx.solver.model.controls import REPLICATED, Controls
from pontryx.solver.outputs.atomic import atomic_path, write_json

__all__ = ["Checkpoints"]

FORMAT, VERSION = "pontryx-checkpoint", 2
_DIR = re.compile(r"^iter-(\d{8,})$")
_KINDS = ("control", "flat", "replicated", "local")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _manifest_checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k not in ("checksum", "path")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _save_npz(path: Path, arrays: dict) -> str:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return _sha256(path)


def _clear(path: Path) -> None:
    """Remove whatever is at ``path`` (a checkpoint's folder, inside pontryx's own
    ``checkpoints/``): its manifest first, so it stops being a checkpoint at once."""
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        path.unlink()
    elif path.is_dir():
        manifest = path / "manifest.json"
        if manifest.is_symlink() or manifest.is_file():
            manifest.unlink()
        shutil.rmtree(path)


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


class Checkpoints:
    """The checkpoints of one run directory for a network on a layout (collective
    over ``layout.world``; rank 0 writes the manifests and decides what is intact)."""

    def __init__(self, directory: str | Path, net, layout, keep: int = 2):
        self.directory = Path(directory)
        self.net, self.layout = net, layout
        self.comm = layout.world
        self.keep = int(keep)

    def _dir(self, iteration: int) -> Path:
        return self.directory / f"iter-{iteration:08d}"

    @property
    def _layout(self) -> dict:
        out = {"width": self.layout.n_width, "data": self.layout.n_data}
        if self.layout.n_depth > 1:  # (absent for depth 1: as checkpoints before the axis)
            out["depth"] = self.layout.n_depth
        return out

    # -- canonical rows ----------------------------------------------------------------
    def _template(self, names) -> Controls:
        from pontryx.solver.outputs.canonical import local_shapes

        shapes = local_shapes(self.net)
        return Controls({k: np.zeros(shapes[k]) for k in names}, self.net.space.comm)

    def _to_rows(self, name: str, value: np.ndarray) -> np.ndarray:
        """A control's local rows with a full column axis in canonical order."""
        if name in self.net.kernel.full_axis:
            out = np.empty_like(value)
            out[..., self.net.space.canonical] = value
            return out
        return value

    def _from_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        if name in self.net.kernel.full_axis:
            return np.ascontiguousarray(rows[..., self.net.space.canonical])
        return rows

    def _dof_axis(self, name: str) -> int:
        return 1 if name in self.net.layer_names else 0

    # -- writing -----------------------------------------------------------------------
    def save(self, iteration: int, state: dict, kinds: dict, pin=None, **info) -> Path:
        """Write ``state`` (this rank's arrays) for ``iteration``; ``pin``: the
        iteration of an older checkpoint kept beyond the newest ``keep`` (a TAO run
        stopped off the chunk grid resumes from the grid point before). Collective."""
        comm, layout, sp = self.comm, self.layout, self.net.space
        target = self._dir(iteration)
        if comm.rank == 0:
            _clear(target)  # a stale one (damaged, skipped on resume) is rewritten whole
            target.mkdir(parents=True)
        comm.Barrier()
        files, entries = {}, {}
        rows, shared, local = {}, {}, {}
        for key, value in state.items():
            kind = kinds.get(key, ("replicated",))
            entries[key] = {"kind": kind[0], "args": list(kind[1:])}
            if kind[0] == "replicated":
                shared[key] = np.asarray(value)
            elif kind[0] == "local":
                local[key] = np.asarray(value)
            elif layout.writes:
                if kind[0] == "control":
                    controls = {kind[1]: np.asarray(value)}
                else:  # flat over the names kind[1]
                    controls = self._template(kind[1]).set_flat(np.asarray(value))
                for name, arr in controls.items():
                    sub = f"{key}|{name}" if kind[0] == "flat" else key
                    if name in REPLICATED:
                        shared[sub] = arr
                    else:
                        rows[sub] = self._to_rows(name, arr)
        if layout.writes:
            rows["__dofs__"] = sp.owned_canonical
            path = target / f"rows-{layout.width.rank:04d}.npz"
            files[path.name] = _save_npz(path, rows)
        if local:
            path = target / f"local-{comm.rank:04d}.npz"
            files[path.name] = _save_npz(path, local)
        if comm.rank == 0:
            files["shared.npz"] = _save_npz(target / "shared.npz", shared)
        gathered = comm.gather(files, root=0)
        comm.Barrier()
        if comm.rank == 0:
            manifest = {
                "format": FORMAT,
                "version": VERSION,
                "iteration": int(iteration),
                "ranks": comm.size,
                "layout": self._layout,
                "dofs": sp.N,
                "files": {k: v for part in gathered for k, v in part.items()},
                "entries": entries,
                **info,
            }
            manifest["checksum"] = _manifest_checksum(manifest)
            write_json(target / "manifest.json", manifest)
            self._prune(pin)
        comm.Barrier()
        return target

    def _prune(self, pin=None) -> None:
        complete = self.list()
        for it, path in complete[: max(len(complete) - self.keep, 0)]:
            if it != pin:
                shutil.rmtree(path, ignore_errors=True)
        newest = complete[-1][0] if complete else -1
        for path in self.directory.glob("iter-*"):  # incomplete ones older than the newest
            m = _DIR.match(path.name)
            if m and int(m.group(1)) < newest and not (path / "manifest.json").exists():
                shutil.rmtree(path, ignore_errors=True)

    # -- finding and verifying ------------------------------------------------------------
    def list(self, everything: bool = False) -> list[tuple[int, Path]]:
        """Checkpoints with a manifest file, oldest first (a folder without one is
        a checkpoint cut while it was written); with ``everything`` also the
        entries of a checkpoint's name that are no folder (a file, a link)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            m = _DIR.match(path.name)
            real = path.is_dir() and not path.is_symlink()
            if m and ((real and (path / "manifest.json").is_file()) or (everything and not real)):
                found.append((int(m.group(1)), path))
        return sorted(found)

    def verify(self, path: Path) -> dict:
        """The manifest of the checkpoint in ``path`` if it is intact; else a
        ValueError saying what is wrong. Reads every file (rank 0)."""
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"manifest.json unreadable ({e.__class__.__name__})") from None
        if not isinstance(manifest, dict):
            raise ValueError("manifest.json is not a mapping")
        iteration = int(_DIR.match(path.name).group(1))
        if manifest.get("version") == 1 or "format" not in manifest:
            return self._verify_legacy(path, manifest, iteration)
        required = {"format": str, "version": int, "iteration": int, "ranks": int,
                    "layout": dict, "files": dict, "entries": dict, "checksum": str}  # fmt: skip
        for key, typ in required.items():
            if not isinstance(manifest.get(key), typ) or isinstance(manifest.get(key), bool):
                raise ValueError(f"manifest.json: {key!r} missing or not a {typ.__name__}")
        if manifest["format"] != FORMAT or manifest["version"] != VERSION:
            raise ValueError("manifest.json: not a pontryx checkpoint of this version")
        if manifest["checksum"] != _manifest_checksum(manifest):
            raise ValueError("manifest.json was edited (checksum mismatch)")
        if manifest["iteration"] != iteration:
            raise ValueError(
                f"manifest says iteration {manifest['iteration']}, the folder {iteration}"
            )
        if manifest.get("dofs", self.net.space.N) != self.net.space.N:
            raise ValueError(
                f"written for {manifest['dofs']} dofs, this network has {self.net.space.N}"
            )
        for name, digest in manifest["files"].items():
            f = path / name
            if not f.is_file():
                raise ValueError(f"{name} is missing")
            if _sha256(f) != digest:
                raise ValueError(f"{name} is damaged (SHA-256 mismatch)")
        writers = manifest["layout"].get("width", 0)
        rows = [n for n in manifest["files"] if n.startswith("rows-")]
        if len(rows) != writers or "shared.npz" not in manifest["files"]:
            raise ValueError("files are missing from the manifest")
        shared = _load_npz(path / "shared.npz")
        if int(shared.get("iteration", -1)) != iteration:
            raise ValueError("shared.npz holds another iteration")
        for key, entry in manifest["entries"].items():
            if entry.get("kind") not in _KINDS:
                raise ValueError(f"entry {key!r} of unknown kind")
        return manifest

    def _verify_legacy(self, path: Path, manifest: dict, iteration: int) -> dict:
        """A checkpoint of pontryx 0.1 (one rank-RRRR.npz per rank, same layout only)."""
        ranks = manifest.get("ranks")
        if manifest.get("iteration") != iteration or not isinstance(ranks, int):
            raise ValueError("manifest.json of a 0.1 checkpoint is inconsistent")
        for r in range(ranks):
            f = path / f"rank-{r:04d}.npz"
            try:
                with np.load(f, allow_pickle=False) as data:
                    if int(data["iteration"]) != iteration:
                        raise ValueError(f"{f.name} holds another iteration")
            except (OSError, ValueError, KeyError) as e:
                raise ValueError(f"{f.name}: {e}") from None
        return {**manifest, "version": 1}

    def latest(self, warn=print, prefer=None) -> dict | None:
        """The manifest of the newest intact checkpoint (with its ``path``), or
        None if there is none; damaged newer ones are skipped with a one-line
        warning each (``warn``, rank 0); checkpoints exist but none is intact: a
        one-line error (naming the newest and why), no warnings. ``prefer(manifest)``:
        the newest intact one it accepts, if any (else the newest intact one).
        Collective (rank 0 verifies and decides)."""
        result = None
        if self.comm.rank == 0:
            damaged = []  # (iteration, path, why), newest first
            for it, path in reversed(self.list(everything=True)):
                if not path.is_dir() or path.is_symlink():  # not what pontryx writes
                    damaged.append((it, path, ValueError("not a folder")))
                    continue
                try:
                    found = {**self.verify(path), "path": str(path)}
                except ValueError as e:
                    damaged.append((it, path, e))
                    continue
                result = result or found
                if prefer is None or prefer(found):
                    result = found
                    break
            if result is not None:
                for it, path, e in damaged:
                    if it > result["iteration"]:  # passed over on the way to it
                        warn(f"warning: checkpoint {path} is damaged ({e}); skipping it")
            elif damaged:  # one line, no warnings
                (_, path, e), more = damaged[0], len(damaged) - 1
                others = f" and {more} older one{'s' * (more > 1)} damaged too" if more else ""
                result = InputError(
                    f"no intact checkpoint in {self.directory}: the newest, {path.name}, is "
                    f"damaged ({e}){others}; use --overwrite to start again",
                    "--resume",
                )
        result = self.comm.bcast(result, root=0)
        if isinstance(result, InputError):
            raise result
        return result

    # -- reading -------------------------------------------------------------------------
    def load(self, manifest: dict) -> tuple[dict[str, np.ndarray], bool]:
        """(this rank's state, whether the layout-bound entries were restored).
        Collective; any layout."""
        path = Path(manifest["path"])
        if manifest.get("version") == 1:
            if (
                manifest["ranks"] != self.comm.size
                or manifest.get("layout", self._layout) != self._layout
            ):
                raise InputError(
                    f"the checkpoint at iteration {manifest['iteration']} (pontryx 0.1 format) "
                    f"was written on {manifest['ranks']} MPI ranks with layout "
                    f"{manifest.get('layout')}; restart it on that layout",
                    "--resume",
                )
            return _load_npz(path / f"rank-{self.comm.rank:04d}.npz"), True
        entries = manifest["entries"]
        shared = _load_npz(path / "shared.npz")
        same = manifest["layout"] == self._layout and manifest["ranks"] == self.comm.size
        state = {k: v for k, v in shared.items() if entries.get(k, {}).get("kind") == "replicated"}
        state["iteration"] = shared["iteration"]
        controls = self._gather_rows(path, manifest, shared)
        for key, entry in entries.items():
            if entry["kind"] == "control":
                state[key] = controls[key]
            elif entry["kind"] == "flat":
                names = entry["args"][0]
                template = self._template(names)
                for name in names:
                    template[name][...] = controls[f"{key}|{name}"]
                state[key] = template.to_flat()
        restored_local = False
        if same and any(e["kind"] == "local" for e in entries.values()):
            state.update(_load_npz(path / f"local-{self.comm.rank:04d}.npz"))
            restored_local = True
        return state, restored_local or not any(e["kind"] == "local" for e in entries.values())

    def _gather_rows(self, path: Path, manifest: dict, shared: dict) -> dict[str, np.ndarray]:
        """Every control-shaped sub-entry as this rank's local array, picked from the
        rows files one at a time (memory: one writer's share at a time)."""
        from pontryx.solver.outputs.canonical import local_shapes

        sp = self.net.space
        mine = {int(c): i for i, c in enumerate(sp.owned_canonical)}
        shapes = local_shapes(self.net)
        out: dict[str, np.ndarray] = {}
        wanted = {}
        for key, entry in manifest["entries"].items():
            if entry["kind"] == "control":
                wanted[key] = entry["args"][0]
            elif entry["kind"] == "flat":
                for name in entry["args"][0]:
                    wanted[f"{key}|{name}"] = name
        for sub, name in wanted.items():
            if name not in shapes:
                raise InputError(
                    f"the checkpoint holds a control {name!r} that this network does not have: "
                    "it belongs to another model",
                    "--resume",
                )
            if name in REPLICATED:
                out[sub] = shared[sub]
            else:
                out[sub] = np.full(shapes[name], np.nan)
        for f in sorted(n for n in manifest["files"] if n.startswith("rows-")):
            data = _load_npz(path / f)
            dofs = data.pop("__dofs__")
            sel = [(j, mine[int(c)]) for j, c in enumerate(dofs) if int(c) in mine]
            if not sel:
                continue
            src, dst = (np.array(a, dtype=np.int64) for a in zip(*sel))
            for sub, name in wanted.items():
                if name in REPLICATED:
                    continue
                rows = self._from_rows(name, data[sub])
                want, axis = shapes[name], self._dof_axis(name)
                if rows.shape[:axis] + rows.shape[axis + 1 :] != want[:axis] + want[axis + 1 :]:
                    N = sp.N  # the global shapes (the dofs agree: verify() checked them)
                    have = (*rows.shape[:axis], N, *rows.shape[axis + 1 :])
                    need = (*want[:axis], N, *want[axis + 1 :])
                    raise InputError(
                        f"checkpoint entry {sub!r} has shape {have}, this network "
                        f"needs {need}: it belongs to another model",
                        "--resume",
                    )
                if self._dof_axis(name) == 1:
                    out[sub][:, dst] = rows[:, src]
                else:
                    out[sub][dst] = rows[src]
        for sub, arr in out.items():
            if np.isnan(arr).any() and sub.split("|")[-1] not in REPLICATED:
                raise InputError(
                    f"checkpoint entry {sub!r} lacks rows of this partition", "--resume"
                )
        return out
