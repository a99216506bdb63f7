"""MSA vs gradient descent: the training loss J against iterations and against time.

Li, Chen, Tai & E (2018) report faster early progress per iteration for the
extended method of successive approximations than for gradient descent. Here
the same network (the model of ``training.py``: dense kernel, unit_square
n = 8, 8 layers, tanh, α = 1e-4, 1000 ``ellipses`` samples) is trained from the
same initial controls, each method in a fresh process, by E-MSA and MSA (their
default options: adaptive ρ from ρ₀ = 1, resp. backtracking along the sweep;
inner L-BFGS in the L² metric), full-batch gradient descent (``sgd`` without
minibatches or momentum, in its default L²(M_L) metric: θ ← θ − η ω⁻¹∇J with
η = ``GD_STEP`` = 0.3, the largest of 0.1, 0.3, 1 whose J decreases
monotonically over the first 50 steps — η = 1 overshoots to J ≈ 2 after five
steps; in the Euclidean nodal coordinates η = 1 was needed and J barely moved)
and PETSc TAO LMVM (L² metric too). After every
iteration the full-batch J and the cumulative time are recorded. Prints the J
after 1, 2, 5, 10, 20, … iterations with the time, and writes
``out/msa_vs_gd.png`` (J vs iteration and J vs time).

    .venv/bin/python benchmarks/msa_vs_gd.py [--smoke | --full] [--threads T] [--clock cpu]
"""

from __future__ import annotations

import json
import subprocess

import _common as C

GD_STEP = 0.3
METHODS = {
    "emsa": {},
    "msa": {},
    "gd": {"learning_rate": GD_STEP},
    "lmvm": {},
}
TRAINER = {"gd": "sgd"}
SETTINGS = {
    "smoke": {"mesh": 3, "layers": 3, "samples": 32, "iterations": 3, "budget": 20.0},
    "quick": {"mesh": 8, "layers": 8, "samples": 1000, "iterations": 50, "budget": 60.0},
    "full": {"mesh": 8, "layers": 8, "samples": 1000, "iterations": 300, "budget": 600.0},
}
ALPHA = 1e-4
CHECKPOINTS = (1, 2, 5, 10, 20, 50, 100, 200, 300)


def worker(cfg: dict, threads: int) -> None:
    from mpi4py import MPI

    from pontryx.meshes import create_mesh
    from pontryx.solver import ContinuumNetwork, ReducedFunctional, WidthSpace, load_dataset
    from pontryx.solver.training import minimize

    ds = load_dataset({"name": "ellipses", "n_train": cfg["samples"], "n_test": 4})
    with C.limit_threads(threads):
        space = WidthSpace(create_mesh({"kind": "unit_square", "n": cfg["mesh"]}, MPI.COMM_WORLD))
        net = ContinuumNetwork(space, 2, 2, layers=cfg["layers"])
        theta = net.init_controls(seed=0)
        rf = ReducedFunctional(net, ds.X_train, ds.y_train, alpha=ALPHA)
        curve = [(0, rf(theta), 0.0)]
        t0 = C.now()

        class Stop(Exception):
            pass

        def callback(rec):
            # sgd records J at θ_{k−1} (before its step): shift to "J after k steps"
            k = rec.iteration - 1 if cfg["method"] == "gd" else rec.iteration
            if k > 0:
                curve.append((k, rec.loss, C.now() - t0))
            if C.now() - t0 > cfg["budget"]:
                raise Stop

        its = cfg["iterations"] + (1 if cfg["method"] == "gd" else 0)
        try:
            res = minimize(
                rf,
                theta,
                TRAINER.get(cfg["method"], cfg["method"]),
                cfg["options"],
                max_iterations=its,
                on_record=callback,
            )
            reason = res.reason
        except Stop:
            reason = "time budget"
        C.emit({"curve": curve, "reason": reason})


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


def main(argv=None) -> str:
    p = C.parser(__doc__.splitlines()[0])
    p.set_defaults(threads=1)
    args = C.parse(p, argv)
    if args.worker:
        return worker(json.loads(args.worker), args.threads)
    s = SETTINGS[C.mode(args)]
    curves, notes = {}, {}
    for name, options in METHODS.items():
        cfg = {**s, "method": name, "options": options}
        try:
            r = C.run_worker(__file__, cfg, threads=args.threads, timeout=s["budget"] + 120)
        except (subprocess.TimeoutExpired, RuntimeError) as e:
            notes[name] = str(e).splitlines()[-1][:80]
            continue
        curves[name] = r["curve"]
        notes[name] = r["reason"]
    marks = [k for k in CHECKPOINTS if k <= s["iterations"]]
    rows = []
    for name, curve in curves.items():
        at = {k: (J, t) for k, J, t in curve}
        last = curve[-1]
        rows.append(
            [name, curve[0][1]]
            + [at[k][0] if k in at else "–" for k in marks]
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
        f"accepted step; gd: one L²-gradient step with η = {GD_STEP:g}; lmvm: one accepted "
        "TAO iteration), "
        f"at most {s['iterations']} iterations or {s['budget']:g} s. Plot: `out/{png.name}`.\n\n"
        + C.table(
            ["method", "J₀"]
            + [f"J after {k}" for k in marks]
            + ["J at end", "iterations", "time s", "s/iteration"],
            rows,
        )
    )
    failed = {k: v for k, v in notes.items() if k not in curves}
    if failed:
        body += "\n\nFailed: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
    text = C.section("MSA vs gradient descent: loss per iteration and per second", body)
    C.report(text)
    return text


if __name__ == "__main__":
    main()
