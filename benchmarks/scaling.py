"""Machine limit, parallel scaling and fitted cost exponents of the dense gradient.

1. Machine limit: the dense gradient's rate 3·2N²S·N_t / t (three GEMMs of 2N²S
   flops per layer) as a fraction of the GEMM rate of the same shapes, measured
   in the same process, over the sizes of the sweeps below.
2. Scaling 1 → 2 MPI ranks (one BLAS thread each) on the data axis
   (``Layout.create(world, width=1, data=2)``: samples split, one Allreduce of
   the gradient) and on the width axis (``width=2``: the mesh split; M_L U
   of each layer and the adjoint's partial sums through node-shared arrays,
   ``solver/model/shared.py``, on one node), and one
   rank with two BLAS threads; parallel efficiency E = t₁ / (2 t₂). All of them
   side by side in one ``mpirun -n 2`` job, interleaved round by round: t₁ (and
   the two-thread time) on rank 0 alone, on a problem of its own
   (``MPI.COMM_SELF``), while rank 1 waits without spinning (it sleeps between
   tests of a non-blocking barrier, so its core is free for rank 0's second
   thread). On this machine the 1-rank time of separate runs moved by up to
   30 %, which put the efficiencies of separate runs anywhere in 82–120 %; each
   round's pair shares the machine's state of that moment. The data axis's
   efficiency is split into the half-size problem's own (one rank alone on S/2
   samples against t₁/2: what the products of S/2 columns lose) and the axis's
   (that time against the data axis's: the Allreduce and two busy cores).
3. Cost exponents: t ≈ c N^p, c S^q, c N_t^r fitted in log–log (expected p ≈ 2,
   q ≈ 1, r ≈ 1).

    .venv/bin/python benchmarks/scaling.py [--smoke | --full] [--threads T]
"""

from __future__ import annotations

import statistics
import time

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
    """A list of serial configurations (``sweep``), or the scaling rounds (under
    ``mpirun -n 2``)."""
    if "sweep" in cfg:
        results = [measure(c, threads) for c in cfg["sweep"]]
        return C.emit({"results": results})
    C.emit(side_by_side(cfg))


def _wait_idle(comm) -> None:
    """A barrier at which this rank sleeps between tests instead of spinning (an
    MPICH barrier polls, and would take the core a rank alone with two threads
    needs)."""
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(1e-3)


def side_by_side(cfg: dict) -> dict:
    """Gradient times of 1 rank × 1 thread, 1 rank × 2 threads (``cfg["threads"]``)
    and 2 ranks on each axis, and the machine's yardstick (below), interleaved over
    ``cfg["repeats"]`` rounds after a warm-up of each: {run: [time of each round]}.
    Rank 0 runs the 1-rank cases on a ``COMM_SELF`` problem while rank 1 waits
    idle. Yardstick: the GEMMs of one data rank's gradient (3 N_t products
    (N×N)(N×S/2), one thread) on rank 0 alone ("gemm alone") and on both ranks at
    once ("gemm both"): their ratio is what the two cores deliver together for
    the same work, a ceiling of every 2-core efficiency."""
    from mpi4py import MPI

    from pontryx.solver import Layout

    world = MPI.COMM_WORLD
    n, S, L = cfg["n"], cfg["S"], cfg["L"]
    problems = {}
    for axis in ("data", "width"):  # first: collective (PETSc starts on every rank here)
        problems[axis] = C.problem(n, S, L, layout=Layout.create(world, **{axis: 2}))
    solo = C.problem(n, S, L, comm=MPI.COMM_SELF) if world.rank == 0 else None
    # one data rank's own work: the problem of S/2 samples on one rank alone
    half = C.problem(n, S // 2, L, comm=MPI.COMM_SELF) if world.rank == 0 else None
    N = problems["data"][0].N
    gemm = C.gemm_call(N, S // 2)

    def gemms():
        for _ in range(3 * L):
            gemm()

    def alone(threads, fn=None, problem=None):
        t = 0.0
        if world.rank == 0:
            _, _, theta, rf, _ = problem or solo
            with C.limit_threads(threads):
                t = C.now()
                fn() if fn is not None else rf.value_and_gradient(theta)
                t = C.now() - t
        _wait_idle(world)
        return t

    def together(fn):
        with C.limit_threads(1):
            world.barrier()
            t = C.now()
            fn()
            world.barrier()
            return world.allreduce(C.now() - t, op=MPI.MAX)

    def gradient(problem):
        _, _, theta, rf, _ = problem
        return lambda: rf.value_and_gradient(theta)

    runs = {"serial": lambda: alone(1)}
    if cfg["threads"] >= 2:
        runs["threads"] = lambda: alone(2)
    runs["data"] = lambda: together(gradient(problems["data"]))
    runs["half alone"] = lambda: alone(1, problem=half)
    runs["width"] = lambda: together(gradient(problems["width"]))
    runs["gemm alone"] = lambda: alone(1, gemms)
    runs["gemm both"] = lambda: together(gemms)
    for run in runs.values():  # warm-up
        run()
    times: dict = {key: [] for key in runs}
    for _ in range(cfg["repeats"]):
        for key, run in runs.items():
            times[key].append(run())
    times = {key: world.bcast(ts) for key, ts in times.items()}
    return {"N": N, "times": times}


def measure(cfg: dict, threads: int) -> dict:
    """The best gradient time of one serial configuration and the GEMM time of its shapes."""
    with C.limit_threads(threads):
        space, net, theta, rf, _ = C.problem(cfg["n"], cfg["S"], cfg["L"])
        N = space.N
        best = C.best_time(lambda: rf.value_and_gradient(theta), cfg["repeats"])
        gemm = C.best_time(C.gemm_call(N, cfg["S"]), repeats=cfg["repeats"])
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

    # 2: scaling, every run side by side in one mpirun job (see the docstring)
    n, S, L = SCALING[mode]
    # (CPU time would count both threads: the two-thread row needs the wall clock)
    two = args.threads >= 2 and mode != "smoke" and args.clock == "wall"
    cfg = {"n": n, "S": S, "L": L, "repeats": 9 if mode != "smoke" else 1}
    r = C.run_worker(__file__, {**cfg, "threads": 2 if two else 1}, threads=2, ranks=2)
    N, times = r["N"], r["times"]
    t1 = times["serial"]
    labels = {
        "serial": "1 rank × 1 thread",
        "threads": "1 rank × 2 BLAS threads",
        "data": "2 ranks on the data axis",
        "width": "2 ranks on the width axis",
    }
    machine = [a / b for a, b in zip(times.pop("gemm alone"), times.pop("gemm both"))]
    half = times.pop("half alone")
    # the data axis's efficiency t₁/(2 t_data) = (t₁/(2 t_half)) · (t_half/t_data) per round
    own = [a / (2 * b) for a, b in zip(t1, half)]
    axis = [a / b for a, b in zip(half, times["data"])]
    scale_rows = []
    for run, ts in times.items():
        cores = 1 if run == "serial" else 2
        rounds = [a / (cores * b) for a, b in zip(t1, ts)]
        scale_rows.append(
            [
                labels[run],
                cores,
                min(ts),
                f"{min(t1) / min(ts):.2f}",
                f"{100 * min(t1) / (cores * min(ts)):.0f} %",
                "–"
                if run == "serial"
                else f"{100 * statistics.median(rounds):.0f} % ({100 * min(rounds):.0f}–"
                f"{100 * max(rounds):.0f} %)",
            ]
        )
    rounds = len(t1)

    body = (
        f"Dense kernel, IMEX Euler, ε = 0, full storage; best of {repeats} gradients.\n\n"
        f"**Machine limit** ({args.threads} BLAS thread(s)): gradient rate (3 GEMMs of 2N²S "
        "flops per layer) against the GEMM rate of the same shapes.\n\n"
        + C.table(
            ["N", "S", "N_t", "gradient s", "gradient GFLOP/s", "GEMM GFLOP/s", "gradient / GEMM"],
            limit_rows,
        )
        + f"\n\n**Scaling** (N = {N}, S = {S}, N_t = {L}; strong scaling, efficiency "
        f"E = t₁ / (P t_P); every run side by side in one `mpirun -n 2` job, {rounds} "
        "interleaved rounds after a warm-up, the 1-rank runs on rank 0 alone while rank 1 "
        "sleeps; best time of each run, and the efficiency of each round's own pair: "
        "median (range)).\n\n"
        + C.table(["run", "cores", "gradient s", "speed-up", "efficiency", "per round"], scale_rows)
        + "\n\nThe machine's own 2-core yardstick, in the same rounds: one data rank's GEMMs "
        "(3 N_t products (N×N)(N×S/2), one thread) timed on rank 0 alone and on both ranks "
        f"at once; t_alone / t_both = {statistics.median(machine):.2f} (median; "
        f"{min(machine):.2f}–{max(machine):.2f}): two busy cores deliver "
        f"{100 * statistics.median(machine):.0f} % of twice one busy core's rate, a ceiling "
        "of every efficiency above."
        + "\n\nThe data axis's efficiency in two factors, t₁/(2 t_data) = (t₁/(2 t_half)) · "
        "(t_half/t_data), with t_half the gradient of one data rank's share (S/2 samples) "
        "on rank 0 alone, in the same rounds (medians; ranges): the half-size problem's "
        f"own efficiency t₁/(2 t_half) = {100 * statistics.median(own):.0f} % "
        f"({100 * min(own):.0f}–{100 * max(own):.0f} %), what the sweep loses on products "
        f"of S/2 columns; the axis itself t_half/t_data = {100 * statistics.median(axis):.0f} % "
        f"({100 * min(axis):.0f}–{100 * max(axis):.0f} %), the gradient's Allreduce and "
        "two busy cores."
        + "\n\n**Cost exponents** (t ≈ c·x^p, least squares in log–log over the sweep, "
        f"the others fixed at N = {runs[n0, S0, L0]['N']}, S = {S0}, N_t = {L0}).\n\n"
        + C.table(["x", "values", "fitted p", "expected"], fits)
    )
    return C.publish("Machine limit, scaling and cost exponents", body)


if __name__ == "__main__":
    main()
