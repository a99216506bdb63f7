"""Multilevel training (nested iteration in width and depth) against single-level training.

The ellipses example (dense kernel, IMEX Euler, T = 5, 1000/1000 samples,
α = 1e-4) on the unit square n × n with N_t layers, with γ = 1e-4 (H¹ in width)
and the smooth initial law σ_w² = 10, ρ = 0.6, β = 3, trained by ``METHOD``
(pontryx's L-BFGS: TAO's lmvm holds ≈ 45 copies of the controls, 14 GB at
n = 32, N_t = 32, and was killed for memory on a 24 GB machine). Single level:
from the random-field start on the fine problem. Multilevel: the coarse levels
(``levels``: mesh n, layers, iterations; by default coarser in width only — a
coarse IMEX Euler step in depth moves the trained network further from the
fine one than a coarse mesh does), each started from the previous one's trained
controls prolonged (``pontryx.solver.training.levels.train_levels``), then the
fine problem from the last level's controls, prolonged. Both run the one
training loop; the clock (``--clock``) runs from the first draw to the first
test accuracy ≥ ``TARGET`` (checked every ``EVERY`` fine iterations and at the
prolonged start; the checks are not timed), the coarse levels included.
Goal: multilevel time ≤ 0.5 × single level, same test accuracy.

    .venv/bin/python benchmarks/multilevel.py [--smoke | --full]
"""

from __future__ import annotations

from mpi4py import MPI

import _common as C

EXAMPLE = C.ROOT / "examples" / "ellipses.yaml"
METHOD, TARGET, EVERY = "lbfgs", 0.99, 2
SETS = [
    "model.init.variance=10",
    "model.init.correlation_length=0.6",
    "model.init.smoothness=3",
    "training.gamma=1e-4",
]
SETTINGS = {
    "smoke": {"fine": (4, 4), "levels": [(2, 2, 3)], "budget": 20.0, "target": 0.6},
    "quick": {"fine": (32, 32), "levels": [(8, 32, 40), (16, 32, 20)], "budget": 3600.0},
    "full": {"fine": (32, 32), "levels": [(8, 32, 40), (16, 32, 20)], "budget": 7200.0},
}


def problem(n: int, layers: int, comm):
    from pontryx.solver.app.problem import build_problem
    from pontryx.solver.config import load_config

    sets = [f"mesh.n={n}", f"model.layers={layers}", "parallel.width=1", *SETS]
    return build_problem(load_config(EXAMPLE, sets, ranks=comm.size), comm)


class _Stop(Exception):
    pass


def run(cfg, levels, comm) -> dict:
    from pontryx.solver.model.prolongation import prolong_controls
    from pontryx.solver.training import minimize
    from pontryx.solver.training.levels import Level, train_levels

    target = cfg.get("target", TARGET)
    checks = [0.0]

    def test(p, theta):
        t = C.now()
        p.rf_test(theta)
        checks[0] += C.now() - t
        return p.rf_test.metric()

    t0 = C.now()

    def clock():
        return C.now() - t0 - checks[0]

    out = {"levels": []}
    label = "multilevel" if levels else "single level"
    fine = problem(*cfg["fine"], comm)
    if levels:
        coarse = [problem(n, layers, comm) for n, layers, _ in levels]
        results = train_levels(
            [Level(p.net, p.rf, it, None, p.controls) for p, (*_, it) in zip(coarse, levels)],
            METHOD,
        )
        for p, r in zip(coarse, results):
            out["levels"].append(
                [p.space.N, p.net.layers, r.result.trainer.iteration, test(p, r.controls)]
            )
            C.progress(f"level N = {p.space.N}: test {out['levels'][-1][-1]:.3f}, {clock():.0f} s")
        start = prolong_controls(coarse[-1].net, results[-1].controls, fine.net)
        for name, value in start.items():
            fine.controls[name][...] = value
        for p in coarse:
            p.destroy()
    out.update(time=None, iterations=0, start=test(fine, fine.controls), test=None)
    if out["start"] >= target:
        out.update(time=clock(), test=out["start"])
        return out

    def record(rec):
        out["iterations"] = rec.iteration
        if rec.iteration % EVERY == 0:
            acc = test(fine, fine.controls)
            C.progress(f"{label}: iteration {rec.iteration}, {clock():.0f} s, test {acc:.3f}")
            if acc >= target:
                out.update(time=clock(), test=acc)
                raise _Stop
            if clock() > cfg["budget"]:
                out["test"] = acc
                raise _Stop

    try:
        minimize(fine.rf, fine.controls, METHOD, max_iterations=10**5, on_record=record)
    except _Stop:
        pass
    out["elapsed"] = clock()
    fine.destroy()
    return out


def main(argv=None) -> str:
    args = C.arguments(__doc__, argv)
    cfg = SETTINGS[C.mode(args)]
    comm = MPI.COMM_WORLD
    with C.limit_threads(args.threads):
        multi = run(cfg, cfg["levels"], comm)
        single = run(cfg, [], comm)
    n, layers = cfg["fine"]

    def fmt_time(r):
        return r["time"] if r["time"] is not None else f"not reached ({r['elapsed']:.0f} s)"

    rows = [
        ["single level", fmt_time(single), single["iterations"], single["test"], "–"],
        [
            "multilevel "
            + " → ".join(f"N={N}, N_t={L}, {it} it." for N, L, it, _ in multi["levels"]),
            fmt_time(multi),
            multi["iterations"],
            multi["test"],
            multi["start"],
        ],
    ]
    ratio = (
        multi["time"] / single["time"]
        if multi["time"] is not None and single["time"] is not None
        else None
    )
    body = (
        f"Ellipses example on n = {n} (N = {(n + 1) ** 2}), N_t = {layers}, "
        + ", ".join(SETS)
        + f", {comm.size} rank(s); time to test accuracy ≥ {cfg.get('target', TARGET):g} "
        f"(coarse levels included, test checks excluded); fine iterations of {METHOD}; "
        "'start': test accuracy of the prolonged controls before fine training.\n\n"
        + C.table(["training", "time s", "fine iterations", "test acc.", "start"], rows)
        + "\n\n"
        + (
            f"Multilevel / single level: **{ratio:.2f}** (goal ≤ 0.5)."
            if ratio is not None
            else "A run did not reach the target within the budget."
        )
    )
    return C.publish("Multilevel training (nested iteration)", body)


if __name__ == "__main__":
    main()
