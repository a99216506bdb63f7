"""Cost of a gradient relative to a forward pass, for each kernel type.

With every layer's record stored (no checkpointing) the adjoint recomputes
nothing: per layer the forward does one kernel product K U, the backward two
(Kᵀ D and the kernel's vector–Jacobian product, for the dense kernel the GEMMs
Wᵀ D and D (M_L U)ᵀ). So (forward + adjoint)/forward ≈ 3 for the dense kernel;
goal ≤ 3.2. The dense gradient's rate 3·2N²S·N_t / t_gradient is also compared
with the GEMM rate of the same shapes measured in the same process (goal ≥ 70 %).

Each configuration runs in a fresh process. "sys" is the share of the gradient's
time spent in the kernel (first-touch page faults of freshly allocated memory).
The sweep takes its stored records and temporaries from the network's workspace
(pontryx.solver.model.workspace), reused from one gradient to the next, so what
remains is the fresh gradient arrays; the second dense row runs with glibc told
to keep all freed memory (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_) for
comparison.

    .venv/bin/python benchmarks/gradient_cost.py [--smoke | --full] [--threads T]
"""

from __future__ import annotations

import json
import resource

import _common as C

RATIO_GOAL, GEMM_GOAL = 3.2, 0.70
KEEP_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}
# kernel, options, mesh n, S, N_t, glibc keeps memory
CONFIGS = {
    "smoke": [
        ("dense", {}, 7, 64, 4, False),
        ("lowrank", {"rank": 4}, 7, 64, 4, False),
        ("local", {}, 7, 16, 2, False),
    ],
    "quick": [
        ("dense", {}, 31, 1000, 16, False),
        ("dense", {}, 31, 1000, 16, True),
        ("lowrank", {"rank": 16}, 31, 1000, 16, False),
        ("local", {}, 31, 1000, 4, False),
    ],
    "full": [
        ("dense", {}, 31, 1000, 32, False),
        ("dense", {}, 31, 1000, 32, True),
        ("dense", {}, 44, 2000, 32, False),
        ("lowrank", {"rank": 16}, 31, 1000, 32, False),
        ("lowrank", {"rank": 64}, 31, 1000, 32, False),
        ("local", {}, 31, 1000, 8, False),
    ],
}


def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime


def worker(cfg: dict, threads: int) -> None:
    with C.limit_threads(threads):
        space, net, theta, rf, X = C.problem(
            cfg["n"], cfg["S"], cfg["L"], kernel=cfg["kernel"], kernel_options=cfg["options"]
        )
        N, S, L = space.N, X.shape[1], net.layers
        grad_sys = {"calls": 0, "user": 0.0, "sys": 0.0}

        def gradient():  # system-time share over the timed calls (not the warm-up)
            u0, s0 = _cpu()
            rf.value_and_gradient(theta)
            u1, s1 = _cpu()
            grad_sys["calls"] += 1
            if grad_sys["calls"] > 1:
                grad_sys["user"] += u1 - u0
                grad_sys["sys"] += s1 - s0

        t = C.best_times(
            {
                "gemm": C.gemm_call(N, S),
                "forward": lambda: net.forward(theta, X),
                "gradient": gradient,
            },
            repeats=cfg["repeats"],
        )
        flops = 2.0 * N * N * S * L
        C.emit(
            {
                "N": N,
                "S": S,
                "N_t": L,
                **t,
                "sys_share": grad_sys["sys"] / max(grad_sys["user"] + grad_sys["sys"], 1e-30),
                "gemm_gflops": C.gflops(2.0 * N * N * S, t["gemm"]),
                "forward_gflops": C.gflops(flops, t["forward"]),
                "gradient_gflops": C.gflops(3 * flops, t["gradient"]),
            }
        )


def main(argv=None) -> str:
    args = C.parse(C.parser(__doc__.splitlines()[0]), argv)
    if args.worker:
        return worker(json.loads(args.worker), args.threads)
    mode = C.mode(args)
    repeats = 1 if mode == "smoke" else 3
    rows = []
    for kernel, options, n, S, L, keep in CONFIGS[mode]:
        cfg = {"kernel": kernel, "options": options, "n": n, "S": S, "L": L, "repeats": repeats}
        env = KEEP_MEMORY if keep else None
        r = C.run_worker(__file__, cfg, threads=args.threads, extra_env=env)
        name = kernel + (f" (R = {options['rank']})" if "rank" in options else "")
        dense = kernel == "dense"
        rows.append(
            [
                name + (" · keep memory" if keep else ""),
                r["N"],
                r["S"],
                r["N_t"],
                r["forward"],
                r["gradient"],
                f"{r['gradient'] / r['forward']:.2f}",
                f"{100 * r['sys_share']:.0f} %",
                r["gemm_gflops"],
                r["gradient_gflops"] if dense else "–",
                f"{100 * r['gradient_gflops'] / r['gemm_gflops']:.0f} %" if dense else "–",
            ]
        )
    body = (
        f"IMEX Euler, ε = 0, tanh, full storage (no checkpointing), {args.threads} BLAS "
        f"thread(s); best of {repeats} after a warm-up. Goals (dense): gradient/forward ≤ "
        f"{RATIO_GOAL}, gradient rate (3 GEMMs of 2N²S flops per layer) ≥ "
        f"{100 * GEMM_GOAL:.0f} % of the GEMM rate.\n\n"
        + C.table(
            [
                "kernel",
                "N",
                "S",
                "N_t",
                "forward s",
                "gradient s",
                "gradient / forward",
                "sys",
                "GEMM GFLOP/s",
                "gradient GFLOP/s",
                "gradient / GEMM",
            ],
            rows,
        )
    )
    text = C.section("Gradient cost (forward + adjoint) / forward", body)
    C.report(text)
    return text


if __name__ == "__main__":
    main()
