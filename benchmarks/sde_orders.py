"""Noise in depth: strong and weak orders of Euler–Maruyama, and training with it.

1. Orders. du = σ(𝒦u + b) dt + g dW on the unit square (P1, ε = 0), the smooth
   controls of ``_studies.py`` at the layer midpoints, S fixed inputs with P noise
   paths each, W the Q-Wiener process of ``model.noise`` (Matérn, ρ = 0.3, β = 1).
   One Brownian path per column is drawn on the finest grid (N_ref layers: ξᵏ
   from the canonical keyed draw, ΔWᵏ = √Δt_ref T ξᵏ); a network with N_t layers
   takes the sums of N_ref/N_t fine increments, so every depth sees the same path
   (coupling, as in Kloeden–Platen §9.7); every scheme adds the increment to its
   explicit update (RK4: to U^{n+1} after its noise-free stages). Errors against N_ref, relative to
   max |Ŷ_ref|: strong (E|Ŷ_N − Ŷ_ref|²)^{1/2} (over inputs, paths and outputs),
   weak max_s |E_p[Ŷ_N − Ŷ_ref]| (the mean over paths, per input and output; its
   Monte Carlo standard error is reported). Fitted orders over the finest four
   depths. Additive noise: Milstein = Euler–Maruyama, whose strong order is then 1
   (the generic ½ is for multiplicative noise); weak order 1.
2. Training. Ellipses (unit square n = 6, 8 layers, T = 5, dense), LMVM from the
   same start with and without noise in depth (g, M paths, fixed): test accuracy
   of the deterministic network and under Gaussian input noise of std δ.

Plot: benchmarks/out/sde_orders.png.

    .venv/bin/python benchmarks/sde_orders.py [--smoke | --full]
"""

from __future__ import annotations

import math

from mpi4py import MPI

import _common as C
import _studies as St
import numpy as np

SCHEMES = ("imex_euler", "midpoint", "rk4")
SETTINGS = {
    "smoke": {"n": 3, "S": 2, "P": 8, "ref": 16, "depths": [2, 4, 8], "train": (40, 60, 4, 5)},
    "quick": {
        "n": 6,
        "S": 4,
        "P": 200,
        "ref": 512,
        "depths": [4, 8, 16, 32],
        "train": (500, 500, 4, 150),
    },
    "full": {
        "n": 8,
        "S": 8,
        "P": 500,
        "ref": 2048,
        "depths": [4, 8, 16, 32, 64, 128],
        "train": (1000, 1000, 8, 300),
    },
}
AMPLITUDE, RHO = 1.0, 0.3
DELTAS = (0.0, 0.1, 0.2, 0.3)


class CoupledPath:
    """g ΔWⁿ of a network with ``layers`` layers: the sum of the fine increments of
    one Brownian path per column, drawn on the N_ref grid (T linear: T Σξ = Σ Tξ)."""

    def __init__(self, noise, ids, ref: int, layers: int, T: float = 1.0):
        self.noise, self.ids, self.r = noise, ids, ref // layers
        self.scale = noise.amplitude * math.sqrt(T / ref)

    def __call__(self, n: int) -> np.ndarray:
        xi = sum(self.noise.standard(n * self.r + k, self.ids) for k in range(self.r))
        X = self.noise.factor(xi)
        X *= self.scale
        return X


def outputs(space, noise, X, ids, layers, scheme, ref):
    from pontryx.solver import Sweep

    net, theta = St.network(space, layers, scheme)
    Y = Sweep(net, theta, noise=CoupledPath(noise, ids, ref, layers)).forward(X)[0]
    net.destroy()
    return Y


def orders(cfg):
    from pontryx.meshes import create_mesh
    from pontryx.solver import WidthSpace
    from pontryx.solver.model.noise import DepthNoise

    space = WidthSpace(create_mesh({"kind": "unit_square", "n": cfg["n"]}, MPI.COMM_SELF))
    noise = DepthNoise(space, AMPLITUDE, correlation_length=RHO)
    S, P = cfg["S"], cfg["P"]
    X = np.repeat(St.inputs(S), P, axis=1)  # column s·P + p: path p of input s
    ids = np.arange(S * P)
    result = {}
    for scheme in SCHEMES:
        ref = outputs(space, noise, X, ids, cfg["ref"], scheme, cfg["ref"])
        scale = np.abs(ref).max()
        rows = []
        for L in cfg["depths"]:
            D = (outputs(space, noise, X, ids, L, scheme, cfg["ref"]) - ref) / scale
            D = D.reshape(D.shape[0], S, P)
            strong = float(np.sqrt(np.mean(D**2)))
            mean = D.mean(axis=2)
            weak = float(np.abs(mean).max())
            se = float(D.std(axis=2).max() / math.sqrt(P))
            rows.append((L, strong, weak, se))
        result[scheme] = rows
    det = {}  # the same study without noise: the deterministic order, for comparison
    for scheme in SCHEMES:
        ref = outputs(space, _Off(noise), X[:, ::P], ids[::P], cfg["ref"], scheme, cfg["ref"])
        scale = np.abs(ref).max()
        det[scheme] = [
            float(
                np.abs(
                    outputs(space, _Off(noise), X[:, ::P], ids[::P], L, scheme, cfg["ref"]) - ref
                ).max()
                / scale
            )
            for L in cfg["depths"]
        ]
    noise.destroy()
    return space.N, result, det


class _Off:
    """The noise with g = 0 (the deterministic network through the same code)."""

    def __init__(self, noise):
        self.amplitude, self.factor, self.standard = 0.0, noise.factor, noise.standard


def training(cfg):
    """Test accuracy (deterministic network) and under input noise δ, LMVM with and
    without noise in depth from the same start."""
    from pontryx.meshes import create_mesh
    from pontryx.solver import ContinuumNetwork, ReducedFunctional, WidthSpace
    from pontryx.solver.data import load_dataset
    from pontryx.solver.model.noise import DepthNoise
    from pontryx.solver.training import minimize

    n_train, n_test, M, iters = cfg["train"]
    ds = load_dataset({"name": "ellipses", "n_train": n_train, "n_test": n_test, "seed": 0})
    space = WidthSpace(create_mesh({"kind": "unit_square", "n": 6}, MPI.COMM_SELF))
    rows = []
    for g in (0.0, 0.5, 1.0):
        net = ContinuumNetwork(space, 2, 2, layers=8, T=5.0)
        theta = net.init_controls(seed=0, gain=1.0)
        noise = DepthNoise(space, g, correlation_length=RHO, samples=M) if g else None
        rf = ReducedFunctional(net, ds.X_train, ds.y_train, alpha=1e-4, noise=noise)
        t = C.now()
        res = minimize(rf, theta, "lmvm", {}, max_iterations=iters)
        seconds = C.now() - t
        accs = []
        rng = np.random.default_rng(7)
        for delta in DELTAS:
            Xt = ds.X_test + delta * rng.standard_normal(ds.X_test.shape)
            test = ReducedFunctional(net, Xt, ds.y_test)
            test(theta)
            accs.append(test.metric())
        label = "none" if not g else f"g = {g:g}, M = {M}"
        rows.append([label, res.trainer.iteration, res.history[-1].loss, *accs, seconds])
        if noise is not None:
            noise.destroy()
        net.destroy()
    return rows


def plot(path, depths, result, det):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2))
    dt = 1.0 / np.asarray(depths, float)
    for scheme, marker in zip(SCHEMES, "os^", strict=True):
        rows = result[scheme]
        ax.loglog(dt, [r[1] for r in rows], marker + "-", label=f"{scheme}: strong")
        ax.loglog(dt, [r[2] for r in rows], marker + "--", label=f"{scheme}: weak")
    ax.loglog(dt, det["imex_euler"], "k:", lw=1, label="imex_euler, g = 0")
    e0 = result["imex_euler"][0][1]
    ax.loglog(dt, e0 * (dt / dt[0]) ** 0.5, color="0.6", lw=0.8, label="slope ½")
    ax.loglog(dt, e0 * (dt / dt[0]), color="0.3", lw=0.8, label="slope 1")
    ax.set_xlabel("Δt")
    ax.set_ylabel("error / max |Ŷ_ref|")
    ax.set_title("Euler–Maruyama in depth, additive Q-Wiener noise")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> str:
    args = C.arguments(__doc__, argv)
    cfg = SETTINGS[C.mode(args)]
    with C.limit_threads(args.threads):
        N, result, det = orders(cfg)
        train_rows = training(cfg)
    depths, k = cfg["depths"], min(4, len(cfg["depths"]))
    rows = []
    for i, L in enumerate(depths):
        row = [L]
        for s in SCHEMES:
            _, strong, weak, se = result[s][i]
            prev = result[s][i - 1] if i else None
            row += [strong, math.log2(prev[1] / strong) if prev else "–", weak, se]
        row += [det["imex_euler"][i]]
        rows.append(row)
    fits = {
        s: (
            C.fit_exponent(depths[-k:], [r[1] for r in result[s][-k:]]),
            C.fit_exponent(depths[-k:], [r[2] for r in result[s][-k:]]),
        )
        for s in SCHEMES
    }
    png = C.OUT / "sde_orders.png"
    plot(png, depths, result, det)
    body = (
        f"Unit square P1, N = {N}, ε = 0, tanh, the controls of `_studies.py`; {cfg['S']} "
        f"inputs × {cfg['P']} coupled Brownian paths, W Matérn (ρ = {RHO}, β = 1), "
        f"g = {AMPLITUDE}; reference N_t = {cfg['ref']} with the same paths. Strong: RMS "
        "over inputs, paths and outputs; weak: max over inputs and outputs of the mean over "
        "paths (± its Monte Carlo standard error); last column: the same network without "
        f"noise. Plot: `benchmarks/out/{png.name}`.\n\n"
        + C.table(
            [
                "N_t",
                *(x for s in SCHEMES for x in (f"{s} strong", "rate", f"{s} weak", "± s.e.")),
                "imex_euler, g = 0",
            ],
            rows,
        )
        + f"\n\nFitted orders (finest {k} depths): "
        + ", ".join(
            f"{s} strong **{-fits[s][0]:.2f}**, weak **{-fits[s][1]:.2f}**" for s in SCHEMES
        )
        + " (additive noise: Milstein = Euler–Maruyama, strong order 1 — the generic ½ is"
        " multiplicative noise's; weak order 1).\n\n"
        + f"Training on ellipses ({cfg['train'][0]} samples, unit square n = 6, 8 layers, "
        f"T = 5, LMVM {cfg['train'][3]} iterations, α = 1e-4), the same start; test accuracy "
        f"of the deterministic network ({cfg['train'][1]} test samples) with Gaussian noise "
        "of std δ on the test inputs:\n\n"
        + C.table(
            ["noise in depth", "iterations", "J_M", *(f"acc δ = {d:g}" for d in DELTAS), "s"],
            train_rows,
        )
    )
    return C.publish("Noise in depth: Euler–Maruyama orders and training", body)


if __name__ == "__main__":
    main()
