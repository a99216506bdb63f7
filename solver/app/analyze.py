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
  ``iteration``, ``loss``, ``features`` (the embedded vectors), ``runs``, ``methods``.

Bad input (a path that is not a run directory, a run without a trajectory, runs
of different networks, fewer than 3 points) is an :class:`InputError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pontryx.meshes.errors import InputError
from pontryx.solver.analysis.diffusion_maps import diffusion_map
from pontryx.solver.outputs.atomic import atomic_path
from pontryx.solver.outputs.rundir import RunDirectory
from pontryx.solver.outputs.trajectory import FILE, read_trajectory

__all__ = ["FEATURES", "RecordedPath", "analyze", "load_paths"]

FEATURES = ("projection", "norms")


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


def load_paths(run_dirs) -> list[RecordedPath]:
    """The trajectories of the runs, checked (one-line errors keyed ``analyze``)."""
    if not run_dirs:
        raise InputError("expected at least one run directory", "analyze")
    paths = []
    for d in map(Path, run_dirs):
        if not d.is_dir():
            raise InputError(f"{str(d)!r} is not a directory", "analyze")
        if not RunDirectory(d).is_run():
            raise InputError(f"{str(d)!r} is not a pontryx run directory", "analyze")
        header, rows = read_trajectory(d)
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
        paths.append(RecordedPath(d, header, rows))
    return paths


def analyze(
    run_dirs,
    output: Path,
    *,
    features: str = "projection",
    components: int = 3,
    epsilon: float | None = None,
    alpha: float = 1.0,
    t: float = 1.0,
) -> dict:
    """Embed the runs' iterates, write the figure and the arrays into ``output``,
    return a summary (see the module docstring)."""
    if features not in FEATURES:
        raise InputError(f"expected one of {', '.join(FEATURES)}, got {features!r}", "--features")
    if epsilon is not None and not epsilon > 0:
        raise InputError(f"expected ε > 0, got {epsilon}", "--epsilon")
    if not 0 <= alpha <= 1:
        raise InputError(f"expected 0 ≤ α ≤ 1, got {alpha}", "--alpha")
    if components < 2:
        raise InputError(f"expected at least 2 components, got {components}", "--components")
    paths = load_paths(run_dirs)
    Y = np.vstack([p.features(features) for p in paths])
    if len(Y) < 3:
        raise InputError(
            f"a diffusion map needs at least 3 recorded iterates, got {len(Y)}", "analyze"
        )
    run = np.concatenate([np.full(len(p.rows), i) for i, p in enumerate(paths)])
    iteration = np.array([r["iteration"] for p in paths for r in p.rows])
    loss = np.array([r["loss"] for p in paths for r in p.rows], dtype=float)
    dm = diffusion_map(Y, components=components, epsilon=epsilon, alpha=alpha)
    coords = dm.coordinates(t)
    for k in range(coords.shape[1]):  # sign: the coordinate grows along the first run
        first = run == 0
        if np.corrcoef(coords[first, k], iteration[first])[0, 1] < 0:
            coords[:, k] *= -1
            dm.eigenvectors[:, k + 1] *= -1
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    names = [str(p.directory) for p in paths]
    methods = [p.methods for p in paths]
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
        )
    plot_diffusion_map(
        output / "diffusion_map.png",
        coords,
        dm.eigenvalues,
        run,
        iteration,
        loss,
        [f"{Path(n).name} ({m})" for n, m in zip(names, methods, strict=True)],
        features,
    )
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


def plot_diffusion_map(path, coords, eigenvalues, run, iteration, loss, labels, features):
    """(ψ₁, ψ₂) coloured by iteration and by loss, and the spectrum."""
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
    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
