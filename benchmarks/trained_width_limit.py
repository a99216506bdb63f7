"""Trained-network width limit: train one configuration on n = 4, 8, 16, 32 (P1)
and n = 2, 4, 8, 16 (P2) and compare the trained kernels across meshes.

Ellipses (``N_TRAIN`` training samples, 1000 test), dense kernel, IMEX Euler,
T = 5, ``LAYERS`` layers, α = 1e-4, the field law σ_w² = 10, ρ = 0.6, β = 3, LMVM
for ``iterations`` iterations on every mesh, in three variants:

* ``γ = 0, own draws``: every mesh starts from its own white noise, no
  smoothness in width (what training did before);
* ``γ, coupled``: γ = ``GAMMA`` (the H¹-in-width regulariser) and one
  realisation of the white noise restricted from the finest mesh to every
  coarser one, so the starts converge pathwise;
* ``γ, multilevel``: γ as above; the coarsest mesh starts from the coupled draw,
  every finer one from the trained coarser network, prolonged (nested iteration).

Reported per mesh: test accuracy, final J and misfit, and the distance of the
trained kernels of consecutive meshes,
e_h = ‖I_h w_h − w_{h/2}‖ / ‖w_{h/2}‖ in L²(0, T; L²(Ω × Ω)) (and the same for b),
with observed rates log₂(e_h / e_{h/2}). Plot: benchmarks/out/trained_width_limit.png.

    .venv/bin/python benchmarks/trained_width_limit.py [--smoke | --full]
"""

from __future__ import annotations

from mpi4py import MPI

import _common as C
import numpy as np

N_TRAIN, LAYERS, GAMMA = 300, 8, 1e-4
LAW = {"variance": 10.0, "correlation_length": 0.6, "smoothness": 3}
SETTINGS = {
    "smoke": {"meshes": {1: [2, 4], 2: [1, 2]}, "iterations": 2, "n_test": 100},
    "quick": {"meshes": {1: [4, 8, 16, 32], 2: [2, 4, 8, 16]}, "iterations": 80, "n_test": 1000},
    "full": {"meshes": {1: [4, 8, 16, 32], 2: [2, 4, 8, 16]}, "iterations": 200, "n_test": 1000},
}
VARIANTS = ("γ = 0, own draws", "γ, coupled", "γ, multilevel")


def problem(n: int, degree: int, gamma: float, n_test: int):
    from pontryx.meshes import create_mesh
    from pontryx.solver import ContinuumNetwork, ReducedFunctional, WidthSpace, load_dataset

    ds = load_dataset({"name": "ellipses", "n_train": N_TRAIN, "n_test": n_test})
    space = WidthSpace(create_mesh({"kind": "unit_square", "n": n}, MPI.COMM_SELF), degree)
    net = ContinuumNetwork(space, 2, 2, kernel="dense", T=5.0, layers=LAYERS)
    rf = ReducedFunctional(net, ds.X_train, ds.y_train, alpha=1e-4, gamma=gamma)
    return net, rf, ReducedFunctional(net, ds.X_test, ds.y_test)


def norms(net, theta) -> dict:
    sp, dt = net.space, net.dt
    mm = sp.m[:, None] * sp.m[None, :]
    return {
        "W": np.sqrt(dt * sum(float(np.sum(mm * W**2)) for W in theta["W"])),
        "b": np.sqrt(dt * sum(float(np.sum(sp.m * b**2)) for b in theta["b"])),
    }


def variant(label: str, degree: int, meshes, cfg) -> list[dict]:
    from pontryx.meshes import create_mesh
    from pontryx.solver import WidthSpace
    from pontryx.solver.model.fields import FieldLaw, RestrictedNoise, field_controls
    from pontryx.solver.model.prolongation import Prolongation, prolong_controls
    from pontryx.solver.training import minimize

    law = FieldLaw(**LAW)
    gamma = 0.0 if label.startswith("γ = 0") else GAMMA
    reference = WidthSpace(
        create_mesh({"kind": "unit_square", "n": meshes[-1]}, MPI.COMM_SELF), degree
    )
    out, previous = [], None
    for n in meshes:
        net, rf, test = problem(n, degree, gamma, cfg["n_test"])
        if label == "γ, multilevel" and previous is not None:
            theta = prolong_controls(previous[0], previous[1], net)
        elif label.startswith("γ = 0"):
            theta = field_controls(net, law, 0)
        else:
            noise = RestrictedNoise(net.space, reference) if n != meshes[-1] else None
            theta = field_controls(net, law, 0, noise)
        t = C.now()
        res = minimize(rf, theta, "lmvm", max_iterations=cfg["iterations"])
        seconds = C.now() - t
        J = rf(theta)
        misfit = rf.last["misfit"]
        test(theta)
        row = {
            "n": n,
            "N": net.space.N,
            "J": J,
            "misfit": misfit,
            "test": test.metric(),
            "time": seconds,
            "reason": res.reason,
            "net": net,
            "theta": theta,
        }
        if out:
            prev = out[-1]
            P = Prolongation(prev["net"].space, net.space)
            moved = {
                "W": np.stack([P.kernel(W) for W in prev["theta"]["W"]]),
                "b": np.stack([P(b) for b in prev["theta"]["b"]]),
            }
            diff = norms(net, {k: moved[k] - theta[k] for k in moved})
            size = norms(net, theta)
            row.update({f"e_{k}": diff[k] / size[k] for k in diff})
        out.append(row)
        previous = (net, theta)
    return out


def main(argv=None) -> str:
    import _studies as St

    args = C.arguments(__doc__, argv)
    cfg = SETTINGS[C.mode(args)]
    rows, series = [], {}
    with C.limit_threads(args.threads):
        for degree, meshes in cfg["meshes"].items():
            for label in VARIANTS:
                result = variant(label, degree, meshes, cfg)
                e = [r.get("e_W") for r in result[1:]]
                series[f"P{degree}, {label}"] = ([1.0 / r["n"] for r in result[:-1]], e)
                for i, r in enumerate(result):
                    rate = np.log2(result[i - 1]["e_W"] / r["e_W"]) if i > 1 else "–"
                    rows.append(
                        [
                            f"P{degree}",
                            label,
                            r["n"],
                            r["N"],
                            f"{100 * r['test']:.1f} %",
                            r["J"],
                            r["misfit"],
                            r.get("e_W", "–"),
                            rate,
                            r.get("e_b", "–"),
                            r["time"],
                        ]
                    )
    png = C.OUT / "trained_width_limit.png"
    St.plot(
        png,
        series,
        "h = 1/n (coarser mesh of the pair)",
        "‖I_h w_h − w_{h/2}‖ / ‖w_{h/2}‖",
        "Trained kernels under refinement",
    )
    body = (
        f"Ellipses ({N_TRAIN} training, {cfg['n_test']} test samples), dense kernel, IMEX "
        f"Euler, T = 5, {LAYERS} layers, α = 1e-4, initial law σ_w² = 10, ρ = 0.6, β = 3, "
        f"LMVM {cfg['iterations']} iterations per mesh; γ = {GAMMA:g} in the γ rows. e_W, e_b: "
        "distance of the trained controls of the mesh above (interpolated, I_h) and this one, "
        "relative, in L²(0,T;L²); rate: log₂ of consecutive e_W. "
        f"Plot: `benchmarks/out/{png.name}`.\n\n"
        + C.table(
            [
                "space",
                "variant",
                "n",
                "N",
                "test acc.",
                "J",
                "misfit",
                "e_W",
                "rate",
                "e_b",
                "time s",
            ],
            rows,
        )
    )
    return C.publish("Trained networks under mesh refinement", body)


if __name__ == "__main__":
    main()
