"""Training time-to-accuracy per method (the hook for ``pontryx.solver.training``).

For each method (lmvm, lbfgs, adam, msa, emsa, oneshot) a fresh process trains the
same network from the same initial controls on ``ellipses`` (1000 train, 1000
test samples) and ``digits`` (scikit-learn's 8×8 images: the first 898 train,
the other 899 test, the split of ``pontryx.solver.data`` and the CLI example)
with :func:`pontryx.solver.training.minimize` (default options of every method)
and reports the time and iterations until the test accuracy first reaches the
target (99 % on ellipses, 90 % on digits), checked after every iteration by
``train``'s ``test_rf`` (the checks themselves are not timed); or the best
accuracy within the data set's time budget. A method whose single iteration
outruns the budget is stopped and reported as timed out; methods missing from
``METHODS`` are "not available"; if the trainers are not installed at all the
script says so and exits 0. The model is small,
so one BLAS thread is the default (threads only contend at this size).

One-shot (the KKT solve, default options: 20 L-BFGS warm-start iterations,
then reduced-space Newton trust-region steps; an iteration is one of either) runs on
the full training sets like every method, within the same budget, and reports
the reduction ‖F‖/‖F(x₀)‖ of its KKT residual. An extra row "oneshot (to
tolerance)" keeps it running after the target until the KKT residual meets its
tolerance (rtol 10⁻⁶, i.e. reduced 10⁶ times) or ``ONESHOT["budget"]`` seconds
pass (``max_it`` raised so that the budget binds), and reports the time it first
reached the target, the reduction and why it stopped; "oneshot (line search, to
tolerance)" the same for the full-space Newton–Krylov line search with its
default ``max_it``. The benchmark's J (α = 10⁻⁴, readout not regularised) has no
minimiser on separable data (the cross-entropy falls along a ray of growing
readout), so two more rows solve J with ``ONESHOT["regularised"]`` (α raised, the
readout regularised by δ): lmvm and the one-shot, each to its own tolerance
(lmvm's gatol) or the budget. On the data sets of ``whole_budget`` (digits)
lmvm and the one-shot also run the whole budget without stopping at the target,
for "test accuracy at the same time budget" (column "final": the last test
accuracy; "best": the best of every iteration).

    .venv/bin/python benchmarks/training.py [--smoke | --full] [--threads T]
        [--data NAME ...] [--method NAME ...] [--no-tolerance]

(``--data``/``--method``: only those data sets / methods, e.g. ``--data digits
--method lmvm emsa``; ``--method oneshot`` includes its to-tolerance rows unless
``--no-tolerance``.)
"""

from __future__ import annotations

import _common as C

METHODS = ("lmvm", "lbfgs", "adam", "msa", "emsa", "oneshot")
TARGETS = {"ellipses": 0.99, "digits": 0.90}
MODEL = {"mesh": 8, "layers": 8, "alpha": 1e-4}
ONESHOT = {
    "budget": 300.0,
    # to tolerance: Newton steps until the budget (the default max_it is 50)
    "options": {"max_it": 10**5},
    # the full-space Newton–Krylov line search (oneshot.py items 1–4; default max_it)
    "variants": {"line search": {"options": {"globalisation": "line_search"}}},
    # a J with a minimiser (δ: the readout regularised, α raised), lmvm beside it
    "regularised": {"alpha": 3e-3, "delta": 3e-3},
}
SETTINGS = {
    "smoke": {
        "data": {"ellipses": 64},
        "methods": ("lmvm", "oneshot"),
        "eval_every": 1,
        "budget": {"ellipses": 10.0},
        "max_iterations": 2,
    },
    "quick": {
        "data": {"ellipses": 1000, "digits": None},
        "eval_every": 1,
        "budget": {"ellipses": 40.0, "digits": 30.0},
        "max_iterations": 10**5,
        "oneshot_tolerance": True,
        "whole_budget": ("digits",),
    },
    "full": {
        "data": {"ellipses": 1000, "digits": None},
        "eval_every": 1,
        "budget": {"ellipses": 300.0, "digits": 300.0},
        "max_iterations": 10**6,
        "oneshot_tolerance": True,
        "whole_budget": ("digits",),
    },
}


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
    from pontryx.solver.training import METHODS, minimize

    if cfg["method"] not in METHODS:
        return C.emit({"status": "not available"})
    with C.limit_threads(threads):
        _, _, theta, rf, test = C.data_problem(cfg["data"], cfg["size"], cfg.get("model", MODEL))
        test = _TimedTest(test)
        out = {"status": "ok", "time": None, "iterations": 0, "best": 0.0, "final": None}
        out["reason"] = ""
        out["kkt"] = None
        t0 = C.now()

        def clock():
            return C.now() - t0 - test.seconds

        def callback(rec):
            out["iterations"] = rec.iteration
            if "kkt_reduction" in rec.extra:
                out["kkt"] = rec.extra["kkt_reduction"]
            if rec.test_metric is None:
                return
            out["best"] = max(out["best"], rec.test_metric)
            out["final"] = rec.test_metric
            if rec.test_metric >= cfg["target"] and out["time"] is None:
                out["time"] = clock()
                if not cfg.get("past_target"):
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
    p = C.parser(__doc__, threads=1)
    p.add_argument("--data", nargs="+", help="only these data sets (ellipses digits)")
    p.add_argument("--method", nargs="+", help="only these methods")
    p.add_argument(
        "--no-tolerance", action="store_true", help="without the one-shot's to-tolerance rows"
    )
    args = C.parse(p, argv)
    if args.worker:
        return C.in_worker(args, worker)
    title = "Training: time to accuracy"
    mode = C.mode(args)
    s = SETTINGS[mode]
    rows = []
    sets = {d: n for d, n in s["data"].items() if not args.data or d in args.data}
    methods = [m for m in s.get("methods", METHODS) if not args.method or m in args.method]
    for data, size in sets.items():
        runs = [(m, m, {}) for m in methods]
        if s.get("oneshot_tolerance") and "oneshot" in methods and not args.no_tolerance:
            extra = {"past_target": True, "budget": ONESHOT["budget"]}
            runs.append(
                ("oneshot (to tolerance)", "oneshot", extra | {"options": ONESHOT["options"]})
            )
            for label, options in ONESHOT["variants"].items():
                runs.append((f"oneshot ({label}, to tolerance)", "oneshot", extra | options))
            reg = ONESHOT["regularised"]
            model = extra | {"model": MODEL | reg}
            name = f"α = {reg['alpha']:g}, δ = {reg['delta']:g}"
            runs.append((f"lmvm ({name}, to tolerance)", "lmvm", model))
            options = {"options": ONESHOT["options"]}
            runs.append((f"oneshot ({name}, to tolerance)", "oneshot", model | options))
        if data in s.get("whole_budget", ()):  # the same budget, not stopped at the target
            for method in ("lmvm", "oneshot"):
                if method in methods:
                    runs.append((f"{method} (whole budget)", method, {"past_target": True}))
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
            except RuntimeError as e:
                rows.append([data, label, "failed", "–", "–", "–", str(e).splitlines()[-1][:80]])
                continue
            if r["status"] != "ok":
                rows.append([data, label, r["status"], "–", "–", "–", r.get("reason", "")])
                continue
            reached = r["time"] is not None
            note = "" if reached else f"{r['reason']} after {r['elapsed']:.0f} s"
            if cfg.get("past_target"):
                note = f"{r['reason'] or 'stopped'} after {r['elapsed']:.0f} s"
            if r.get("kkt") is not None:
                note += f"{'; ' if note else ''}KKT residual reduced {1 / r['kkt']:.1e}×"
            rows.append(
                [
                    data,
                    label,
                    r["time"] if reached else "not reached",
                    r["iterations"],
                    f"{100 * r['best']:.1f} %",
                    "–" if r["final"] is None else f"{100 * r['final']:.1f} %",
                    note,
                ]
            )
    body = (
        f"Dense kernel on unit_square n = {MODEL['mesh']} (P1), {MODEL['layers']} layers, tanh, "
        f"α = {MODEL['alpha']:g}, default options of every method, {args.threads} thread(s); "
        f"test accuracy checked every {s['eval_every']} iterations (not timed), "
        "time budget per method "
        + ", ".join(f"{d} {b:g} s" for d, b in s["budget"].items() if d in sets)
        + ". An iteration is an accepted TAO iteration (lmvm), a full-batch step "
        "(adam) or a sweep over all layers (msa, emsa: each sweep several L-BFGS "
        "iterations per layer). Targets: "
        + ", ".join(f"{d} {100 * t:.0f} %" for d, t in TARGETS.items() if d in sets)
        + (
            ". An iteration of oneshot is an L-BFGS warm-start or a Newton step; "
            "oneshot (to tolerance): the one-shot kept running after the target until "
            f"its KKT residual met rtol = 10⁻⁶ or {ONESHOT['budget']:g} s, test accuracy "
            "every iteration; (α = …, δ = …): the same on J with α raised and the readout "
            "regularised (δ), lmvm to its gatol; (whole budget): not stopped at the target, "
            "final = the test accuracy at the end"
            if s.get("oneshot_tolerance") and "oneshot" in methods
            else ""
        )
        + ".\n\n"
        + C.table(
            ["data", "method", "time to target s", "iterations", "best test acc.", "final", "note"],
            rows,
        )
    )
    return C.publish(title, body)


if __name__ == "__main__":
    main()
