"""``pontryx analyze``: diffusion maps of optimiser paths.

Reads the controls recorded along one or several runs (``trajectory.jsonl``,
written with ``output.trajectory_every: k``; :mod:`pontryx.solver.outputs.trajectory`),
puts every recorded iterate of every run into one point cloud — their random
projections y ∈ R^64 of the L²(M_L) Riesz variables (``features="projection"``,
the default; the same projection in every run of the same network), or their
layerwise L² norms (``features="norms"``: one coordinate per control and layer)
— and embeds it with a diffusion map (:mod:`.diffusion_maps`). Writes, into
``output``:

* ``diffusion_map.png``: the leading two diffusion coordinates (ψ₁, ψ₂),
  coloured by iteration and by the loss J(θ_j) on the training set, each run a
  marker joined in the order of its iterations, and the eigenvalue spectrum;
* ``diffusion_map.npz``: ``coordinates`` (n × m, λ_k^t ψ_k), ``eigenvalues``
  (λ_0 = 1 first), ``epsilon``, ``alpha``, ``t``, ``run`` (index into ``runs``),
  ``iteration``, ``loss``, ``features`` (the embedded vectors), ``runs``, ``methods``,
  ``figure_sha256`` (the figure's SHA-256: a later ``analyze`` into the same
  ``--output`` replaces only the figure of this analysis).

Bad input (a flag out of its range, a path that is not a run directory, a run
without a trajectory or with a damaged one, runs of different networks, fewer than
3 points, an output that cannot be written) is an :class:`InputError`, raised
before anything is written.
"""

from __future__ import annotations

import hashlib
import io
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.analysis.diffusion_maps import DisconnectedError, diffusion_map
from pontryx.solver.outputs.atomic import atomic_path
from pontryx.solver.outputs.rundir import RunDirectory, check_new_names, lstat
from pontryx.solver.outputs.trajectory import FILE, norm_layout, read_trajectory

__all__ = ["FEATURES", "RecordedPath", "analyze", "load_paths"]

FEATURES = ("projection", "norms")
#: diffusion coordinates by default (fewer if there are only 3 iterates)
COMPONENTS = 3


@dataclass
class RecordedPath:
    """The recorded iterates of one run."""

    directory: Path
    header: dict
    rows: list[dict]

    @property
    def methods(self) -> str:
        return ", ".join(dict.fromkeys(r["method"] for r in self.rows))

    def features(self, kind: str) -> np.ndarray:
        if kind == "projection":
            return np.array([r["projection"] for r in self.rows], dtype=float)
        return np.array(
            [np.hstack([np.ravel(r["norms"][k]) for k in sorted(r["norms"])]) for r in self.rows],
            dtype=float,
        )


def _finite(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_options(
    *, features: str, components: int | None, epsilon: float | None, alpha: float, t: float
) -> None:
    """The flags, before any file is read (one-line errors keyed by the flag):
    ``components`` ≥ 2 (the plot shows ψ₁, ψ₂; at most the points less one, checked
    with the points), ε and t finite and > 0, 0 ≤ α ≤ 1."""
    if features not in FEATURES:
        raise InputError(
            f"expected one of {', '.join(FEATURES)}, got {show(features)}", "--features"
        )
    if components is not None and not (_integer(components) and components >= 2):
        raise InputError(f"expected at least 2 components, got {show(components)}", "--components")
    if epsilon is not None and not (_finite(epsilon) and epsilon > 0):
        raise InputError(f"expected a finite ε > 0, got {show(epsilon)}", "--epsilon")
    if not (_finite(alpha) and 0 <= alpha <= 1):
        raise InputError(f"expected 0 ≤ α ≤ 1, got {show(alpha)}", "--alpha")
    if not (_finite(t) and t > 0):
        raise InputError(f"expected a finite diffusion time t > 0, got {show(t)}", "--time")


#: The largest magnitude of a feature (a projection or a norm) that is embedded: the
#: squared distances between iterates, Σ (y_i − y'_i)² ≤ 4·1e300·D, then stay finite
FEATURE_MAX = 1e150


def _bad_value(row) -> str | None:
    """What is wrong with the first bad entry of a record (loss, projection, norms):
    a non-finite value, or a feature too large to embed; None if nothing."""
    norms = [x for v in row["norms"].values() for x in (v if isinstance(v, list) else [v])]
    for name, values in (
        ("loss", [row["loss"]]),
        ("projection", row["projection"]),
        ("norms", norms),
    ):
        if not all(math.isfinite(v) for v in values):
            return f"{name}: a non-finite value (a diverging run's iterate cannot be embedded)"
        if name != "loss" and (big := max(map(abs, values), default=0.0)) > FEATURE_MAX:
            return (
                f"{name}: a value of magnitude {big:.3g}, above 1e150 (the squared "
                "distances between iterates would overflow: such an iterate cannot be embedded)"
            )
    return None


def load_paths(run_dirs) -> list[RecordedPath]:
    """The trajectories of the runs, checked (one-line errors keyed ``analyze``)."""
    if not run_dirs:
        raise InputError("expected at least one run directory", "analyze")
    paths = []
    for d in map(Path, run_dirs):
        lstat(d, "analyze")  # a name too long, a loop: one line (was exit 5)
        if not d.is_dir():
            raise InputError(f"{str(d)!r} is not a directory", "analyze")
        if not RunDirectory(d).is_run():
            raise InputError(f"{str(d)!r} is not a pontryx run directory", "analyze")
        try:
            header, rows = read_trajectory(d)
        except InputError as e:
            raise e.under("analyze") from None
        for i, row in enumerate(rows):
            if (problem := _bad_value(row)) is not None:
                raise InputError(f"{d / FILE}, line {i + 2}: {problem}", "analyze")
        if header is None or not rows:
            raise InputError(
                f"{str(d)!r} has no {FILE}: record one with output.trajectory_every: k",
                "analyze",
            )
        if paths and (header["shapes"], header["dimension"], header["seed"]) != (
            paths[0].header["shapes"],
            paths[0].header["dimension"],
            paths[0].header["seed"],
        ):
            raise InputError(
                f"{str(d)!r} trained another network than {str(paths[0].directory)!r} "
                "(its controls differ in shape): only runs of one network embed together",
                "analyze",
            )
        if paths and norm_layout(rows[0]["norms"]) != norm_layout(paths[0].rows[0]["norms"]):
            raise InputError(
                f"{d / FILE} records the norms of other controls than "
                f"{paths[0].directory / FILE}: only runs of one network embed together",
                "analyze",
            )
        paths.append(RecordedPath(d, header, rows))
    return paths


def check_points(paths: list[RecordedPath], components: int | None) -> int:
    """The number of diffusion coordinates: ``components`` — at most the iterates
    less one, the nontrivial eigenpairs of the diffusion operator on them — or,
    None, :data:`COMPONENTS` (fewer for 3 iterates). At least 3 iterates."""
    n = sum(len(p.rows) for p in paths)
    if n < 3:
        raise InputError(f"a diffusion map needs at least 3 recorded iterates, got {n}", "analyze")
    if components is None:
        return min(COMPONENTS, n - 1)
    if components > n - 1:
        raise InputError(
            f"expected at most {n - 1} components (the {n} recorded iterates less one), "
            f"got {components}",
            "--components",
        )
    return components


def check_output(output: Path, key: str = "--output") -> None:
    """That ``output`` is, or can be made, a writable directory (nothing is created;
    errors keyed ``key``)."""
    output = Path(output)
    lstat(output, key)  # a name too long, a loop, no permission: nothing can be looked up
    if output.exists() and not output.is_dir():
        raise InputError(f"{str(output)!r} exists and is not a directory", key)
    parent = next((p for p in output.absolute().parents if p.exists()), None)
    if not output.exists() and parent is not None and not parent.is_dir():
        raise InputError(f"{str(parent)!r} is not a directory", key)
    target = output if output.exists() else parent
    if target is None or not os.access(target, os.W_OK | os.X_OK):
        raise InputError(f"cannot write into {str(target or output)!r} (not writable)", key)
    if not output.exists():
        check_new_names(output, parent, key)


#: what ``analyze`` writes into its output directory
OUTPUTS = ("diffusion_map.npz", "diffusion_map.png")
#: the members that make a ``diffusion_map.npz`` one that ``analyze`` wrote
_MEMBERS = {"coordinates", "eigenvalues", "iteration", "runs", "methods", "figure_sha256"}


def _figure_digest(npz: Path) -> str | None:
    """The SHA-256 of its figure that an earlier ``analyze`` stored in ``npz``
    (``figure_sha256``, beside the other members it writes), or None if ``npz`` is
    not one that ``analyze`` wrote (or not a regular file)."""
    if npz.is_symlink() or not npz.is_file():
        return None
    try:
        with np.load(npz, allow_pickle=False) as f:
            if not _MEMBERS <= set(f.files):
                return None
            digest = f["figure_sha256"]
            return str(digest) if digest.shape == () and digest.dtype.kind == "U" else None
    except Exception:  # not an NPZ file at all, or without the digest: not analyze's
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_own_outputs(output: Path, key: str = "--output") -> None:
    """That writing :data:`OUTPUTS` into ``output`` (a directory the user named)
    replaces nothing but an earlier analysis: not a run directory itself (its
    diffusion maps go into its ``analysis/``), no ``diffusion_map.npz`` that
    ``analyze`` did not write (its members), and no ``diffusion_map.png`` but the
    figure of that analysis (a regular file whose SHA-256 the NPZ holds)."""
    if RunDirectory(output).is_run():
        raise InputError(
            f"{show(str(output))} is a pontryx run directory: its diffusion map goes into its "
            "analysis/ (the default for the first run), or choose another --output",
            key,
        )
    npz, png = (output / name for name in OUTPUTS)
    digest = _figure_digest(npz)  # None: no NPZ, or not one analyze wrote
    foreign = [npz] if (npz.exists() or npz.is_symlink()) and digest is None else []
    if png.exists() or png.is_symlink():
        regular = png.is_file() and not png.is_symlink()
        if not (digest and regular and _sha256(png) == digest):
            foreign.append(png)
    if foreign:
        raise InputError(
            f"{show(str(foreign[0]))} exists and is not the output of an earlier pontryx "
            "analyze; move it, or choose another --output",
            key,
        )


def analyze(
    run_dirs,
    output: Path | None = None,
    *,
    features: str = "projection",
    components: int | None = None,
    epsilon: float | None = None,
    alpha: float = 1.0,
    t: float = 1.0,
) -> dict:
    """Embed the runs' iterates, write the figure and the arrays into ``output``
    (None: the first run's ``analysis/``, recorded as one of its entries), return a
    summary (see the module docstring). Everything is checked before anything is
    written."""
    check_options(features=features, components=components, epsilon=epsilon, alpha=alpha, t=t)
    paths = load_paths(run_dirs)
    components = check_points(paths, components)
    Y = np.vstack([p.features(features) for p in paths])
    run = np.concatenate([np.full(len(p.rows), i) for i, p in enumerate(paths)])
    iteration = np.array([r["iteration"] for p in paths for r in p.rows])
    loss = np.array([r["loss"] for p in paths for r in p.rows], dtype=float)
    try:
        dm = diffusion_map(Y, components=components, epsilon=epsilon, alpha=alpha)
    except DisconnectedError as e:
        hint = "give a larger --epsilon" if epsilon is not None else "give --epsilon"
        raise InputError(
            f"{e}: {hint}", "--epsilon" if epsilon is not None else "analyze"
        ) from None
    coords = dm.coordinates(t)
    first = run == 0
    di = iteration[first] - iteration[first].mean()
    for k in range(coords.shape[1]):  # sign: the coordinate grows along the first run
        c = coords[first, k]
        if np.dot(c - c.mean(), di) < 0:
            coords[:, k] *= -1
            dm.eigenvectors[:, k + 1] *= -1
    key = "analyze" if output is None else "--output"
    output = paths[0].directory / "analysis" if output is None else Path(output)
    check_output(output, key)
    owner = None  # the run whose analysis/ this is (recorded as one of its entries)
    if key == "analyze":
        owner = paths[0].directory
    elif output.name == "analysis" and RunDirectory(output.parent).is_run():
        owner = output.parent  # a run's own analysis/ named with --output, as the default
    else:
        check_own_outputs(output, key)
    if owner is not None:
        try:
            RunDirectory(owner).attach("analysis")
        except InputError as e:
            raise InputError(e.message, key) from None
        except OSError as e:  # its marker or lock cannot be written
            where = e.filename or owner
            raise InputError(f"cannot write {str(where)!r}: {e.strerror or e}", key) from None
    names = [str(p.directory) for p in paths]
    methods = [p.methods for p in paths]
    figure = render_diffusion_map(
        coords,
        dm.eigenvalues,
        run,
        iteration,
        loss,
        [f"{Path(n).name} ({m})" for n, m in zip(names, methods, strict=True)],
        features,
    )
    try:
        output.mkdir(parents=True, exist_ok=True)
        with atomic_path(output / "diffusion_map.npz") as tmp, open(tmp, "wb") as f:
            np.savez(
                f,
                coordinates=coords,
                eigenvalues=dm.eigenvalues,
                epsilon=dm.epsilon,
                alpha=dm.alpha,
                t=t,
                run=run,
                iteration=iteration,
                loss=loss,
                features=Y,
                runs=np.array(names),
                methods=np.array(methods),
                figure_sha256=np.array(hashlib.sha256(figure).hexdigest()),
            )
        with atomic_path(output / "diffusion_map.png") as tmp, open(tmp, "wb") as f:
            f.write(figure)
    except OSError as e:  # no space left, a file system that refuses (/proc)
        where = e.filename or output
        raise InputError(f"cannot write {str(where)!r}: {e.strerror or e}", key) from None
    return {
        "runs": [
            {
                "directory": n,
                "methods": m,
                "points": len(p.rows),
                "iterations": [p.rows[0]["iteration"], p.rows[-1]["iteration"]],
                "final_loss": p.rows[-1]["loss"],
            }
            for n, m, p in zip(names, methods, paths, strict=True)
        ],
        "features": features,
        "dimension": int(Y.shape[1]),
        "points": len(Y),
        "epsilon": dm.epsilon,
        "alpha": dm.alpha,
        "t": t,
        "eigenvalues": dm.eigenvalues.tolist(),
        "output": str(output),
    }


def render_diffusion_map(coords, eigenvalues, run, iteration, loss, labels, features) -> bytes:
    """The PNG of (ψ₁, ψ₂) coloured by iteration and by loss, and the spectrum."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.colors
    import matplotlib.lines
    import matplotlib.pyplot as plt

    markers = "osD^v<>ph*"
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1, 1, 0.7]})
    x, y = coords[:, 0], coords[:, 1]
    positive = loss[np.isfinite(loss) & (loss > 0)]
    norm_loss = (
        matplotlib.colors.LogNorm(positive.min(), positive.max())
        if positive.size and positive.min() < positive.max()
        else None
    )
    for ax, colour, label, norm in (
        (axes[0], iteration, "iteration", None),
        (axes[1], loss, "training loss J", norm_loss),
    ):
        sc = None
        for i, name in enumerate(labels):
            sel = run == i
            ax.plot(x[sel], y[sel], "-", color="0.7", lw=0.6, zorder=1)
            sc = ax.scatter(
                x[sel],
                y[sel],
                c=colour[sel],
                marker=markers[i % len(markers)],
                s=22,
                cmap="viridis",
                norm=norm,
                label=name,
                zorder=2,
                vmin=None if norm else colour.min(),
                vmax=None if norm else colour.max(),
            )
        fig.colorbar(sc, ax=ax, label=label)
        ax.set_xlabel("ψ₁ (λ₁ψ₁)")
        ax.set_ylabel("ψ₂ (λ₂ψ₂)")
        ax.set_title(f"coloured by {label}")
    handles = [
        matplotlib.lines.Line2D(
            [], [], color="0.3", marker=markers[i % len(markers)], ls="", label=name
        )
        for i, name in enumerate(labels)
    ]
    fig.legend(
        handles=handles, loc="lower center", ncol=min(len(labels), 5), fontsize=8, frameon=False
    )
    k = np.arange(len(eigenvalues))
    axes[2].bar(k, eigenvalues, color="tab:blue")
    axes[2].set_xlabel("k")
    axes[2].set_ylabel("λ_k")
    axes[2].set_ylim(min(0.0, float(eigenvalues.min())), 1.05)
    axes[2].set_title("diffusion spectrum")
    fig.suptitle(f"Diffusion map of optimiser paths ({features})", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()
