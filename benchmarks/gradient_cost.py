"""Cost of a gradient relative to a forward pass, for each kernel type, on every
core layout of two cores.

With every layer's record stored (no checkpointing) the adjoint recomputes
nothing: per layer the forward does one kernel product K U, the backward two
(Kᵀ D and the kernel's vector–Jacobian product, for the dense kernel the GEMMs
Wᵀ D and D (M_L U)ᵀ). So (forward + adjoint)/forward ≈ 3 for the dense kernel;
goal ≤ 3.2. Each kernel's gradient rate (its flops over the gradient's time) is
compared with the rate of its own elementary product on the same shapes and the
same cores, measured in the same run, interleaved with the gradient:

* dense: 3 GEMMs of 2nNS per layer against the same three GEMMs, as a layer
  calls them (W G, Wᵀ D with W passed transposed to BLAS, D Gᵀ into an n×N array;
  goal ≥ 85 % for N ≥ 512). Until #17's fourth round the reference was W G alone,
  repeated (measured on a 2-core Xeon with OpenBLAS 0.3.34: within −3 … +5 % of
  the three products' mean, so the two references give the same ratio to within
  about 3 points),
* low rank: 14nRS per layer (forward Gᵀ(M_L U) and A P, backward Aᵀ D,
  Gᵀ(M_L U), D Pᵀ, (M_L U)(Aᵀ D)ᵀ, G (Aᵀ D)) against the GEMM (n×R)@(R×S),
* local: 6 nnz(L) S per layer (L U, Lᵀ D and the sampled product on the
  pattern of L) against SciPy's CSR (n×N, nnz(L))@(N×S) (SpMM).

Layouts (``--layouts``): ``serial`` 1 rank × 1 thread, ``threads`` 1 rank × T
threads (T = ``--threads``, at least 2; the samples split over the threads where
it runs, ``solver/adjoint/split.py``), ``rows`` the same with ``threads: rows``
(one sweep, GEMMs on the T threads: the A/B of the split), ``data`` and ``width`` 2 ranks × 1
thread on that axis (``mpirun`` from this script). n, S above are each rank's
rows and samples (the table gives the global N, S); rates of 2 ranks add both
ranks' flops over their common time.
With ``--clock cpu`` the threads layout is left out (CPU time counts every
thread). Each configuration runs in a fresh process. "sys" is the share of the
gradient's time spent in the kernel (first-touch page faults of freshly
allocated memory); the "keep memory" row (serial layout) runs with glibc told
to keep all freed memory (MALLOC_MMAP_MAX_=0, MALLOC_TRIM_THRESHOLD_).

    .venv/bin/python benchmarks/gradient_cost.py [--smoke | --full] [--threads T] [--layouts L,…]
"""

from __future__ import annotations

import math
import resource

import _common as C
import numpy as np

RATIO_GOAL, GEMM_GOAL = 3.2, 0.85
RATIO_GOALS = {"dense": 3.2, "lowrank": 3.5, "local": 4.0}
KEEP_MEMORY = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**40)}
LAYOUTS = {
    "serial": ("1 rank × 1 thread", 1, None),
    "threads": ("1 rank × {T} threads", 1, None),
    "rows": ("1 rank × {T} threads · one sweep (threads: rows)", 1, None),
    "data": ("2 ranks × 1 thread, data axis", 2, "data"),
    "width": ("2 ranks × 1 thread, width axis", 2, "width"),
    "width-mpi": ("2 ranks × 1 thread, width axis · MPI collectives", 2, "width"),
}
# kernel, options, mesh n, S, N_t, glibc keeps memory
CONFIGS = {
    "smoke": [
        ("dense", {}, 7, 64, 4, False),
        ("lowrank", {"rank": 4}, 7, 64, 4, False),
        ("local", {}, 7, 16, 2, False),
    ],
    "quick": [
        ("dense", {}, 22, 1000, 16, False),
        ("dense", {}, 31, 1000, 16, False),
        ("dense", {}, 31, 1000, 16, True),
        ("lowrank", {"rank": 16}, 31, 1000, 16, False),
        ("local", {}, 31, 1000, 4, False),
    ],
    "full": [
        ("dense", {}, 15, 1000, 32, False),
        ("dense", {}, 22, 1000, 32, False),
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


def _reference(kernel, net, theta, X, space):
    """(callable, its flops, gradient flops per layer, forward flops per layer) on
    this rank: the kernel's elementary product on this rank's shapes."""
    from pontryx.solver.model.blas import matmul

    n, N, S = space.n, space.N, X.shape[1]
    rng = np.random.default_rng(0)
    if kernel == "dense":  # the layer's three GEMMs: W G, Wᵀ D (A transposed), D Gᵀ
        W, G, D = (rng.standard_normal(s) for s in ((n, N), (N, S), (n, S)))
        Z, Y, P = np.empty((n, S)), np.empty((N, S)), np.empty((n, N))

        def layer():
            matmul(W, G, out=Z)
            matmul(W.T, D, out=Y)
            matmul(D, G.T, out=P)

        f = 2.0 * n * N * S
        return layer, 3 * f, 3 * f, f
    if kernel == "lowrank":
        R = net.kernel.rank
        A, B, out = rng.standard_normal((n, R)), rng.standard_normal((R, S)), np.empty((n, S))
        f = 2.0 * n * R * S
        return (lambda: matmul(A, B, out=out)), f, 7 * f, 2 * f
    L = net.kernel.layer(net.layer_controls(theta, 0)).L
    B = rng.standard_normal((N, S))
    f = 2.0 * L.nnz * S
    return (lambda: L @ B), f, 3 * f, f


def worker(cfg: dict, threads: int) -> None:
    from mpi4py import MPI

    from pontryx.solver import Layout

    world = MPI.COMM_WORLD
    layout = None
    if world.size > 1:
        layout = Layout.create(world, **{cfg["axis"]: world.size})
    with C.limit_threads(threads):
        space, net, theta, rf, X = C.problem(
            cfg["n"],
            cfg["S"],
            cfg["L"],
            kernel=cfg["kernel"],
            kernel_options=cfg["options"],
            layout=layout,
            exchange="mpi" if cfg["threads_mode"] == "width-mpi" else "shared",
        )
        rf.threads = "rows" if cfg.get("threads_mode") == "rows" else "samples"
        L = net.layers
        ref, ref_flops, grad_flops, fwd_flops = _reference(cfg["kernel"], net, theta, X, space)
        grad_sys = {"calls": 0, "user": 0.0, "sys": 0.0}

        def gradient():  # system-time share over the timed calls (not the warm-up)
            u0, s0 = _cpu()
            rf.value_and_gradient(theta)
            u1, s1 = _cpu()
            grad_sys["calls"] += 1
            if grad_sys["calls"] > 1:
                grad_sys["user"] += u1 - u0
                grad_sys["sys"] += s1 - s0

        # forward: J(θ), the forward sweep and the misfit, split over the threads as
        # the gradient is (solver/adjoint/split.py)
        fns = {"reference": ref, "forward": lambda: rf(theta), "gradient": gradient}
        for fn in fns.values():  # warm-up
            fn()
        best = dict.fromkeys(fns, math.inf)
        for _ in range(cfg["repeats"]):  # interleaved, every rank starting together
            for key, fn in fns.items():
                world.barrier()
                t = C.now()
                fn()
                world.barrier()
                best[key] = min(best[key], world.allreduce(C.now() - t, op=MPI.MAX))
        total = world.allreduce(np.array([ref_flops, grad_flops * L, fwd_flops * L]), op=MPI.SUM)
        C.emit(
            {
                "N": space.N,
                "S": rf.S,
                "N_t": L,
                **best,
                "sys_share": grad_sys["sys"] / max(grad_sys["user"] + grad_sys["sys"], 1e-30),
                "reference_gflops": C.gflops(total[0], best["reference"]),
                "gradient_gflops": C.gflops(total[1], best["gradient"]),
                "forward_gflops": C.gflops(total[2], best["forward"]),
            }
        )


def _layouts(args, mode) -> list[str]:
    if args.layouts:
        names = [x.strip() for x in args.layouts.split(",") if x.strip()]
    else:
        names = ["serial", "data"] if mode == "smoke" else list(LAYOUTS)
    if args.clock == "cpu":
        names = [x for x in names if x not in ("threads", "rows")]
    unknown = set(names) - set(LAYOUTS)
    if unknown:
        raise SystemExit(
            f"--layouts: unknown {', '.join(sorted(unknown))} (of {', '.join(LAYOUTS)})"
        )
    return names


def main(argv=None) -> str:
    p = C.parser(__doc__)
    p.add_argument(
        "--layouts", help="comma-separated: serial, threads, rows, data, width, width-mpi"
    )
    args = C.parse(p, argv)
    if args.worker:
        return C.in_worker(args, worker)
    mode = C.mode(args)
    repeats = 1 if mode == "smoke" else 3
    T = max(2, args.threads)
    rows = []
    for layout in _layouts(args, mode):
        label, ranks, axis = LAYOUTS[layout]
        threads = T if layout in ("threads", "rows") else 1
        for kernel, options, n, S, L, keep in CONFIGS[mode]:
            if keep and layout != "serial":
                continue
            cfg = {"kernel": kernel, "options": options, "n": n, "S": S, "L": L}
            cfg.update(repeats=repeats, axis=axis, threads_mode=layout)
            env = KEEP_MEMORY if keep else None
            r = C.run_worker(
                __file__, cfg, threads=threads, ranks=ranks if ranks > 1 else None, extra_env=env
            )
            name = kernel + (f" (R = {options['rank']})" if "rank" in options else "")
            ratio = r["gradient"] / r["forward"]
            rate = r["gradient_gflops"] / r["reference_gflops"]
            rows.append(
                [
                    label.format(T=T),
                    name + (" · keep memory" if keep else ""),
                    r["N"],
                    r["S"],
                    r["N_t"],
                    r["forward"],
                    r["gradient"],
                    f"{ratio:.2f}" + ("" if ratio <= RATIO_GOALS[kernel] else " ✗"),
                    f"{100 * r['sys_share']:.0f} %",
                    r["reference_gflops"],
                    r["gradient_gflops"],
                    f"{100 * rate:.0f} %",
                ]
            )
    body = (
        f"IMEX Euler, ε = 0, tanh, full storage (no checkpointing); best of {repeats} after "
        "a warm-up, the reference product, forward and gradient interleaved. Goals: "
        "gradient/forward ≤ "
        + ", ".join(f"{v} ({k})" for k, v in RATIO_GOALS.items())
        + f" (✗: missed); dense gradient rate ≥ {100 * GEMM_GOAL:.0f} % of the GEMM rate of "
        "the same layout for N ≥ 512. Reference: the layer's three GEMMs (dense), the GEMM (low "
        "rank) or SpMM (local), "
        "see the script's docstring for the flop counts.\n\n"
        + C.table(
            [
                "layout",
                "kernel",
                "N",
                "S",
                "N_t",
                "forward s",
                "gradient s",
                "gradient / forward",
                "sys",
                "reference GFLOP/s",
                "gradient GFLOP/s",
                "gradient / reference",
            ],
            rows,
        )
    )
    return C.publish("Gradient cost (forward + adjoint) / forward", body)


if __name__ == "__main__":
    main()
