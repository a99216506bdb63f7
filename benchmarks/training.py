"""Training time-to-accuracy per method (the hook for ``pontryx.solver.training``).

For each method (lmvm, adam, msa, emsa, oneshot) a fresh process trains the
same network from the same initial controls on ``ellipses`` (1000 train, 1000
test samples) and ``digits`` (scikit-learn's 8×8 images: the first 898 train,
the other 899 test, the split of ``pontryx.solver.data`` and the CLI example)
with :func:`pontryx.solver.training.minimize` (default options of every method)
and reports the time and iterations until the test accuracy first reaches the
target (99 % on ellipses, 90 % on digits), checked every few iterations by
``train``'s ``test_rf`` (the checks themselves are not timed); or the best
accuracy within the data set's time budget. A method whose single iteration
outruns the budget is stopped and reported as timed out, one that refuses the
problem (the one-shot solve's ``max_unknowns`` guard) as refused with its
reason; methods missing from ``METHODS`` are "not available"; if the trainers
are not installed at all the script says so and exits 0. The model is small,
so one BLAS thread is the default (threads only contend at this size).

One-shot refuses the full training sets (≈ 7·10⁵ unknowns > its ``max_unknowns``
= 10⁵), so an extra row "oneshot (S = 32)" trains it on a random subset of
``ONESHOT["samples"]`` training samples (seed 0; 8 × 81 × 32 state values +
≈ 53 000 controls ≈ 74 000 unknowns) with ``ONESHOT["alpha"]`` and the options
``ONESHOT["options"]`` — three annealing stages R_f = 1, 100, 10⁴ and the KKT
stage, at most 10 inexact Newton steps each (unpreconditioned GMRES to 10⁻³, a
failed linear solve does not stop SNES; the default 10⁻¹⁰ makes every Newton
step fail at this size) — and reports its test accuracy on the full test set
after every stage, within its own time budget.

    .venv/bin/python benchmarks/training.py [--smoke | --full] [--threads T]
"""

from __future__ import annotations

import json
import subprocess

import _common as C

METHODS = ("lmvm", "adam", "msa", "emsa", "oneshot")
TARGETS = {"ellipses": 0.99, "digits": 0.90}
MODEL = {"mesh": 8, "layers": 8, "alpha": 1e-4}
ONESHOT = {
    "samples": 32,
    "alpha": 1e-2,
    "budget": 120.0,
    "options": {
        "stages": 3,
        "a": 100.0,
        "max_it": 10,
        "petsc_options": {"ksp_rtol": 1e-3, "ksp_max_it": 200, "snes_max_linear_solve_fail": 100},
    },
}
SETTINGS = {
    "smoke": {
        "data": {"ellipses": 64},
        "methods": ("lmvm",),
        "eval_every": 1,
        "budget": {"ellipses": 10.0},
        "max_iterations": 2,
    },
    "quick": {
        "data": {"ellipses": 1000, "digits": None},
        "eval_every": 5,
        "budget": {"ellipses": 40.0, "digits": 30.0},
        "max_iterations": 10**5,
        "oneshot_subset": True,
    },
    "full": {
        "data": {"ellipses": 1000, "digits": None},
        "eval_every": 5,
        "budget": {"ellipses": 300.0, "digits": 300.0},
        "max_iterations": 10**6,
        "oneshot_subset": True,
    },
}


def trainers():
    """(minimize, METHODS) or None when the trainers are not installed."""
    try:
        from pontryx.solver.training import METHODS, minimize
    except ImportError:
        return None
    return minimize, METHODS


class _Stop(Exception):
    """Raised by the callback to end a run: target reached or budget spent."""


class _TimedTest:
    """The test functional, timing its own evaluations (excluded from the clock)."""

    def __init__(self, rf):
        self.rf, self.seconds = rf, 0.0

    def __call__(self, controls):
        t = C.now()
        value = self.rf(controls)
        self.seconds += C.now() - t
        return value

    def metric(self):
        return self.rf.metric()


def worker(cfg: dict, threads: int) -> None:
    from mpi4py import MPI

    from pontryx.meshes import create_mesh
    from pontryx.solver import ContinuumNetwork, ReducedFunctional, WidthSpace, load_dataset

    minimize, METHODS = trainers()
    if cfg["method"] not in METHODS:
        return C.emit({"status": "not available"})
    desc = {"name": cfg["data"]}
    if cfg["size"] is not None:
        desc.update(n_train=cfg["size"], n_test=cfg["size"])
    ds = load_dataset(desc)
    with C.limit_threads(threads):
        space = WidthSpace(create_mesh({"kind": "unit_square", "n": MODEL["mesh"]}, MPI.COMM_WORLD))
        image = len(ds.input_shape) == 2
        net = ContinuumNetwork(
            space,
            ds.X_train.shape[1],
            ds.n_classes,
            layers=MODEL["layers"],
            embedding="image" if image else "bump",
            input_shape=ds.input_shape,
        )
        theta = net.init_controls(seed=0)
        X, y = ds.X_train, ds.y_train
        if cfg.get("subset"):  # the one-shot row: a random subset of the training set
            import numpy as np

            idx = np.sort(np.random.default_rng(0).choice(len(X), cfg["subset"], replace=False))
            X, y = X[idx], y[idx]
        rf = ReducedFunctional(net, X, y, alpha=cfg.get("alpha", MODEL["alpha"]))
        test = _TimedTest(ReducedFunctional(net, ds.X_test, ds.y_test))
        out = {"status": "ok", "time": None, "iterations": 0, "best": 0.0, "reason": ""}
        try:
            from pontryx.solver.training import make_trainer

            make_trainer(cfg["method"], rf, theta.copy(), cfg.get("options", {}))
        except ValueError as e:  # the method refuses the problem (one-shot: its size)
            return C.emit({"status": "refused", "reason": str(e).split(";")[0]})
        t0 = C.now()

        def clock():
            return C.now() - t0 - test.seconds

        def callback(rec):
            out["iterations"] = rec.iteration
            if rec.test_metric is None:
                return
            out["best"] = max(out["best"], rec.test_metric)
            if rec.test_metric >= cfg["target"]:
                out["time"] = clock()
                raise _Stop
            if clock() > cfg["budget"]:
                out["reason"] = "time budget"
                raise _Stop

        try:
            res = minimize(
                rf,
                theta,
                cfg["method"],
                cfg.get("options", {}),
                max_iterations=cfg["max_iterations"],
                on_record=callback,
                test_rf=test,
                test_every=cfg["eval_every"],
            )
            out["reason"] = res.reason
        except _Stop:
            pass
        out["elapsed"] = clock()
        C.emit(out)


def main(argv=None) -> str:
    p = C.parser(__doc__.splitlines()[0])
    p.set_defaults(threads=1)
    args = C.parse(p, argv)
    if args.worker:
        return worker(json.loads(args.worker), args.threads)
    title = "Training: time to accuracy"
    if trainers() is None:
        text = C.section(title, "The trainers (`pontryx.solver.training`) are not installed.")
        C.report(text)
        return text
    mode = C.mode(args)
    s = SETTINGS[mode]
    rows = []
    for data, size in s["data"].items():
        runs = [(m, m, {}) for m in s.get("methods", METHODS)]
        if s.get("oneshot_subset"):
            extra = {"subset": ONESHOT["samples"], "alpha": ONESHOT["alpha"], "eval_every": 1}
            extra.update(options=ONESHOT["options"], budget=ONESHOT["budget"])
            runs.append((f"oneshot (S = {ONESHOT['samples']})", "oneshot", extra))
        for label, method, extra in runs:
            cfg = {
                "method": method,
                "data": data,
                "size": size,
                "target": TARGETS[data],
                "eval_every": s["eval_every"],
                "budget": s["budget"][data],
                "max_iterations": s["max_iterations"],
                **extra,
            }
            try:
                r = C.run_worker(__file__, cfg, threads=args.threads, timeout=cfg["budget"] + 60)
            except subprocess.TimeoutExpired:
                rows.append([data, label, "timed out", "–", "–", "an iteration outran the budget"])
                continue
            except RuntimeError as e:
                rows.append([data, label, "failed", "–", "–", str(e).splitlines()[-1][:80]])
                continue
            if r["status"] != "ok":
                rows.append([data, label, r["status"], "–", "–", r.get("reason", "")])
                continue
            reached = r["time"] is not None
            rows.append(
                [
                    data,
                    label,
                    r["time"] if reached else "not reached",
                    r["iterations"],
                    f"{100 * r['best']:.1f} %",
                    "" if reached else f"{r['reason']} after {r['elapsed']:.0f} s",
                ]
            )
    body = (
        f"Dense kernel on unit_square n = {MODEL['mesh']} (P1), {MODEL['layers']} layers, tanh, "
        f"α = {MODEL['alpha']:g}, default options of every method, {args.threads} thread(s); "
        f"test accuracy checked every {s['eval_every']} iterations (not timed), "
        "time budget per method "
        + ", ".join(f"{d} {b:g} s" for d, b in s["budget"].items())
        + ". An iteration is an accepted TAO iteration (lmvm), a full-batch step "
        "(adam) or a sweep over all layers (msa, emsa: each sweep several L-BFGS "
        "iterations per layer). Targets: "
        + ", ".join(f"{d} {100 * t:.0f} %" for d, t in TARGETS.items() if d in s["data"])
        + (
            f". oneshot (S = {ONESHOT['samples']}): one-shot on a random subset of "
            f"{ONESHOT['samples']} training samples (the full set exceeds its max_unknowns), "
            f"α = {ONESHOT['alpha']:g}, 3 annealing stages + KKT, inexact Newton–GMRES "
            "(benchmarks/training.py ONESHOT); an iteration is a stage, test accuracy on "
            f"the full test set after every stage, budget {ONESHOT['budget']:g} s"
            if s.get("oneshot_subset")
            else ""
        )
        + ".\n\n"
        + C.table(
            ["data", "method", "time to target s", "iterations", "best test acc.", "note"], rows
        )
    )
    text = C.section(title, body)
    C.report(text)
    return text


if __name__ == "__main__":
    main()
