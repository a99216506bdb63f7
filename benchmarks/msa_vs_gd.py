"""Every method's training loss J against iterations and against time, unbounded and bounded.

Li, Chen, Tai & E (2018) report faster early progress per iteration for the
extended method of successive approximations than for gradient descent. Here
the same network (the model of ``training.py``: dense kernel, unit_square
n = 8, 8 layers, tanh, α = 1e-4, 1000 ``ellipses`` samples) is trained from the
same initial controls, each method in a fresh process, by

* ``emsa`` with its defaults (Gauss–Newton state curvature, Gauss–Seidel sweep),
  ``emsa (jacobi)`` (the same with the Jacobi sweep, whose layer solves are
  independent), ``emsa (Li et al.)`` (the published augmented Hamiltonian,
  Jacobi sweep, ρ₀ = 1) and ``msa`` (Li et al.'s Algorithm 1 with backtracking);
* full-batch gradient descent (``sgd`` without minibatches or momentum, in its
  default L²(M_L) metric: θ ← θ − η ω⁻¹∇J with η = ``GD_STEP`` = 0.3, the largest
  of 0.1, 0.3, 1 whose J decreases monotonically over the first 50 steps), full-
  batch ``adam`` (η = 1e-2);
* the quasi-Newton methods ``lmvm`` (PETSc TAO) and ``lbfgs`` (pontryx's), and
  TAO's trust-region Newton ``ntr`` with the exact Hessian action.

After every iteration the full-batch J and the cumulative time are recorded.
The first table gives J after 1, 2, 5, 10, 20, … iterations and after 1, 5 and
20 s; ``out/msa_vs_gd.png`` plots J against the iteration and the time. The
second table repeats the race with box constraints (``BOUNDS``: |W| ≤ 10,
|b| ≤ 1), which every method keeps (TAO's BLMVM for lmvm, the projected
lbfgs and adam, BLMVM layer solves for msa/emsa): J at the end, the projected
gradient norm (0 at a KKT point) and the fraction of W at its bound.

    .venv/bin/python benchmarks/msa_vs_gd.py [--smoke | --full] [--threads T] [--clock cpu]
        [--method LABEL ...]

(``--method``: only these rows by label, e.g. ``--method emsa "emsa (jacobi)" lmvm``;
the depth-axis table runs with ``"emsa (jacobi)"``.)
"""

from __future__ import annotations

import _common as C

GD_STEP = 0.3
#: label → (method, options)
METHODS = {
    "emsa": ("emsa", {}),
    "emsa (jacobi)": ("emsa", {"order": "jacobi"}),
    "emsa (Li et al.)": ("emsa", {"curvature": "none", "order": "jacobi", "rho": 1.0}),
    "msa": ("msa", {}),
    "gd": ("sgd", {"learning_rate": GD_STEP}),
    "adam": ("adam", {"learning_rate": 1e-2}),
    "lmvm": ("lmvm", {}),
    "lbfgs": ("lbfgs", {}),
    "ntr": ("ntr", {}),
}
BOUNDS = {"W": 10.0, "b": 1.0}  # |w| ≤ 10 holds about 3/4 of the initial kernel (σ = 9)
BOUNDED = ("emsa", "msa", "adam", "lmvm", "lbfgs")
SECONDS = (1.0, 5.0, 20.0)
BOUNDED_COLUMNS = [
    "method", "J₀", "J at end", "‖P∇J‖", "W at bound", "violation", "iterations", "time s",
]  # fmt: skip
SETTINGS = {
    "smoke": {
        "mesh": 3,
        "layers": 3,
        "samples": 32,
        "iterations": 3,
        "budget": 20.0,
        "methods": ("emsa", "gd", "lmvm"),
        "bounded": ("emsa",),
        "depth_its": 2,
    },
    "quick": {"mesh": 8, "layers": 8, "samples": 1000, "iterations": 50, "budget": 60.0},
    "full": {"mesh": 8, "layers": 8, "samples": 1000, "iterations": 300, "budget": 600.0},
}
ALPHA = 1e-4
CHECKPOINTS = (1, 2, 5, 10, 20, 50, 100, 200, 300)


def worker(cfg: dict, threads: int) -> None:
    from mpi4py import MPI

    import numpy as np

    from pontryx.meshes import create_mesh
    from pontryx.solver import (
        ContinuumNetwork,
        Layout,
        ReducedFunctional,
        WidthSpace,
        load_dataset,
    )
    from pontryx.solver.model.bounds import Bounds
    from pontryx.solver.training import minimize

    ds = load_dataset({"name": "ellipses", "n_train": cfg["samples"], "n_test": 4})
    with C.limit_threads(threads):
        layout = None
        if cfg.get("depth"):  # the Jacobi sweep's block solves over a depth axis
            layout = Layout.create(MPI.COMM_WORLD, width=1, data=1, depth=cfg["depth"])
        comm = layout.width if layout is not None else MPI.COMM_WORLD
        space = WidthSpace(create_mesh({"kind": "unit_square", "n": cfg["mesh"]}, comm))
        net = ContinuumNetwork(space, 2, 2, layers=cfg["layers"])
        theta = net.init_controls(seed=0)
        rf = ReducedFunctional(net, ds.X_train, ds.y_train, alpha=ALPHA, layout=layout)
        bounds = Bounds(BOUNDS, net.trainable) if cfg.get("bounded") else None
        if bounds is not None:
            bounds.project(theta)  # every method starts from the same admissible point
        curve = [(0, rf(theta), 0.0)]
        last = {}
        t0 = C.now()

        class Stop(Exception):
            pass

        def callback(rec):
            # sgd/adam record J at θ_{k−1} (before their step): "J after k steps"
            k = rec.iteration - 1 if cfg["method"] in ("sgd", "adam") else rec.iteration
            if k > 0:
                curve.append((k, rec.loss, C.now() - t0))
            last["grad_norm"] = rec.grad_norm
            if C.now() - t0 > cfg["budget"]:
                raise Stop

        its = cfg["iterations"] + (1 if cfg["method"] in ("sgd", "adam") else 0)
        try:
            res = minimize(
                rf,
                theta,
                cfg["method"],
                cfg["options"],
                max_iterations=its,
                on_record=callback,
                bounds=bounds,
            )
            reason = res.reason
        except Stop:
            reason = "time budget"
        out = {"curve": curve, "reason": reason}
        if MPI.COMM_WORLD.rank:
            return
        if bounds is not None:
            out["violation"] = bounds.violation(theta)
            lim = BOUNDS["W"]
            out["active"] = float(np.mean(np.abs(theta["W"]) >= lim))
            out["grad_norm"] = last.get("grad_norm")
        C.emit(out)


def plot(curves: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, curve in curves.items():
        k, J, t = zip(*curve)
        a.semilogy(k, J, label=name)
        b.loglog([max(x, 1e-3) for x in t[1:]], J[1:], label=name)
    a.set_xlabel("iteration")
    a.set_ylabel("training loss J")
    b.set_xlabel("time s")
    a.legend()
    for ax in (a, b):
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("ellipses: E-MSA / MSA vs gradient descent and L-BFGS, same initial controls")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _at_time(curve, seconds):
    """J of the last iterate reached within ``seconds`` (or "–")."""
    within = [J for _, J, t in curve if t <= seconds]
    return within[-1] if within else "–"


def main(argv=None) -> str:
    p = C.parser(__doc__, threads=1)
    p.add_argument("--method", nargs="+", help="only these rows (labels of METHODS)")
    args = C.parse(p, argv)
    if args.worker:
        return C.in_worker(args, worker)
    s = SETTINGS[C.mode(args)]

    def chosen(label):
        return not args.method or label in args.method

    labels = [label for label in s.get("methods", tuple(METHODS)) if chosen(label)]
    curves, notes, bounded = {}, {}, {}
    for label in labels:
        method, options = METHODS[label]
        cfg = {**s, "method": method, "options": options}
        try:
            r = C.run_worker(__file__, cfg, threads=args.threads, timeout=s["budget"] + 120)
        except RuntimeError as e:
            notes[label] = str(e).splitlines()[-1][:80]
            continue
        curves[label] = r["curve"]
        notes[label] = r["reason"]
    for label in [lb for lb in s.get("bounded", BOUNDED) if chosen(lb)]:
        method, options = METHODS[label]
        cfg = {**s, "method": method, "options": options, "bounded": True}
        try:
            bounded[label] = C.run_worker(
                __file__, cfg, threads=args.threads, timeout=s["budget"] + 120
            )
        except RuntimeError as e:
            notes[f"{label} (bounded)"] = str(e).splitlines()[-1][:80]
    depth_rows = []
    if s.get("depth", True) and chosen("emsa (jacobi)"):
        method, options = METHODS["emsa (jacobi)"]
        times = {}
        for P in (1, 2):
            cfg = {**s, "method": method, "options": options, "iterations": s.get("depth_its", 10)}
            cfg["budget"] = 10 * s["budget"]
            if P > 1:
                cfg["depth"] = P
            try:
                r = C.run_worker(__file__, cfg, threads=args.threads, ranks=P if P > 1 else None,
                                 timeout=cfg["budget"] + 120)  # fmt: skip
            except RuntimeError as e:
                notes[f"depth {P}"] = str(e).splitlines()[-1][:80]
                continue
            k, J, t = r["curve"][-1]
            times[P] = t / max(k, 1)
            depth_rows.append([P, k, J, t, times[P], times[1] / times[P] if 1 in times else "–"])
    marks = [k for k in CHECKPOINTS if k <= s["iterations"]]
    rows = []
    for name, curve in curves.items():
        at = {k: (J, t) for k, J, t in curve}
        last = curve[-1]
        rows.append(
            [name, curve[0][1]]
            + [at[k][0] if k in at else "–" for k in marks]
            + [_at_time(curve, t) for t in SECONDS]
            + [last[1], last[0], last[2], last[2] / max(last[0], 1)]
        )
    png = C.OUT / "msa_vs_gd.png"
    if curves:
        plot(curves, png)
    body = (
        f"Dense kernel on unit_square n = {s['mesh']} (P1), {s['layers']} layers, tanh, "
        f"α = {ALPHA:g}, {s['samples']} ellipses samples, {args.threads} thread(s); the same "
        "initial controls for every method. J = full-batch training loss after k "
        "iterations (an E-MSA/MSA iteration is one sweep over all layers with its "
        f"accepted step; gd: one L²-gradient step with η = {GD_STEP:g}; adam: one full-batch "
        "step; lmvm/lbfgs: one accepted iteration; ntr: one TAO iteration, a rejected "
        "trust-region step included) and after t seconds, "
        f"at most {s['iterations']} iterations or {s['budget']:g} s. Plot: `out/{png.name}`.\n\n"
        + C.table(
            ["method", "J₀"]
            + [f"J after {k}" for k in marks]
            + [f"J at {t:g} s" for t in SECONDS]
            + ["J at end", "iterations", "time s", "s/iteration"],
            rows,
        )
    )
    if bounded:
        brows = []
        for name, r in bounded.items():
            curve = r["curve"]
            brows.append(
                [name, curve[0][1], curve[-1][1], r.get("grad_norm") or "–", r["active"],
                 r["violation"], curve[-1][0], curve[-1][2]]
            )  # fmt: skip
        body += (
            f"\n\nBounded: |W| ≤ {BOUNDS['W']:g}, |b| ≤ {BOUNDS['b']:g} (the start projected "
            "onto the box); ‖P∇J‖ = the projected gradient's L² norm (0 at a KKT point), "
            "violation = the largest distance of an iterate entry outside the box.\n\n"
            + C.table(BOUNDED_COLUMNS, brows)
        )
    if depth_rows:
        body += (
            "\n\nThe Jacobi sweep over a depth axis (`emsa`, `order: jacobi`, `parallel.depth`): "
            "each depth rank solves its contiguous block of layers and broadcasts it; the "
            "trajectory, the sensitivities and the step control run on every depth rank. "
            "The iterates are those of one rank (tested bit for bit).\n\n"
            + C.table(
                ["depth ranks", "sweeps", "J at end", "time s", "s/sweep", "speed-up"],
                depth_rows,
            )
        )
    failed = {k: v for k, v in notes.items() if k not in curves and k not in bounded}
    if failed:
        body += "\n\nFailed: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
    return C.publish("Training methods: loss per iteration and per second", body)


if __name__ == "__main__":
    main()
