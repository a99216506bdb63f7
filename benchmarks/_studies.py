"""Smooth continuous-in-time controls for the deep- and width-limit studies.

    w(t, x, y) = 2 cos(πt) exp(−|x − y|²),   b(t, x) = ½ sin(πt) cos(πx₁),
    c₁(x) = cos(πx₁),  c₂(x) = sin(πx₂),  d = 0,

sampled at the layer midpoints t_n + Δt/2 (so the explicit midpoint scheme
sees a second-order quadrature of the controls) and at the dof coordinates;
K = W M_L turns the nodal values of w into the quadrature Σ_j w(x_i, x_j) m_j u_j
of ∫ w(x_i, y) u(y) dy. The embedding E is the network's (bump functions,
interpolated), so every discretisation approximates one continuous model.
"""

from __future__ import annotations

import numpy as np

N_IN, N_OUT = 2, 2


def w(t, x, y):
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(axis=-1)
    return 2.0 * np.cos(np.pi * t) * np.exp(-d2)


def b(t, x):
    return 0.5 * np.sin(np.pi * t) * np.cos(np.pi * x[:, 0])


def c(x):
    return np.stack([np.cos(np.pi * x[:, 0]), np.sin(np.pi * x[:, 1])], axis=1)


def network(space, layers: int, scheme: str, frozen: float | None = None):
    """A dense-kernel network on ``space`` with the smooth controls above, sampled
    at the layer midpoints (``frozen``: at that t in every layer, controls constant
    in depth)."""
    from pontryx.solver import ContinuumNetwork

    net = ContinuumNetwork(space, N_IN, N_OUT, kernel="dense", scheme=scheme, layers=layers, T=1.0)
    theta = net.init_controls(seed=0)
    x, xall = space.x, space.allgather(space.x)
    for n in range(layers):
        t = (n + 0.5) * net.dt if frozen is None else frozen
        theta["W"][n] = w(t, x, xall)
        theta["b"][n] = b(t, x)
    theta["C"][...] = c(x)
    theta["d"][...] = 0.0
    return net, theta


def inputs(S: int = 16, seed: int = 0) -> np.ndarray:
    """S fixed inputs in [−1, 1]² (n_in × S)."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(N_IN, S))


def plot(path, series: dict, xlabel: str, ylabel: str, title: str, slopes=()):
    """Log–log plot of {label: (x, y)} with reference slopes [(p, label)]."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for label, (x, y) in series.items():
        ax.loglog(x, y, "o-", label=label)
    for p, x, y0, label in slopes:
        x = np.asarray(x, float)
        ax.loglog(x, y0 * (x / x[0]) ** p, "k--", lw=0.8, label=label)
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
