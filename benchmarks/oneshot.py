"""The one-shot KKT solver: Krylov iterations per Newton step, the depth axis and its cost model.

1. Krylov iterations: on ``ellipses`` (dense kernel, tanh, T = 1, α = 10⁻⁴, the
   model of ``training.py``) after the one-shot's default warm start (20 L-BFGS
   iterations): for the default trust region (``tr``) the mean Steihaug–Toint CG
   iterations per Newton step over its first Newton steps; for the full-space
   line search the iterations right-preconditioned GMRES(100) needs to reduce the
   residual of the first Newton system K p = −F 10× and 100× with the LNKS
   preconditioner (P₂; P₄ too in ``--full``), and the mean Krylov iterations per
   Newton step over the first Newton steps; against the samples S, the dofs N
   and the layers N_t (one varied, the others at the base point). The goal:
   within 1.5× from S = 100 to 1000 and N_t = 8 to 64.
2. Depth axis: the KKT Jacobian action (layers independent, the block ends
   exchanged), the preconditioners (sweeps pipelined over sample chunks) and
   the default trust region (TR, after the warm start: a reduced Hessian action
   W_z v = one CG iteration, a tangent and a second-order adjoint sweep; the
   forward sweep of a trial point plus the adjoint sweep of an accepted one;
   one whole Newton step, from the same state each time) on 1 rank and on
   2 ranks with ``parallel.depth = 2`` (one BLAS thread each), N_t = 64;
   efficiency E = t₁ / (2 t₂) (goal ≥ 70 %).
3. Cost model, from the 1-rank measurements: a Jacobian action on P depth ranks
   takes ⌈N_t/P⌉ t_layer + 2 (λ + m/B) (t_layer the per-layer cost, m = 8 n S
   n_states bytes at the block ends, λ and B the latency and bandwidth of a
   measured ping-pong); pipelined sweeps with c sample chunks take
   (c + P − 1) (⌈N_t/P⌉ t_chunk + λ + m/(c B)) with t_chunk the measured
   per-layer cost of one chunk (P₂, P₄, W_z v, the trial sweeps); a TR Newton
   step with k CG iterations and r trials takes k W_z(P) + r t_forward(P) +
   t_adjoint(P) + the rest of its 1-rank time (layer-parallel linearisation,
   L-BFGS and CG vectors) × ⌈N_t/P⌉/N_t. Predicted for P = 2 … 64 with
   the default chunks (``chunks: auto``, ``lnks.default_chunks``: about one
   per 128 samples, 2P ≤ c ≤ 4P), the 2-rank prediction next to the
   measurement; ``--chunks c`` sets the 2-rank run's chunks instead. The
   machine is shared while these numbers are taken: timings are best of 10
   in each of 3 worker processes per layout, 1 and 2 ranks alternating (smoke:
   2 in one; the cost model's per-chunk costs best of 3 in each): a process's
   own speed varies by ±20 % on this machine, and a fixed GEMM's time by more
   within seconds. Each worker measures that noise (the median over the
   fastest of 40 timings of 20 GEMMs of 81 × 81 by 81 × 1000 at its start and
   end): the section prints the largest.

    .venv/bin/python benchmarks/oneshot.py [--smoke | --full] [--threads T]
        [--depth-only] [--chunks c]
"""

from __future__ import annotations

import math
from functools import partial

import _common as C

ALPHA = 1e-4
#: best of this many for the cost model's per-chunk costs (up to 256 chunks: slow)
MODEL_REPEATS = 3
SETTINGS = {
    "smoke": {
        "base": (3, 24, 4),
        "S": [12, 24],
        "L": [2, 4],
        "n": [2, 3],
        "pcs": ("tr", "p2", "p4/gauss_newton"),
        "depth": (3, 16, 8),
        "repeats": 2,
        "depth_repeats": 2,
        "processes": 1,
        "warm": 2,
        "newton": 1,
    },
    "quick": {
        "base": (8, 100, 8),
        "S": [100, 300, 1000],
        "L": [8, 16, 32, 64],
        "n": [4, 8, 16],
        "pcs": ("tr", "p2", "p4/gauss_newton"),
        "depth": (8, 1000, 64),
        "repeats": 5,
        "depth_repeats": 10,
        "processes": 3,
        "warm": 20,
        "newton": 5,
    },
    "full": {
        "base": (8, 300, 8),
        "S": [100, 300, 1000],
        "L": [8, 16, 32, 64],
        "n": [4, 8, 16],
        "pcs": ("tr", "p2", "p4", "p2/gauss_newton", "p4/gauss_newton", "p4/exact"),
        "depth": (8, 1000, 64),
        "repeats": 5,
        "depth_repeats": 10,
        "processes": 3,
        "warm": 20,
        "newton": 10,
    },
}


def _problem(n, S, L, layout=None):
    from mpi4py import MPI

    from pontryx.meshes import create_mesh
    from pontryx.solver import ContinuumNetwork, ReducedFunctional, WidthSpace, load_dataset

    ds = load_dataset({"name": "ellipses", "n_train": S, "n_test": 10, "seed": 0})
    comm = layout.width if layout is not None else MPI.COMM_WORLD
    space = WidthSpace(create_mesh({"kind": "unit_square", "n": n}, comm))
    net = ContinuumNetwork(space, 2, 2, layers=L)
    rf = ReducedFunctional(net, ds.X_train, ds.y_train, alpha=ALPHA, layout=layout)
    return net, rf, net.init_controls(seed=0)


def krylov(cfg: dict) -> dict:
    """Warm start; the first Newton system by GMRES(100) (iterations to 10⁻¹ and 10⁻²
    of its residual); then ``newton`` Newton steps with the default options (their
    mean Krylov iterations and seconds per Krylov iteration)."""
    import numpy as np

    from pontryx.solver.training.oneshot import OneShot

    net, rf, theta = _problem(cfg["n"], cfg["S"], cfg["L"])
    if cfg["pc"] == "tr":  # the trust region (default): CG iterations per Newton step
        return _steps(cfg, net, rf, theta, {"globalisation": "trust_region"}, [None, None])
    opts = {"preconditioner": cfg["pc"], "control": cfg.get("control", "lbfgs")}
    opts["globalisation"] = "line_search"  # the full-space Newton–Krylov steps
    t = OneShot(rf, theta.copy(), warm_start=cfg["warm"], **opts)
    list(t.iterate(cfg["warm"]))
    t._start_newton()
    ksp = t.ksp
    ksp.setConvergenceHistory()
    first_max = cfg.get("first_max", 100)
    ksp.setGMRESRestart(first_max)
    t.options = {**t.options, "krylov_max_it": first_max}
    t._solve(1e-2)
    h = np.asarray(ksp.getConvergenceHistory())
    h = h / h[0]
    first = [int(np.argmax(h <= tol)) if (h <= tol).any() else None for tol in (1e-1, 1e-2)]
    t.destroy()
    return _steps(cfg, net, rf, theta, opts, first)


def _steps(cfg, net, rf, theta, opts, first) -> dict:
    """The warm start, then ``newton`` Newton steps: their Krylov (or CG) iterations."""
    from pontryx.solver.training.oneshot import OneShot

    N = net.space.N
    t = OneShot(rf, theta, warm_start=cfg["warm"], **opts)
    list(t.iterate(cfg["warm"]))
    its, inner, sweeps, seconds = [], [], [], 0.0
    for _ in range(cfg["newton"]):
        start = C.now()
        recs = list(t.iterate(1))
        seconds += C.now() - start
        if not recs:
            break
        its.append(recs[0].extra["ksp_its"])
        inner.append(recs[0].extra["inner_its"])
        sweeps.append(recs[0].extra["sweeps"])
    t.destroy()
    net.destroy()
    time = seconds / max(sum(its), 1)
    return {"N": N, "first": first, "its": its, "inner": inner, "sweeps": sweeps, "time": time}


def depth(cfg: dict, threads: int) -> dict:
    """Best-of-3 times of the Jacobian action, the preconditioners and the trust
    region's Hessian action, trial sweeps and Newton step on this layout; on one
    rank also the per-layer and per-chunk costs and a ping-pong."""
    from mpi4py import MPI

    import numpy as np

    from pontryx.solver import Layout
    from pontryx.solver.training.lnks import LNKS, default_chunks
    from pontryx.solver.training.oneshot import OneShot

    world = MPI.COMM_WORLD
    layout = Layout.create(world, width=1, data=1, depth=world.size)
    chunks = cfg["chunks"] if world.size > 1 else 1
    out = {}

    def timed(fn, repeats=cfg["repeats"]):
        def run():
            world.Barrier()
            fn()
            world.Barrier()

        return C.best_time(run, repeats=repeats)

    with C.limit_threads(threads):
        noise = [_noise()]
        net, rf, theta = _problem(cfg["n"], cfg["S"], cfg["L"], layout)
        for pc in ("p2", "p4"):
            t = OneShot(rf, theta.copy(), warm_start=0, preconditioner=pc, chunks=chunks)
            t.F_ref = 1.0
            t._start_newton()
            k = t.kkt
            r = np.random.default_rng(world.rank).standard_normal(k.size)
            y = np.zeros(k.size)  # the output vector, as the KSP passes it
            if pc == "p2":
                out["matvec"] = timed(lambda k=k, r=r, y=y: k.apply(r, y))
            out[pc] = timed(lambda t=t, r=r, y=y: t.lnks.apply(r, y))
            if world.size == 1:  # per-chunk preconditioner cost for the default chunks
                for P in cfg["model_ranks"]:
                    c = default_chunks(P, cfg["S"])
                    lnks = LNKS(k, t.lbfgs, pc, c)
                    out[f"{pc}_c{c}"] = timed(partial(lnks.apply, r, y), MODEL_REPEATS)
            t.destroy()
        out.update(_trust_region(cfg, rf, theta, chunks, timed))
        out["message_bytes"] = 8 * net.space.n * k.S_local * net.scheme.n_states
        net.destroy()
        noise.append(_noise())
    out["noise"] = world.allreduce(max(noise), op=MPI.MAX)
    if world.size == 2:  # ping-pong: latency and bandwidth of the block-end messages
        for size in (1, out["message_bytes"] // 8):
            buf = np.zeros(size)

            def pingpong(buf=buf):
                for _ in range(10):
                    if world.rank == 0:
                        world.Send(buf, dest=1)
                        world.Recv(buf, source=1)
                    else:
                        world.Recv(buf, source=0)
                        world.Send(buf, dest=0)

            out[f"pingpong_{size}"] = C.best_time(pingpong, repeats=3) / 20
    layout.destroy()
    return out


def _noise(count: int = 40) -> float:
    """The machine's noise: the median over the fastest of ``count`` timings of 20
    fixed GEMMs (81 × 81 by 81 × 1000, the depth benchmark's layer size)."""
    gemm, times = C.gemm_call(81, 1000), []
    for _ in range(count):
        t = C.now()
        for _ in range(20):
            gemm()
        times.append(C.now() - t)
    return float(sorted(times)[count // 2] / min(times))


def _trust_region(cfg, rf, theta, chunks, timed) -> dict:
    """The trust region (default options) after ``warm`` L-BFGS iterations: times of a
    reduced Hessian action W_z v (one CG iteration: a tangent and a second-order
    sweep), of the trial forward sweep (J at a trial point) and of the adjoint
    sweep of an accepted point, and of one whole Newton step (from the same state
    each time: the best of ``repeats``) with its CG iterations and trials; on one
    rank also the sweeps' costs in the default chunks."""
    from mpi4py import MPI

    import numpy as np

    from pontryx.solver.training.lnks import LNKS, default_chunks
    from pontryx.solver.training.oneshot import OneShot

    world, out = MPI.COMM_WORLD, {}
    t = OneShot(rf, theta.copy(), warm_start=cfg["warm"], chunks=chunks)
    list(t.iterate(cfg["warm"]))
    t._start_newton()
    state = t.state()
    k = t.kkt
    v = np.random.default_rng(world.rank).standard_normal(k.n_theta)[k.theta_slice]
    point = k.theta(t.x[k.theta_slice] + 1e-3 * v)

    def sweeps(P, tag="", repeats=cfg["repeats"]):
        out["hessian" + tag] = timed(lambda: P.reduced_hessian(v), repeats)
        out["states" + tag] = timed(lambda: P.states(point), repeats)
        trial = P.states(point)  # valid until the next P.states
        out["costates" + tag] = timed(lambda: P.costates(trial), repeats)

    sweeps(t.lnks)
    if world.size == 1:
        for P in cfg["model_ranks"]:
            c = default_chunks(P, cfg["S"])
            sweeps(LNKS(k, t.lbfgs, "p2", c), f"_c{c}", MODEL_REPEATS)
    t.destroy()
    best = math.inf
    for _ in range(cfg["repeats"]):  # one Newton step from the same state
        s = OneShot(rf, theta.copy(), warm_start=cfg["warm"], chunks=chunks)
        s.restore(state)
        world.Barrier()
        start = C.now()
        (rec,) = s.iterate(1)
        world.Barrier()
        best = min(best, C.now() - start)
        s.destroy()
    out.update(tr_step=best, tr_its=rec.extra["ksp_its"], tr_trials=rec.extra["trials"])
    return out


def worker(cfg: dict, threads: int) -> None:
    if cfg["kind"] == "krylov":
        with C.limit_threads(threads):
            return C.emit({"results": [krylov(c) for c in cfg["runs"]]})
    return C.emit(depth(cfg, threads))


def _pipelined(one, key, P, L, S, lat, bw, m) -> float:
    """Predicted time of the pipelined sweeps ``key`` on P depth ranks with the
    default c chunks (module docstring): (c + P − 1) (⌈N_t/P⌉ t_chunk + λ + m/(c B))."""
    from pontryx.solver.training.lnks import default_chunks

    c = default_chunks(P, S)
    chunk = one[f"{key}_c{c}"] / (c * L)  # one layer, one chunk
    return (c + P - 1) * (math.ceil(L / P) * chunk + lat + m / (c * bw))


def model(one: dict, two: dict, L: int, S: int, ranks) -> list:
    """Predicted efficiencies of the matvec, P₂/P₄, the trust region's Hessian action,
    trial sweeps and Newton step on P depth ranks (module docstring)."""
    lat = two["pingpong_1"]
    m = two["message_bytes"]
    bw = m / max(two[f"pingpong_{m // 8}"] - lat, 1e-12)
    its, trials = one["tr_its"], one["tr_trials"]
    # the step's remainder (layer-parallel linearisation, L-BFGS, CG vectors)
    rest = one["tr_step"] - its * one["hessian"] - trials * one["states"] - one["costates"]
    rows = []
    for P in ranks:
        per = math.ceil(L / P)
        mv = per * one["matvec"] / L + 2 * (lat + m / bw)
        row = [P, one["matvec"] / (P * mv)]
        t = {key: _pipelined(one, key, P, L, S, lat, bw, m) for key in
             ("p2", "p4", "hessian", "states", "costates")}  # fmt: skip
        row += [one[key] / (P * t[key]) for key in ("p2", "p4", "hessian")]
        trial = t["states"] + t["costates"]
        row.append((one["states"] + one["costates"]) / (P * trial))
        step = its * t["hessian"] + trials * t["states"] + t["costates"] + max(rest, 0) * per / L
        row.append(one["tr_step"] / (P * step))
        rows.append(row)
    return rows, lat, bw


def _fastest(runs: list) -> dict:
    """Per timing the smallest over the worker processes ``runs``, the largest noise
    (the counts, the same in each, from the first)."""
    counts = ("tr_its", "tr_trials", "message_bytes")

    def pick(k, v):
        if k in counts:
            return v
        values = [r[k] for r in runs]
        return max(values) if k == "noise" else min(values)

    return {k: pick(k, v) for k, v in runs[0].items()}


def depth_section(s: dict, mode: str, chunks=None) -> str:
    """Part 2 and 3 of the module docstring: the depth axis on 1 and 2 ranks (with
    ``chunks``, default the solver's) and the cost model (Markdown)."""
    from pontryx.solver.training.lnks import default_chunks

    n, S, L = s["depth"]
    chunks = default_chunks(2, S) if chunks is None else chunks
    reps = s["depth_repeats"]
    base = {"kind": "depth", "n": n, "S": S, "L": L, "chunks": chunks, "repeats": reps}
    base["model_ranks"] = [2, 8, 16, 32, 64] if mode != "smoke" else [2]
    base["warm"] = s["warm"]
    runs = {1: [], 2: []}
    for _ in range(s["processes"]):  # alternating: a slow spell of the machine hits both
        for ranks in (1, 2):
            runs[ranks].append(C.run_worker(__file__, base, threads=1, ranks=ranks, timeout=7200))
    one, two = _fastest(runs[1]), _fastest(runs[2])
    noise = max(one["noise"], two["noise"])
    pred, lat, bw = model(one, two, L, S, base["model_ranks"])
    ops = {
        "matvec": "KKT matvec",
        "p2": "P₂",
        "p4": "P₄",
        "hessian": "TR: W_z v (one CG iteration)",
        "trial": "TR: trial + adjoint sweep",
        "tr_step": "TR: Newton step",
    }
    for d in (one, two):
        d["trial"] = d["states"] + d["costates"]
    depth_rows = [
        [label, one[op], two[op], one[op] / two[op], f"{100 * one[op] / (2 * two[op]):.0f} %",
         f"{100 * pred[0][1 + i]:.0f} %" if pred[0][0] == 2 else "–"]
        for i, (op, label) in enumerate(ops.items())
    ]  # fmt: skip
    model_rows = [[P, *(f"{100 * e:.0f} %" for e in effs)] for P, *effs in pred]

    return (
        f"**Depth axis** (N = {(n + 1) ** 2}, S = {S}, N_t = {L}; 2 ranks: "
        f"parallel.depth = 2, {base['chunks']} sample chunks; one BLAS thread per rank; "
        f"best of {reps} in each of {s['processes']} processes per layout, "
        f"1 and 2 ranks alternating; machine noise: a fixed GEMM's median time was up to "
        f"{noise:.2f}× its fastest in these workers). TR: the trust region after "
        f"{s['warm']} L-BFGS iterations; its Newton step took {one['tr_its']} CG iterations and "
        f"{one['tr_trials']} trial(s) on 1 rank, {two['tr_its']} and {two['tr_trials']} on 2.\n\n"
        + C.table(
            ["operation", "1 rank s", "2 ranks s", "speed-up", "efficiency", "model"], depth_rows
        )
        + f"\n\n**Cost model** (per-layer and per-chunk costs measured on 1 rank; "
        f"latency {lat * 1e6:.1f} µs, bandwidth {bw / 1e9:.2f} GB/s from a 2-rank "
        f"ping-pong; the default chunks, 2P ≤ c ≤ 4P): predicted depth-axis efficiency "
        f"for N_t = {L}.\n\n" + C.table(["depth ranks P", *ops.values()], model_rows)
    )


def main(argv=None) -> str:
    p = C.parser(__doc__, threads=1)
    p.add_argument("--depth-only", action="store_true", help="parts 2 and 3 only")
    p.add_argument("--chunks", type=int, help="sample chunks of the 2-rank run (default: auto)")
    args = C.parse(p, argv)
    if args.worker:
        return C.in_worker(args, worker)
    mode = C.mode(args)
    s = SETTINGS[mode]
    n0, S0, L0 = s["base"]
    title = "One-shot KKT solver: Krylov iterations and the depth axis"
    if args.depth_only:
        return C.publish(title, depth_section(s, mode, args.chunks))

    # 1. Krylov iterations against S, N, N_t
    def point(key, v):
        return (v if key == "n" else n0, v if key == "S" else S0, v if key == "L" else L0)

    axes = (("S", s["S"]), ("L", s["L"]), ("n", s["n"]))
    points = sorted({point(key, v) for key, values in axes for v in values})
    runs = [
        {"n": n, "S": S, "L": L, "pc": pc.split("/")[0], "control": (pc + "/lbfgs").split("/")[1]}
        | {"warm": s["warm"], "newton": s["newton"], "variant": pc}
        for n, S, L in points
        for pc in s["pcs"]
    ]
    results = C.run_worker(
        __file__, {"kind": "krylov", "runs": runs}, threads=args.threads, timeout=7200
    )["results"]
    got = {(r["n"], r["S"], r["L"], r["variant"]): res for r, res in zip(runs, results)}

    def first(v, pc):
        return "–" if pc == "tr" else "> 100" if v is None else v

    rows = []
    for key, values in axes:
        for v in values:
            n, S, L = point(key, v)
            row = [{"S": "S", "L": "N_t", "n": "N"}[key], got[n, S, L, s["pcs"][0]]["N"], S, L]
            for pc in s["pcs"]:
                r = got[n, S, L, pc]
                k = max(len(r["its"]), 1)
                mean = sum(r["its"]) / k
                inner, sweeps = sum(r["inner"]) / k, sum(r["sweeps"]) / k
                row += [first(r["first"][0], pc), first(r["first"][1], pc), mean, inner, sweeps]
                row.append(r["time"])
            rows.append(row)
    spread = []
    for key, label in (("S", "S"), ("L", "N_t")):
        for pc in s["pcs"]:
            for what in ("its", "sweeps"):
                its = [got[(*point(key, v), pc)][what] for v in dict(axes)[key]]
                means = [sum(i) / max(len(i), 1) for i in its]
                ratio = max(means) / max(min(means), 1e-300)
                spread.append(f"{pc} {what} over {label}: {ratio:.2f}×")
    headers = ["varied", "N", "S", "N_t"]
    for pc in s["pcs"]:
        headers += [f"{pc}: 1st system to 10⁻¹", "to 10⁻²", "its per Newton step"]
        headers += ["inner CG its", "sweeps", "s per it"]

    body = (
        f"Ellipses, dense kernel on unit_square, tanh, T = 1, α = {ALPHA:g}; the one-shot "
        f"({s['warm']} L-BFGS warm-start iterations); tr: the default trust region (its "
        "Krylov iterations are the Steihaug–Toint CG iterations per Newton step, at most 20), "
        "p2, p4/…: the full-space line search with that preconditioner and control "
        "block. Iterations of "
        "GMRES(100) on the first Newton system to reduce its residual 10× and 100× "
        f'("> 100": not within 100), and the mean Krylov iterations of the first {s["newton"]} '
        "Newton steps (Eisenstat–Walker forcing, at most 20 each) with the seconds per "
        "Krylov iteration (Jacobian action + preconditioner); base point "
        f"N = {got[n0, S0, L0, s['pcs'][0]]['N']}, S = {S0}, N_t = {L0}.\n\n"
        + C.table(headers, rows)
        + "\n\nLargest / smallest iteration count: "
        + "; ".join(spread)
        + " (of the mean per Newton step; goal ≤ 1.5× over S = 100 … 1000 and "
        "N_t = 8 … 64).\n\n" + depth_section(s, mode, args.chunks)
    )
    return C.publish(title, body)


if __name__ == "__main__":
    main()
