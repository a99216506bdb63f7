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

    .venv/bin/python benchmarks/memory.py [--smoke | --full] [--threads T]
"""

from __future__ import annotations

import json
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


def worker(cfg: dict, threads: int) -> None:
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
    args = C.parse(C.parser(__doc__.splitlines()[0]), argv)
    if args.worker:
        return worker(json.loads(args.worker), args.threads)
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
    text = C.section("Memory: full storage vs checkpointing", body)
    C.report(text)
    return text


if __name__ == "__main__":
    main()
