"""Peak memory of a gradient against depth: full storage vs checkpointing.

Full storage keeps every layer's record (for IMEX Euler Uⁿ and Zⁿ: 2 N_t
multivectors of N×S), O(N_t); ``checkpoint="sqrt"`` keeps the state entering
every k-th layer, k = ⌈√N_t⌉, and recomputes one segment at a time during the
backward sweep: N_t/k + 2k multivectors, O(√N_t), at the price of a second
forward sweep (the recompute overhead, measured as a time ratio, and as a
ratio of user CPU time, which leaves out the page faults of fresh memory:
expected 1 + t_forward / t_gradient ≈ 4/3 for the dense kernel).

Memory is the peak of NumPy's allocations during one gradient (tracemalloc,
minus what was allocated before; the gradient arrays included; the network's
workspace, which keeps the sweep's arrays between gradients, is emptied first
so that its arrays count) and, as a
cross-check, the process's peak RSS minus its RSS after set-up. Each
configuration runs in a fresh process. The low-rank kernel (R = 8) keeps the
controls small, so that the states dominate; one dense configuration is shown
for the recompute overhead of the GEMM-bound case.

A second table measures what the optimiser and the outputs hold, in copies of
the controls (the process's peak RSS over the baseline after set-up, divided by
the bytes of θ; dense kernel, 8 layers): TAO's L-BFGS for 10 iterations with
history sizes m = 1, 3, 5 (``-tao_lmvm_mat_lmvm_hist_size``; pontryx's own arrays
and PETSc's), and writing ``model.npz`` on 2 ranks (streamed: each layer gathered
to width rank 0 and written; rank 1 holds only its rows).

    .venv/bin/python benchmarks/memory.py [--smoke | --full] [--threads T]
"""

from __future__ import annotations

import resource

import _common as C

LOWRANK = {"kernel": "lowrank", "options": {"rank": 8}}
DENSE = {"kernel": "dense", "options": {}}
# (kernel, mesh n, S, [N_t …])
CONFIGS = {
    "smoke": [(LOWRANK, 7, 32, [4, 16])],
    "quick": [(LOWRANK, 31, 256, [16, 64, 256]), (DENSE, 22, 512, [64])],
    "full": [(LOWRANK, 31, 256, [16, 32, 64, 128, 256, 512, 1024]), (DENSE, 31, 1024, [64])],
}
MODES = (None, "sqrt")


def _user_time(fn) -> float:
    """User CPU time of fn() (without the system time of page faults)."""
    t = resource.getrusage(resource.RUSAGE_SELF).ru_utime
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_utime - t


OPTIMISER = {"smoke": (7, [1, 5]), "quick": (28, [1, 3, 5]), "full": (40, [1, 3, 5, 10])}


def optimiser_worker(cfg: dict, threads: int) -> None:
    """Peak RSS over the baseline, in copies of θ: L-BFGS iterations or model.npz."""
    import tempfile
    from pathlib import Path

    from mpi4py import MPI

    from petsc4py import PETSc

    with C.limit_threads(threads):
        space, net, theta, rf, _ = C.problem(cfg["n"], 64, 8, alpha=1e-4)
        size = sum(v.nbytes for v in theta.values())
        rf.value_and_gradient(theta)
        base = C.peak_rss_mb()
        if cfg["what"] == "lmvm":
            from pontryx.solver.training import minimize

            PETSc.Options()["tao_lmvm_mat_lmvm_hist_size"] = str(cfg["m"])
            minimize(rf, theta, "lmvm", {}, max_iterations=10)
        elif cfg["what"] == "lbfgs":
            from pontryx.solver.training import minimize

            minimize(rf, theta, "lbfgs", {"history": cfg["m"]}, max_iterations=10)
        else:
            from pontryx.solver.outputs import model_io

            folder = Path(
                MPI.COMM_WORLD.bcast(tempfile.mkdtemp() if MPI.COMM_WORLD.rank == 0 else None)
            )
            model_io.save_model(folder / "model.npz", net, theta, task="classification",
                                input_shape=(4,), classes=(0, 1, 2))  # fmt: skip
        copies = (C.peak_rss_mb() - base) * 2**20 / size
        total = MPI.COMM_WORLD.allreduce(size, op=MPI.SUM)
        out = MPI.COMM_WORLD.gather((copies, size / total), root=0)
        if MPI.COMM_WORLD.rank == 0:
            C.emit({"N": space.N, "per_rank": out, "mb": total / 2**20})


def worker(cfg: dict, threads: int) -> None:
    if cfg.get("what"):
        return optimiser_worker(cfg, threads)
    import tracemalloc

    with C.limit_threads(threads):
        space, net, theta, rf, X = C.problem(
            cfg["n"],
            cfg["S"],
            cfg["L"],
            kernel=cfg["kernel"],
            kernel_options=cfg["options"],
            checkpoint=cfg["checkpoint"],
        )
        setup = C.rss_mb()
        time_ = C.best_time(lambda: rf.value_and_gradient(theta), repeats=cfg["repeats"])
        user = min(_user_time(lambda: rf.value_and_gradient(theta)) for _ in range(cfg["repeats"]))
        rss_peak = C.peak_rss_mb()
        net.workspace.clear()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        result = rf.value_and_gradient(theta)  # noqa: F841  (held while measuring)
        peak = tracemalloc.get_traced_memory()[1] - before
        tracemalloc.stop()
        state = space.N * X.shape[1] * 8
        C.emit(
            {
                "N": space.N,
                "time": time_,
                "user": user,
                "traced_mb": peak / 2**20,
                "states": peak / state,
                "rss_delta_mb": rss_peak - setup,
            }
        )


def main(argv=None) -> str:
    args = C.arguments(__doc__, argv)
    if args.worker:
        return C.in_worker(args, worker)
    mode = C.mode(args)
    repeats = 1 if mode == "smoke" else 3
    rows, fits = [], []
    for kern, n, S, depths in CONFIGS[mode]:
        res = {}
        for L in depths:
            for ck in MODES:
                cfg = {**kern, "n": n, "S": S, "L": L, "checkpoint": ck, "repeats": repeats}
                res[L, ck] = C.run_worker(__file__, cfg, threads=args.threads)
        name = kern["kernel"] + (f" (R = {kern['options']['rank']})" if kern["options"] else "")
        for L in depths:
            full, sq = res[L, None], res[L, "sqrt"]
            rows.append(
                [
                    name,
                    full["N"],
                    S,
                    L,
                    full["traced_mb"],
                    sq["traced_mb"],
                    f"{full['states']:.1f} / {sq['states']:.1f}",
                    full["rss_delta_mb"],
                    sq["rss_delta_mb"],
                    f"{full['traced_mb'] / sq['traced_mb']:.1f}",
                    f"{sq['time'] / full['time']:.2f} ({sq['user'] / full['user']:.2f})",
                ]
            )
        if len(depths) > 1:
            for ck, label in ((None, "full storage"), ("sqrt", "sqrt checkpointing")):
                p = C.fit_exponent(depths, [res[L, ck]["traced_mb"] for L in depths])
                fits.append(
                    [name, label, ", ".join(map(str, depths)), p, "1" if ck is None else "0.5"]
                )
    body = (
        f"IMEX Euler, ε = 0, {args.threads} BLAS thread(s). Peak: NumPy allocations during one "
        "gradient (tracemalloc); in units of one N×S multivector in the 'states' column; RSS Δ: "
        "the process's peak RSS minus its RSS after set-up. Overhead: time(sqrt) / time(full), "
        "in parentheses the same for user CPU time only (without the page faults of "
        "fresh memory), "
        f"best of {repeats}.\n\n"
        + C.table(
            [
                "kernel",
                "N",
                "S",
                "N_t",
                "peak MB full",
                "peak MB sqrt",
                "states full / sqrt",
                "RSS Δ MB full",
                "RSS Δ MB sqrt",
                "memory ratio",
                "recompute overhead",
            ],
            rows,
        )
        + "\n\nFitted exponent of the peak in N_t:\n\n"
        + C.table(["kernel", "storage", "N_t", "fitted exponent", "expected"], fits)
    )
    n, ms = OPTIMISER[mode]
    rows2 = []
    for what, label in (("lmvm", "TAO lmvm"), ("lbfgs", "pontryx lbfgs")):
        for m in ms:
            r = C.run_worker(__file__, {"what": what, "n": n, "m": m}, threads=args.threads)
            copies = f"{r['per_rank'][0][0]:.1f}"
            rows2.append([f"{label}, m = {m}", r["N"], f"{r['mb']:.1f}", copies])
    r = C.run_worker(__file__, {"what": "model", "n": n}, threads=args.threads, ranks=2)
    share = ", ".join(f"{c:.2f} (θ share {f:.2f})" for c, f in r["per_rank"])
    rows2.append(["write model.npz, 2 ranks", r["N"], f"{r['mb']:.1f}", share])
    body += (
        "\n\nThe optimiser and the outputs, in copies of the controls θ (dense kernel, 8 "
        "layers; peak RSS over the baseline after set-up / bytes of θ on that rank):\n\n"
        + C.table(["what", "N", "θ MB (all ranks)", "copies of θ per rank"], rows2)
    )
    return C.publish("Memory: full storage vs checkpointing", body)


if __name__ == "__main__":
    main()
