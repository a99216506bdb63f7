"""Machine limit, parallel scaling and fitted cost exponents of the dense gradient.

1. Machine limit: the dense gradient's rate 3·2N²S·N_t / t (three GEMMs of 2N²S
   flops per layer) as a fraction of the GEMM rate of the same shapes, measured
   in the same process, over the sizes of the sweeps below.
2. Scaling 1 → 2 MPI ranks (one BLAS thread each, ``mpirun`` from this script)
   on the data axis (``Layout.create(world, width=1, data=2)``: samples split,
   one Allreduce of the gradient) and on the width axis (``width=2``: the mesh
   split, an Allgather of M_L U per layer and a Reduce_scatter per adjoint
   step); parallel efficiency E = t₁ / (2 t₂). One rank with two BLAS threads is
   shown for reference.
3. Cost exponents: t ≈ c N^p, c S^q, c N_t^r fitted in log–log (expected p ≈ 2,
   q ≈ 1, r ≈ 1).

    .venv/bin/python benchmarks/scaling.py [--smoke | --full] [--threads T]
"""

from __future__ import annotations

import _common as C

# base (mesh n, S, N_t) and the sweeps around it
SWEEPS = {
    "smoke": {"base": (4, 32, 2), "n": [3, 4], "S": [16, 32], "L": [2, 4]},
    "quick": {"base": (22, 500, 8), "n": [15, 22, 31], "S": [250, 500, 1000], "L": [4, 8, 16]},
    "full": {
        "base": (31, 1024, 16),
        "n": [15, 22, 31, 44],
        "S": [256, 1024, 4096],
        "L": [8, 32, 128],
    },
}
SCALING = {"smoke": (7, 64, 2), "quick": (31, 1000, 8), "full": (44, 2000, 16)}


def worker(cfg: dict, threads: int) -> None:
    """One configuration (under mpirun), or a list of serial ones (``sweep``)."""
    if "sweep" in cfg:
        results = [measure(c, threads) for c in cfg["sweep"]]
        return C.emit({"results": results})
    C.emit(measure(cfg, threads))


def measure(cfg: dict, threads: int) -> dict:

    from mpi4py import MPI

    from pontryx.solver import Layout

    world = MPI.COMM_WORLD
    layout = Layout.create(world, width=cfg.get("width"), data=cfg.get("data"))
    with C.limit_threads(threads):
        space, net, theta, rf, _ = C.problem(cfg["n"], cfg["S"], cfg["L"], layout=layout)
        N = space.N
        rf.value_and_gradient(theta)  # warm-up
        best = float("inf")
        for _ in range(cfg["repeats"]):
            world.barrier()
            t = C.now()
            rf.value_and_gradient(theta)
            world.barrier()
            best = min(best, C.now() - t)
        gemm = (
            C.best_time(C.gemm_call(N, cfg["S"]), repeats=cfg["repeats"]) if world.size == 1 else 0
        )
        net.destroy()
        return {"N": N, "time": best, "gemm": gemm}


def main(argv=None) -> str:
    args = C.arguments(__doc__, argv)
    if args.worker:
        return C.in_worker(args, worker)
    mode = C.mode(args)
    repeats = 1 if mode == "smoke" else 3
    sw = SWEEPS[mode]
    n0, S0, L0 = sw["base"]

    # 1 + 3: sweeps (serial, --threads BLAS threads, one worker process)
    axes = (("n", sw["n"], "N"), ("S", sw["S"], "S"), ("L", sw["L"], "N_t"))

    def point(key, v):
        return ((v if key == "n" else n0), (v if key == "S" else S0), (v if key == "L" else L0))

    points = sorted({point(key, v) for key, values, _ in axes for v in values})
    sweep = [{"n": n, "S": S, "L": L, "repeats": repeats} for n, S, L in points]
    results = C.run_worker(__file__, {"sweep": sweep}, threads=args.threads)["results"]
    runs = dict(zip(points, results))

    fits = []
    for key, values, label in axes:
        xs, ts = [], []
        for v in values:
            r = runs[point(key, v)]
            xs.append(r["N"] if key == "n" else v)
            ts.append(r["time"])
        fits.append(
            [label, ", ".join(map(str, xs)), C.fit_exponent(xs, ts), {"N": 2}.get(label, 1)]
        )
    limit_rows = []
    for (_, S, L), r in sorted(runs.items(), key=lambda kv: (kv[1]["N"], kv[0][1], kv[0][2])):
        flops = 2.0 * r["N"] ** 2 * S
        g = C.gflops(3 * flops * L, r["time"])
        gemm = C.gflops(flops, r["gemm"])
        limit_rows.append([r["N"], S, L, r["time"], g, gemm, f"{100 * g / gemm:.0f} %"])

    # 2: scaling under mpirun, one BLAS thread per rank
    n, S, L = SCALING[mode]
    base = {"n": n, "S": S, "L": L, "repeats": repeats}
    t1 = C.run_worker(__file__, base, threads=1, ranks=1)
    N = t1["N"]
    scale_rows = [["1 rank × 1 thread", 1, t1["time"], "1.00", "100 %"]]
    # (CPU time would count both threads: the row needs the wall clock)
    if args.threads >= 2 and mode != "smoke" and args.clock == "wall":
        r = C.run_worker(__file__, base, threads=2, ranks=1)
        scale_rows.append(
            [
                "1 rank × 2 BLAS threads",
                2,
                r["time"],
                f"{t1['time'] / r['time']:.2f}",
                f"{100 * t1['time'] / (2 * r['time']):.0f} %",
            ]
        )
    for axis in ("data", "width"):
        r = C.run_worker(__file__, {**base, axis: 2}, threads=1, ranks=2)
        scale_rows.append(
            [
                f"2 ranks on the {axis} axis",
                2,
                r["time"],
                f"{t1['time'] / r['time']:.2f}",
                f"{100 * t1['time'] / (2 * r['time']):.0f} %",
            ]
        )

    body = (
        f"Dense kernel, IMEX Euler, ε = 0, full storage; best of {repeats} gradients.\n\n"
        f"**Machine limit** ({args.threads} BLAS thread(s)): gradient rate (3 GEMMs of 2N²S "
        "flops per layer) against the GEMM rate of the same shapes.\n\n"
        + C.table(
            ["N", "S", "N_t", "gradient s", "gradient GFLOP/s", "GEMM GFLOP/s", "gradient / GEMM"],
            limit_rows,
        )
        + f"\n\n**Scaling** (N = {N}, S = {S}, N_t = {L}; strong scaling, efficiency "
        "E = t₁ / (P t_P)).\n\n"
        + C.table(["run", "cores", "gradient s", "speed-up", "efficiency"], scale_rows)
        + "\n\n**Cost exponents** (t ≈ c·x^p, least squares in log–log over the sweep, "
        f"the others fixed at N = {runs[n0, S0, L0]['N']}, S = {S0}, N_t = {L0}).\n\n"
        + C.table(["x", "values", "fitted p", "expected"], fits)
    )
    return C.publish("Machine limit, scaling and cost exponents", body)


if __name__ == "__main__":
    main()
