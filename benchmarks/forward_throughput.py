"""Forward throughput of the dense kernel against the machine's GEMM rate.

One IMEX Euler layer with ε = 0 is  U ← U + Δt σ(W (M_L U) + b 1ᵀ): one GEMM
(N×N)@(N×S) of 2N²S flops plus O(NS) elementwise work. The achieved rate
2N²S·N_t / t_forward is compared with the rate of a bare NumPy GEMM of the
same shapes measured in the same run (warm-up, best of several, interleaved).

Goal: forward rate ≥ 70 % of the GEMM rate at N ≈ 1000, S ≈ 1000, N_t = 32.

    .venv/bin/python benchmarks/forward_throughput.py [--smoke | --full] [--threads T]
"""

from __future__ import annotations

from mpi4py import MPI  # noqa: F401  (before DOLFINx)

import _common as C

GOAL = 0.70
CONFIGS = {
    "smoke": [(7, 64, 4)],
    "quick": [(31, 1000, 32)],
    "full": [(31, 1000, 32), (31, 4096, 32), (44, 1000, 32), (44, 4096, 16)],
}


def measure(n: int, S: int, layers: int, repeats: int) -> dict:
    space, net, theta, _, X = C.problem(n, S, layers)
    N = space.N
    times = C.best_times(
        {"gemm": C.gemm_call(N, S), "forward": lambda: net.forward(theta, X)},
        repeats=repeats,
    )
    flops = 2.0 * N * N * S
    gemm = C.gflops(flops, times["gemm"])
    fwd = C.gflops(flops * layers, times["forward"])
    net.destroy()
    return {"N": N, "S": S, "N_t": layers, "gemm": gemm, "forward": fwd, "ratio": fwd / gemm}


def main(argv=None) -> str:
    args = C.arguments(__doc__, argv)
    mode = C.mode(args)
    repeats = 2 if mode == "smoke" else 5
    rows = []
    with C.limit_threads(args.threads):
        for n, S, L in CONFIGS[mode]:
            r = measure(n, S, L, repeats)
            rows.append(
                [r["N"], r["S"], r["N_t"], r["gemm"], r["forward"], f"{100 * r['ratio']:.0f} %"]
            )
    body = (
        f"Dense kernel, IMEX Euler, ε = 0, tanh, {args.threads} BLAS thread(s); "
        f"2N²S flops per layer; goal ≥ {100 * GOAL:.0f} % of the GEMM rate.\n\n"
        + C.table(["N", "S", "N_t", "GEMM GFLOP/s", "forward GFLOP/s", "forward / GEMM"], rows)
    )
    return C.publish("Forward throughput (dense kernel)", body)


if __name__ == "__main__":
    main()
