"""PNG plots of a run (matplotlib, Agg backend, drawn on world rank 0).

* ``curves.png``            loss and misfit (log scale), train/test metric per iteration;
* ``decision_boundary.png`` 2D inputs: the predicted class over the input plane with
                            the test samples (regression with 1 input: ŷ(x) and the data);
* ``features.png``          the transported features, as in Ruthotto–Haber's
                            concentric-ellipses figure: inputs, u(T) projected (two
                            classes: on the readout direction c₁ − c₀ and a principal
                            direction; else two principal directions, in L²(M_L)), and
                            the readout coordinates Ŷ, coloured by class;
* ``digits.png``            image inputs: a few inputs with u(0) and u(T) on the mesh
                            (on a 3D box: plane sections at three channel levels);
* ``hamiltonian.png``       the maximum principle per layer n and iteration k: the
                            stationarity ‖∂_θ Hⁿ‖ (every method) and, for msa/emsa,
                            the gap max_θ Hⁿ − Hⁿ(θⁿ) found by the layer solves.

The network evaluations are collective on the width communicator; only rank 0
of it draws (pass ``draw=False`` on the other ranks of a data-parallel layout:
they skip the evaluation altogether).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pontryx.meshes.levels import levels

__all__ = [
    "plot_curves",
    "plot_decision_boundary",
    "plot_digits",
    "plot_features",
    "plot_hamiltonian",
]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from pontryx.solver.outputs.atomic import atomic_path

    with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)


def column(rows: list[dict], key: str) -> np.ndarray:
    """The values of ``key`` over metric rows (NaN where missing or empty)."""
    return np.array([np.nan if r.get(key) in (None, "") else float(r[key]) for r in rows])


def objective_panel(ax, rows: list[dict], labels: dict[str, str]) -> np.ndarray:
    """Semilog curves of the row keys in ``labels`` (key → legend label) that have
    positive values, against the iteration; returns the iterations."""
    it = np.array([r["iteration"] for r in rows])
    for key, label in labels.items():
        v = column(rows, key)
        if np.any(np.isfinite(v) & (v > 0)):
            ax.semilogy(it, v, label=label)
    ax.set_xlabel("iteration")
    return it


def plot_curves(rows: list[dict], path: Path, metric: str = "accuracy") -> None:
    """Loss/misfit and train/test metric against the iteration (rank 0 only)."""
    if not rows:
        return
    plt = _pyplot()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8))
    it = objective_panel(a1, rows, {"loss": "loss", "misfit": "misfit"})
    a1.set_ylabel("J(θ), misfit (log scale)")
    a1.set_title("objective J(θ)")
    a1.legend()
    a2.plot(it, column(rows, "train_metric"), label=f"train {metric}")
    test = column(rows, "test_metric")
    if np.any(np.isfinite(test)):
        ok = np.isfinite(test)
        a2.plot(it[ok], test[ok], "o-", label=f"test {metric}")
    a2.set_xlabel("iteration")
    a2.set_ylabel(metric)
    a2.set_title(metric)
    a2.legend()
    _save(fig, path)


def plot_hamiltonian(rows: list[dict], path: Path) -> bool:
    """Heat maps over (iteration, layer) of ``stationarity_layers`` and, if present,
    ``gap_layers`` (log colour scale); False if the rows hold no per-layer values."""
    keys = [k for k in ("stationarity_layers", "gap_layers") if any(k in r for r in rows)]
    if not keys:
        return False
    from matplotlib.colors import LogNorm

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.8), squeeze=False)
    titles = {
        "stationarity_layers": ("stationarity ‖∂θ Hⁿ‖", "‖∂θ Hⁿ‖"),
        "gap_layers": ("maximum-principle gap max Hⁿ − Hⁿ(θⁿ)", "gap"),
    }
    for ax, key in zip(axes[0], keys, strict=True):
        have = [r for r in rows if isinstance(r.get(key), list) and r[key]]
        it = np.array([r["iteration"] for r in have], dtype=float)
        values = np.array([[float(x) for x in r[key]] for r in have])  # (iterations, layers)
        positive = values[np.isfinite(values) & (values > 0)]
        norm = LogNorm(positive.min(), positive.max()) if positive.size else None
        shown = np.where(values > 0, values, np.nan)
        extent = (it[0] - 0.5, it[-1] + 0.5, -0.5, values.shape[1] - 0.5)
        im = ax.imshow(shown.T, aspect="auto", origin="lower", extent=extent, norm=norm,
                       interpolation="nearest", cmap="viridis")  # fmt: skip
        fig.colorbar(im, ax=ax, label=titles[key][1])
        ax.set_xlabel("iteration k")
        ax.set_ylabel("layer n")
        ax.set_title(titles[key][0])
    fig.tight_layout()
    _save(fig, path)
    return True


def _predict(net, controls, X: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Ŷ (S × n_out) for inputs X (S × n_in), in chunks. Collective (width comm)."""
    out = [
        net.forward(controls, np.ascontiguousarray(X[i : i + chunk].T)).T
        for i in range(0, len(X), chunk)
    ]
    return np.concatenate(out) if out else np.zeros((0, net.n_out))


def plot_decision_boundary(net, controls, dataset, path: Path, *, draw: bool, grid: int = 80):
    """Predicted class over the input plane (2 inputs) or ŷ(x) (1 input, regression)."""
    X, y = dataset.X_test, dataset.y_test
    lo = np.minimum(X.min(axis=0), dataset.X_train.min(axis=0))
    hi = np.maximum(X.max(axis=0), dataset.X_train.max(axis=0))
    pad = 0.05 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    if dataset.n_in == 2 and dataset.task == "classification":
        g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], grid), np.linspace(lo[1], hi[1], grid))
        Yhat = _predict(net, controls, np.column_stack([g0.ravel(), g1.ravel()]))
        if not draw:
            return
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        k = dataset.n_classes
        cls = Yhat.argmax(axis=1).reshape(g0.shape)
        ax.contourf(g0, g1, cls, levels=np.arange(k + 1) - 0.5, cmap="coolwarm", alpha=0.35)
        if k == 2:
            p = Yhat[:, 1] - Yhat[:, 0]
            ax.contour(g0, g1, p.reshape(g0.shape), levels=[0.0], colors="k", linewidths=1)
        for c in range(k):  # one legend entry per class
            sel = y == c
            color = plt.get_cmap("coolwarm")(c / max(k - 1, 1))
            ax.scatter(X[sel, 0], X[sel, 1], s=6, color=color, label=f"class {c}")
        ax.set_title("decision boundary (test samples)")
        ax.set_xlabel("ξ₁")
        ax.set_ylabel("ξ₂")
        ax.set_aspect("equal")
        ax.legend(fontsize=7, markerscale=2, loc="best")
        _save(fig, path)
    elif dataset.n_in == 1 and dataset.task == "regression":
        xs = np.linspace(lo[0], hi[0], 400)[:, None]
        Yhat = _predict(net, controls, xs)
        if not draw:
            return
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(5.5, 4))
        ax.plot(dataset.X_train[:, 0], dataset.y_train[:, 0], ".", ms=3, label="train")
        ax.plot(xs[:, 0], Yhat[:, 0], "k-", label="network ŷ(x)")
        ax.set_xlabel("x")
        ax.set_ylabel("y")
        ax.legend()
        ax.set_title("regression")
        _save(fig, path)


def _gather_rows(space, U: np.ndarray) -> np.ndarray:
    """Canonical (N × S) rows of a row-distributed U, on every width rank."""
    return space.to_canonical(U)


def plot_features(net, controls, dataset, path: Path, *, draw: bool, samples: int = 300):
    """Inputs, the transported features u(T) in a 2D projection, and Ŷ.

    The projection of u(T) uses the L²(M_L) inner product: for two classes the
    readout direction c₁ − c₀ (the coordinate the classifier thresholds) and the
    leading principal direction orthogonal to it; otherwise the two leading
    principal directions."""
    sp = net.space
    X, y = dataset.X_test[:samples], dataset.y_test[:samples]
    Yhat, (UT,) = net.forward(controls, np.ascontiguousarray(X.T), keep=[net.layers])
    U = _gather_rows(sp, UT)
    m = sp.to_canonical(sp.m)
    C = sp.to_canonical(controls["C"])
    if not draw:
        return
    plt = _pyplot()
    w = np.sqrt(m)[:, None]
    Uc = (U - U.mean(axis=1, keepdims=True)) * w  # M_L^{1/2}(u − ū): Euclidean = L²(M_L)
    classify = dataset.task == "classification"
    if classify and net.n_out == 2:
        r = (C[:, 1] - C[:, 0]) * np.sqrt(m)
        r /= np.linalg.norm(r)
        first = r @ Uc
        rest = Uc - np.outer(r, first)
        _, s, Vt = np.linalg.svd(rest, full_matrices=False)
        proj = np.column_stack([first, Vt[0] * s[0]])
        title = "features u(T): on c₁ − c₀ (x) and a principal direction (y)"
    else:
        _, s, Vt = np.linalg.svd(Uc, full_matrices=False)
        proj = Vt[:2].T * s[:2] if len(s) > 1 else np.column_stack([Vt[0] * s[0], 0 * s[0]])
        title = "features u(T): 2 principal directions"
    c = y if classify else np.ravel(y)[: len(X)]
    panels = [("inputs ξ", X[:, :2])] if dataset.n_in >= 2 else []
    panels.append((title, proj))
    if net.n_out >= 2:
        panels.append(("readout Ŷ (first two outputs)", Yhat.T[:, :2]))
    labels = {
        "inputs ξ": ("ξ₁", "ξ₂"),
        title: ("first coordinate", "second coordinate"),
        "readout Ŷ (first two outputs)": ("ŷ₁", "ŷ₂"),
    }
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4), squeeze=False)
    for ax, (text, P) in zip(axes[0], panels):
        if P.shape[1] < 2:
            P = np.column_stack([P[:, 0], np.zeros(len(P))])
        points = ax.scatter(P[:, 0], P[:, 1], c=c, s=6, cmap="coolwarm" if classify else "viridis")
        ax.set_title(text, fontsize=9)
        ax.set_xlabel(labels[text][0], fontsize=8)
        ax.set_ylabel(labels[text][1], fontsize=8)
        if text == "inputs ξ":
            ax.set_aspect("equal")
        if classify:
            ax.legend(*points.legend_elements(), fontsize=7, title="class", title_fontsize=7)
        else:
            fig.colorbar(points, ax=ax, label="target")
    _save(fig, path)


def _triangles(cells: np.ndarray, cell_type: str) -> np.ndarray:
    if cell_type == "triangle":
        return cells[:, :3]
    if cell_type == "quadrilateral":  # basix vertex order 0 1 / 2 3
        return np.concatenate([cells[:, [0, 1, 3]], cells[:, [0, 3, 2]]])
    raise ValueError(cell_type)


def plot_digits(net, controls, dataset, mesh: dict, path: Path, *, draw: bool, count: int = 4):
    """A few image inputs with u(0) and u(T) on the mesh: a 2D mesh whole; on a 3D
    box (the image plane × channels of the conv kernel) the plane sections
    z = const of u(T) at the first, middle and last channel level."""
    sp = net.space
    X, y = dataset.X_test[:count], dataset.y_test[:count]
    _, (U0, UT) = net.forward(controls, np.ascontiguousarray(X.T), keep=[0, net.layers])
    U0, UT = _gather_rows(sp, U0), _gather_rows(sp, UT)
    gdim = int(mesh["gdim"])
    if not draw or gdim not in (2, 3):
        return
    plt = _pyplot()
    import matplotlib.tri as mtri

    x = mesh["x"]
    if gdim == 2:
        tri = mtri.Triangulation(
            x[:, 0], x[:, 1], _triangles(mesh["cells"], str(mesh["cell_type"]))
        )
        rows = [("u(0, x)", U0, slice(None)), ("u(T, x)", UT, slice(None))]
    else:
        zs, level, _ = levels(x[:, 2])
        picks = sorted({0, len(zs) // 2, len(zs) - 1})
        on = [np.flatnonzero(level == i) for i in picks]
        picks = [zs[i] for i in picks]
        order = [i[np.lexsort((x[i, 0], x[i, 1]))] for i in on]  # the same plane order
        tri = mtri.Triangulation(x[order[0], 0], x[order[0], 1])
        rows = [(f"u(0, x, z = {picks[0]:.2g})", U0, order[0])]
        rows += [(f"u(T, x, z = {z:.2g})", UT, i) for z, i in zip(picks, order)]
    fig, axes = plt.subplots(1 + len(rows), len(X), figsize=(2.6 * len(X), 2.5 * (1 + len(rows))))
    axes = np.asarray(axes).reshape(1 + len(rows), len(X))
    for k in range(len(X)):
        axes[0, k].imshow(X[k].reshape(dataset.input_shape), cmap="gray_r")
        axes[0, k].set_title(f"input (label {y[k]})", fontsize=9)
        for r, (title, U, at) in enumerate(rows, start=1):
            axes[r, k].tripcolor(tri, U[at, k], shading="gouraud")
            axes[r, k].set_title(title, fontsize=9)
        for ax in axes[:, k]:
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    _save(fig, path)
