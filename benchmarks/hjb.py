"""HJB in reduced dimension: the feedback law of the value function against the
open-loop solution pontryx finds, under grid and time-step refinement.

The problem of examples/hjb.yaml: the continuum network on an interval of one P1
cell (state u ∈ R²), ε = 0, tanh, the kernel W = [[0, −2], [2, 0]] fixed, the bias
b(t) ∈ [−1, 1]² as the control, running cost (α/2)‖b‖²_{M_L} (α = 0.2), terminal
cost ½(Cᵀ M_L u(T) + d − y)² (C = (1, −1), d = 0, y = 1), T = 1, from four
initial states. Refinement level k: the grid G = [−2.5, 2.5]² with n = n₀·2^k
cells per axis (Δτ from the CFL condition, so Δτ ∝ h), and the network's N_t =
N₀·2^k layers. At each level:

* V_h(0, u₀) from the monotone upwind scheme (:mod:`pontryx.solver.hjb.scheme`);
* J_closed: the discrete cost (N_t layers) of the HJB feedback law simulated in
  closed loop along the network's own IMEX Euler steps;
* J_open: the minimum of the same discrete cost found by pontryx's ``lmvm`` (run as
  TAO's bounded ``blmvm``) from b = 0;

against V* = J_open with N_t = ``reference`` layers (the continuous value V(0, u₀)
to O(1/reference)). Reported: the largest errors over the initial states and their
observed orders. Plot: the value function at t = 0 with the closed-loop and
open-loop trajectories of the finest level (benchmarks/out/hjb_value.png).

    .venv/bin/python benchmarks/hjb.py [--smoke | --full]
"""

from __future__ import annotations

import itertools
import time

from mpi4py import MPI  # noqa: F401  (before PETSc)

import _common as C
import numpy as np

SETTINGS = {
    "smoke": {"levels": 2, "n0": 8, "layers0": 4, "reference": 64, "states": 2},
    "quick": {"levels": 4, "n0": 16, "layers0": 8, "reference": 512, "states": 4},
    "full": {"levels": 5, "n0": 16, "layers0": 8, "reference": 1024, "states": 4},
}
STATES = [[0.5, 0.0], [-0.5, 0.5], [0.0, -0.8], [0.8, 0.6]]
PROBLEM = {"W": [[0.0, -2.0], [2.0, 0.0]], "C": [1.0, -1.0], "d": 0.0, "y": 1.0, "alpha": 0.2}
LOWER, UPPER, T, BOUND = [-2.5, -2.5], [2.5, 2.5], 1.0, 1.0


def network(layers: int):
    from pontryx.solver.hjb.compare import ReducedNetwork

    p = PROBLEM
    return ReducedNetwork(p["W"], p["C"], p["d"], p["y"], p["alpha"], BOUND, T, layers)


def orders(errors) -> list:
    return [
        None,
        *(
            float(np.log2(a / b)) if a > 0 and b > 0 else None
            for a, b in itertools.pairwise(errors)
        ),
    ]


def plot(path, vf, closed, opened) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.4))
    X, Y = np.meshgrid(*vf.axes, indexing="ij")
    cs = ax.contourf(X, Y, vf.levels[0], 40, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="V_h(0, u)")
    for k, (c, o) in enumerate(zip(closed, opened, strict=True)):
        ax.plot(
            c[:, 0], c[:, 1], "w-", lw=2.2, label="closed loop: HJB feedback" if k == 0 else None
        )
        ax.plot(
            o[:, 0], o[:, 1], "r--", lw=1.3, label="open loop: pontryx lmvm" if k == 0 else None
        )
        ax.plot(*c[0], "wo", ms=5)
    ax.set_xlabel("u₁")
    ax.set_ylabel("u₂")
    ax.set_title(f"V_h(0, u), {vf.n[0]}² cells; trajectories over t ∈ [0, {T:g}]")
    ax.legend(loc="upper right", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(argv=None) -> str:
    from pontryx.solver.hjb.scheme import ValueFunction

    args = C.parse(C.parser(__doc__.splitlines()[0]), argv)
    cfg = SETTINGS[C.mode(args)]
    states = STATES[: cfg["states"]]
    t0 = time.perf_counter()
    with C.limit_threads(args.threads):
        ref = network(cfg["reference"])
        try:
            star = [ref.open_loop(u0, max_iterations=2000)[0] for u0 in states]
        finally:
            ref.destroy()
        rows, errs = [], {"V": [], "closed": [], "open": [], "gap": []}
        for k in range(cfg["levels"]):
            n, layers = cfg["n0"] * 2**k, cfg["layers0"] * 2**k
            rn = network(layers)
            try:
                vf = ValueFunction(rn.system, LOWER, UPPER, n, T, multiple=layers)
                t = C.now()
                vf.solve()
                t_solve = C.now() - t
                V, Jc, Jo, closed, opened = [], [], [], [], []
                for u0 in states:
                    V.append(vf.value(0.0, u0))
                    jc, cc = rn.closed_loop(vf, u0)
                    jo, co, _ = rn.open_loop(u0, max_iterations=1000)
                    Jc.append(jc)
                    Jo.append(jo)
                    closed.append(rn.trajectory(cc))
                    opened.append(rn.trajectory(co))
            finally:
                rn.destroy()
            V, Jc, Jo, S = map(np.array, (V, Jc, Jo, star))
            e = {
                "V": np.max(np.abs(V - S)),
                "closed": np.max(np.abs(Jc - S)),
                "open": np.max(np.abs(Jo - S)),
                "gap": np.max(Jc - Jo),
            }
            for key, v in e.items():
                errs[key].append(float(v))
            rows.append([f"{n}²", f"{vf.h[0]:.4f}", f"{vf.dt:.4f}", layers, t_solve])
            rows[-1] += [e["V"], e["closed"], e["gap"], e["open"], float(np.min(Jc - Jo))]
        for key in errs:
            errs[key] = orders(errs[key])
        for r, ov, oc, og, oo in zip(
            rows, errs["V"], errs["closed"], errs["gap"], errs["open"], strict=True
        ):
            r[5] = f"{C.fmt(r[5])} ({C.fmt(ov, 2) if ov is not None else '–'})"
            r[6] = f"{C.fmt(r[6])} ({C.fmt(oc, 2) if oc is not None else '–'})"
            r[7] = f"{C.fmt(r[7])} ({C.fmt(og, 2) if og is not None else '–'})"
            r[8] = f"{C.fmt(r[8])} ({C.fmt(oo, 2) if oo is not None else '–'})"
        per_state = [
            [f"({u[0]:g}, {u[1]:g})", s, v, jc, jo]
            for u, s, v, jc, jo in zip(states, star, V, Jc, Jo, strict=True)
        ]
    png = C.OUT / "hjb_value.png"
    plot(png, vf, closed, opened)
    body = (
        "Two-dof network (tanh, W = [[0, −2], [2, 0]] fixed, b ∈ [−1, 1]², α = 0.2, "
        f"y = 1, T = {T:g}); V* = open-loop optimum with {cfg['reference']} layers. Level k: "
        f"grid {cfg['n0']}·2^k cells per axis on [−2.5, 2.5]² (Δτ by CFL), network "
        f"{cfg['layers0']}·2^k layers. err X = max over the {len(states)} initial states of "
        "|X − V*|; J_closed − J_open its largest value; observed orders in brackets. The "
        "feedback law cannot beat the open-loop optimum of the same discrete problem: the "
        "last column, the smallest J_closed − J_open, stays ≥ 0 (up to the open-loop "
        "tolerance) when lmvm found the global minimum.\n\n"
        + C.table(
            [
                "grid",
                "h",
                "Δτ",
                "N_t",
                "HJB solve (s)",
                "err V_h(0,u₀)",
                "err J_closed",
                "J_closed − J_open",
                "err J_open",
                "min (J_closed − J_open)",
            ],
            rows,
        )
        + "\n\nFinest level, per initial state:\n\n"
        + C.table(["u₀", "V*", "V_h(0, u₀)", "J_closed", "J_open"], per_state)
        + f"\n\nPlot: `benchmarks/out/{png.name}`. Total {time.perf_counter() - t0:.0f} s."
    )
    text = C.section("HJB feedback against the open-loop solution (two-dof network)", body)
    C.report(text)
    return text


if __name__ == "__main__":
    main()
