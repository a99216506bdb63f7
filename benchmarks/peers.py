"""pontryx against PyTorch autograd and JAX on the identical discrete model.

For each size, pontryx builds the problem (unit_square P1 mesh → M_L = space.m,
dense W, b, E, C, d, random inputs and labels, α = β = 1e-4, float64) and exports
it with its own J and gradient to an .npz. Each peer (``peers/torch_peer.py``,
``peers/jax_peer.py``, in their own venvs) first checks its J and gradient
against pontryx's (relative error ≤ 1e-10, else it is not timed), then, in a
fresh process, times the gradient (best of several after a warm-up call) and
reports its peak resident memory; pontryx is timed the same way. The timing
processes of all frameworks run in ``--rounds`` rounds, interleaved (pontryx,
its ranks, each peer; again), and each round's ratios are reported beside the
best-of-rounds ratio: on a host whose load moves the same code's time by up to
1.9× between runs, frameworks timed one after the other were compared across
different loads. All use the
same number of threads, and every process is confined to that many cores
(``sched_setaffinity``): XLA's CPU client, asked for one intra-op thread, still
kept 2 cores busy (its 1-thread GEMM rate 119 GFLOP/s, CPU/wall 1.93; confined:
66 GFLOP/s). The table shows the cores each gradient kept busy.

BLAS kernels. pontryx's GEMMs run in NumPy's OpenBLAS (``--blas mkl``: in MKL, the
BLAS of PyTorch's CPU wheels, as ``parallel.blas: mkl`` runs them); OpenBLAS picks its
kernels by CPU detection unless OPENBLAS_CORETYPE pins them; PyTorch brings MKL and JAX
XLA's own kernels, which ignore that variable. When the environment pins
OPENBLAS_CORETYPE (this machine: Haswell, AVX2, on an AVX-512 CPU), pontryx is
timed twice — with the environment as it is and with the variable removed — and
the table gives the pontryx/peer ratio for both.

    .venv/bin/python benchmarks/peers.py [--smoke | --full] [--threads T] [--rounds R]
    .venv/bin/python benchmarks/peers.py --setup-peers    # create the peer venvs

Peers whose venv (benchmarks/.venv-torch, benchmarks/.venv-jax) is missing are
skipped. ``--setup-peers`` creates them: PyTorch CPU wheels exist here for
Python 3.11 only (``--torch-python``), JAX in a 3.12 venv (``--jax-python``).
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import _common as C

PEERS = {
    "torch": {
        "venv": C.HERE / ".venv-torch",
        "script": C.HERE / "peers" / "torch_peer.py",
        "packages": ["torch==2.13.0", "numpy"],
        "python": ["python3.11", "python3"],
        "version": (3, 11),
    },
    "jax": {
        "venv": C.HERE / ".venv-jax",
        "script": C.HERE / "peers" / "jax_peer.py",
        "packages": ["jax", "jaxlib", "numpy"],
        "python": ["/root/.pyenv/versions/3.12.1/bin/python3.12", "python3.12"],
        "version": (3, 12),
    },
}
TOL = 1e-10
ALPHA = BETA = 1e-4
#: OPENBLAS_CORETYPE as set in the environment (None: OpenBLAS detects the CPU)
PINNED = os.environ.get("OPENBLAS_CORETYPE") or None
PEER_BLAS = {"torch": "MKL", "jax": "XLA/Eigen"}
# (mesh n → N = (n+1)² dofs, S, N_t)
CONFIGS = {
    "smoke": [(4, 16, 4)],
    "quick": [(15, 256, 16), (22, 512, 16), (31, 1024, 16)],
    "full": [
        (15, 1024, 32),
        (22, 1024, 32),
        (31, 1024, 32),
        (44, 1024, 32),
        (31, 256, 32),
        (31, 4096, 32),
        (22, 1024, 16),
        (22, 1024, 64),
        (22, 1024, 256),
    ],
}


# -- pontryx side (fresh worker processes) ------------------------------------------
def worker(cfg: dict, threads: int) -> None:
    from mpi4py import MPI

    import numpy as np

    world = MPI.COMM_WORLD
    layout = None
    if world.size > 1:  # the same problem on the data axis (role "time" only)
        from pontryx.solver import Layout

        layout = Layout.create(world, data=world.size)
    with C.limit_threads(threads):
        space, net, theta, rf, X = C.problem(
            cfg["n"], cfg["S"], cfg["L"], alpha=ALPHA, beta=BETA, seed=cfg.get("seed", 0),
            layout=layout,
        )  # fmt: skip
        setup = world.allreduce(C.rss_mb())  # every rank's memory, summed
        if cfg["role"] == "export":
            J, grad = rf.value_and_gradient(theta)
            d = Path(cfg["dir"])
            np.savez(
                d / "problem.npz",
                m=space.m,
                X=X,
                y=rf.y,
                dt=net.dt,
                alpha=ALPHA,
                beta=BETA,
                **{k: theta[k] for k in ("E", "W", "b", "C", "d")},
            )
            np.savez(d / "reference.npz", J=J, **{k: grad[k] for k in ("W", "b", "C", "d")})
            if not cfg.get("also_time"):
                return C.emit({"N": space.N, "J": J})
            del grad

        def gradient():  # every rank starts together; the slowest rank's time counts
            world.barrier()
            rf.value_and_gradient(theta)
            world.barrier()

        t = C.now()
        gradient()
        first = world.allreduce(C.now() - t, op=MPI.MAX)
        best = C.best_time(gradient, repeats=cfg["repeats"], warmup=0)
        best = world.allreduce(best, op=MPI.MAX)
        peak = world.allreduce(C.peak_rss_mb())
        cores = world.allreduce(C.cores_used(gradient))
        gemm = C.best_time(C.gemm_call(space.N, X.shape[1]), repeats=3)
        gemm_rate = world.allreduce(C.gflops(2 * space.N**2 * X.shape[1], gemm))  # all ranks
        from threadpoolctl import threadpool_info

        from pontryx.solver.model import blas as library

        # NumPy's OpenBLAS (SciPy and PETSc load their own copies too), or MKL
        blas = ["MKL"] if library.current() == "mkl" else [
            i.get("architecture", "?")
            for i in threadpool_info()
            if "scipy_openblas" in Path(i["filepath"]).name
        ]  # fmt: skip
        C.emit(
            {
                "N": space.N,
                "blas": blas[0] if blas else "?",
                "time": best,
                "first_call": first,
                "setup_rss_mb": setup,
                "peak_rss_mb": peak,
                "cores": cores,
                "gemm_gflops": gemm_rate,
            }
        )


# -- peers ----------------------------------------------------------------------------
def venv_python(name: str) -> Path:
    return PEERS[name]["venv"] / "bin" / "python"


def available() -> list[str]:
    return [k for k in PEERS if venv_python(k).exists()]


def _interpreter(candidates, version) -> str | None:
    for c in candidates:
        exe = shutil.which(c) or (c if Path(c).exists() else None)
        if exe is None:
            continue
        out = subprocess.run(
            [exe, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True, text=True
        )
        if out.returncode == 0 and tuple(map(int, out.stdout.split())) == version:
            return exe
    return None


def setup_peers(torch_python=None, jax_python=None) -> None:
    """Create benchmarks/.venv-torch and benchmarks/.venv-jax with pip."""
    chosen = {"torch": torch_python, "jax": jax_python}
    for name, p in PEERS.items():
        if venv_python(name).exists():
            print(f"{name}: {p['venv']} exists")
            continue
        exe = chosen[name] or _interpreter(p["python"], p["version"])
        if exe is None:
            print(f"{name}: no Python {'.'.join(map(str, p['version']))} found; skipped")
            continue
        print(f"{name}: creating {p['venv']} with {exe}", flush=True)
        subprocess.run([exe, "-m", "venv", str(p["venv"])], check=True)
        subprocess.run([str(venv_python(name)), "-m", "pip", "install", *p["packages"]], check=True)


def run_peer(
    name: str, problem: Path, threads: int, repeats: int, reference=None, also_time=False
) -> dict:
    import json

    cmd = [str(venv_python(name)), str(PEERS[name]["script"]), str(problem)]
    cmd += ["--threads", str(threads), "--repeats", str(repeats), "--tol", str(TOL)]
    if reference is not None:
        cmd += ["--reference", str(reference)] + (["--also-time"] if also_time else [])
    proc = subprocess.run(
        cmd, env=C.thread_env(threads), capture_output=True, text=True,
        preexec_fn=C.pinned(threads),
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


# -- driver ---------------------------------------------------------------------------
def _efficiency(N, S, L, framework, blas, res, best_gemm=None) -> list:
    """A row of the GEMM-efficiency table: the gradient's rate (3 GEMMs of 2N²S
    flops per layer) against the framework's own GEMM rate; for a peer also the
    largest speed-up pontryx could have over it, at 100 % of pontryx's best GEMM
    rate ``best_gemm``: t_peer / (6N²S·N_t / best_gemm)."""
    rate = C.gflops(6 * N * N * S * L, res["time"])
    gemm = res.get("gemm_gflops")
    share = f"{rate / gemm:.0%}" if gemm else "–"
    bound = f"{best_gemm / rate:.2f}" if best_gemm else "–"
    return [N, S, L, framework, blas, gemm or "–", rate, share, bound]


def _cores(res: dict) -> str:
    """The cores a timed gradient kept busy (CPU time / wall time), as measured."""
    return f"{res['cores']:.2f}" if "cores" in res else "–"


def _interleaved(jobs: dict, rounds: int) -> dict:
    """Run each timing job (a callable returning a result dict with "time") once per
    round, the jobs interleaved round by round, so that a change of the machine's
    load hits every framework alike. Per job: the result of its fastest run, with
    "times" the time of each round; a job whose runs all failed keeps its first
    error."""
    runs: dict = {key: [] for key in jobs}
    for _ in range(rounds):
        for key, job in jobs.items():
            runs[key].append(job())
    out = {}
    for key, results in runs.items():
        ok = [r for r in results if "error" not in r]
        if not ok:
            out[key] = results[0]
            continue
        best = min(ok, key=lambda r: r["time"])
        out[key] = {**best, "times": [r.get("time", math.nan) for r in results]}
    return out


def _per_round(a: dict, b: dict) -> str:
    """Median and range of the time ratio a/b over the rounds (each round's own pair)."""
    ratios = [x / y for x, y in zip(a.get("times", []), b.get("times", [])) if x > 0 and y > 0]
    ratios = [r for r in ratios if math.isfinite(r)]
    if len(ratios) < 2:
        return "–"
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"


def measure(
    n, S, L, threads, repeats, peers, one_process=False, rounds=1, mkl=False
) -> tuple[list, list]:
    """Rows of the two tables for one size. ``one_process`` (smoke mode) checks
    and times in the same process, which saves start-ups but inflates the peaks.
    Otherwise each peer's gradient is first checked against pontryx's, then the
    timing processes of pontryx and of the peers that agree run in ``rounds``
    interleaved rounds (:func:`_interleaved`); with ``mkl`` also pontryx with
    ``parallel.blas: mkl`` (its row, and a column of its ratio to each peer)."""
    rows, eff = [], []
    with tempfile.TemporaryDirectory(prefix="pontryx-peers-") as tmp:
        tmp = Path(tmp)
        base = {"n": n, "S": S, "L": L, "repeats": repeats}
        export = {**base, "role": "export", "dir": str(tmp), "also_time": one_process}
        px = info = C.run_worker(__file__, export, threads=threads, pin=True)
        N = info["N"]
        checks = {
            name: run_peer(
                name, tmp / "problem.npz", threads, repeats, tmp / "reference.npz", one_process
            )
            for name in peers
        }
        agree = [k for k, chk in checks.items() if "error" not in chk and chk["agrees"]]
        timed = {}
        if one_process:
            timed = {name: checks[name] for name in agree}
        else:
            timing = {**base, "role": "time"}
            jobs = {"pontryx": lambda: C.run_worker(__file__, timing, threads=threads, pin=True)}
            if PINNED:  # pontryx with OpenBLAS's own CPU detection
                jobs["own"] = lambda: C.run_worker(
                    __file__, timing, threads=threads, extra_env={"OPENBLAS_CORETYPE": None},
                    pin=True,
                )  # fmt: skip
            if mkl:  # pontryx with its GEMMs in MKL (parallel.blas: mkl)
                jobs["mkl"] = lambda: C.run_worker(
                    __file__, timing, threads=threads, extra_env={C.BLAS_ENV: "mkl"}, pin=True
                )
            if threads > 1:  # the same cores as ranks: the data axis
                jobs["ranks"] = lambda: C.run_worker(__file__, timing, threads=1, ranks=threads)
                if mkl:
                    jobs["ranks_mkl"] = lambda: C.run_worker(
                        __file__, timing, threads=1, ranks=threads, extra_env={C.BLAS_ENV: "mkl"}
                    )
            for name in agree:
                jobs[name] = lambda name=name: run_peer(name, tmp / "problem.npz", threads, repeats)
            timed = _interleaved(jobs, rounds)
            px = timed["pontryx"]
        own, px_ranks, px_mkl = timed.get("own"), timed.get("ranks"), timed.get("mkl")
        ranks_mkl = timed.get("ranks_mkl")
        px_delta = px["peak_rss_mb"] - px["setup_rss_mb"]
        rows.append(
            [N, S, L, "pontryx", px["blas"], px["time"], _cores(px), px["peak_rss_mb"], px_delta]
            + ["–", "1", "–"]
            + (["–"] if PINNED else [])
            + ["1"]
        )
        eff.append(_efficiency(N, S, L, "pontryx", px["blas"], px))

        def variant(label: str, res: dict, detected: str = "–") -> None:
            """The rows of a pontryx variant: its time against the first pontryx row's."""
            delta = res["peak_rss_mb"] - res["setup_rss_mb"]
            size = [N, S, L, label, res["blas"], res["time"], _cores(res), res["peak_rss_mb"]]
            ratio = f"{res['time'] / px['time']:.2f}"
            tail = [detected] if PINNED else []
            rows.append([*size, delta, "–", ratio, _per_round(res, px), *tail, "–"])
            eff.append(_efficiency(N, S, L, label, res["blas"], res))

        for label, res, detected in (
            ("pontryx", own, "1"),  # OpenBLAS's own CPU detection
            ("pontryx (blas: mkl)", px_mkl, "–"),
            (f"pontryx · {threads} ranks (data)", px_ranks, "–"),
            (f"pontryx (blas: mkl) · {threads} ranks (data)", ranks_mkl, "–"),
        ):
            if res is not None:
                variant(label, res, detected)
        dash = ["–"] * (4 if PINNED else 3)  # ratio, per round, (detected), memory
        for name in peers:
            chk = checks[name]
            if "error" in chk:
                rows.append([N, S, L, name, "–", "failed", "–", "–", "–", chk["error"][:60], *dash])
                continue
            err = f"{chk['rel_err_grad']:.1e}"
            if not chk["agrees"]:
                rows.append(
                    [N, S, L, chk["peer"], "–", "not timed", "–", "–", "–", err + " ✗", *dash]
                )
                continue
            res = timed[name]
            if "error" in res:
                rows.append([N, S, L, chk["peer"], "–", "failed", "–", "–", "–", err, *dash])
                continue
            delta = res["peak_rss_mb"] - res["setup_rss_mb"]
            ratios = [f"{px['time'] / res['time']:.2f}"]
            per_round = _per_round(px, res)
            if px_ranks is not None:
                ratios[0] += f" ({px_ranks['time'] / res['time']:.2f})"
                ranks_round = _per_round(px_ranks, res)
                if ranks_round != "–":
                    per_round += f"; ranks {ranks_round}"
            ratios.append(per_round)
            if PINNED:
                ratios.append(f"{own['time'] / res['time']:.2f}" if own else "–")
            memory = f"{px_delta / delta:.2f}" if delta > 0 else "–"
            size = [N, S, L, res["peer"], PEER_BLAS[name], res["time"], _cores(res)]
            size += [res["peak_rss_mb"], delta]
            rows.append([*size, err, *ratios, memory])
            if px_mkl is not None:  # the MKL column, before the memory ratio
                mkl_ratio = f"{px_mkl['time'] / res['time']:.2f}; {_per_round(px_mkl, res)}"
                if ranks_mkl is not None:
                    mkl_ratio += f"; ranks {ranks_mkl['time'] / res['time']:.2f}"
                    ranks_round = _per_round(ranks_mkl, res)
                    mkl_ratio += f", {ranks_round}" if ranks_round != "–" else ""
                rows[-1].insert(-1, mkl_ratio)
            best_gemm = max(r.get("gemm_gflops", 0.0) for r in (px, own or {}, px_mkl or {}))
            eff.append(_efficiency(N, S, L, res["peer"], PEER_BLAS[name], res, best_gemm))
    if px_mkl is not None:  # the MKL column of the other rows
        width = 14 if PINNED else 13  # the columns without it
        for row in rows:
            if len(row) == width:
                row.insert(-1, "–")
    return rows, eff


def main(argv=None) -> str:
    p = C.parser(__doc__)
    p.add_argument("--setup-peers", action="store_true", help="create the peer venvs and exit")
    p.add_argument("--torch-python", help="Python 3.11 interpreter for .venv-torch")
    p.add_argument("--jax-python", help="Python 3.12 interpreter for .venv-jax")
    p.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="interleaved rounds of the timing processes (default 3; smoke: 1)",
    )
    args = C.parse(p, argv)
    if args.worker:
        return C.in_worker(args, worker)
    if args.setup_peers:
        setup_peers(args.torch_python, args.jax_python)
        return ""
    mode = C.mode(args)
    peers = available()
    repeats = 1 if mode == "smoke" else 3
    rounds = 1 if mode == "smoke" else max(1, args.rounds)
    rows, eff = [], []
    # pontryx with MKL beside NumPy's BLAS, where MKL is installed (not in smoke mode)
    from pontryx.solver.model import blas

    mkl = args.blas == "numpy" and mode != "smoke" and blas.available("mkl")
    for n, S, L in CONFIGS[mode]:
        r, e = measure(
            n, S, L, args.threads, repeats, peers, one_process=mode == "smoke", rounds=rounds,
            mkl=mkl,
        )  # fmt: skip
        rows += r
        eff += e
    missing = [k for k in PEERS if k not in peers]
    note = (
        f" Skipped (venv missing; `benchmarks/peers.py --setup-peers`): {', '.join(missing)}."
        if missing
        else ""
    )
    body = (
        f"Dense kernel, IMEX Euler, ε = 0, tanh, cross-entropy, α = β = {ALPHA:g}, float64, "
        f"{args.threads} thread(s). Time: best of {repeats} gradients (J and ∇J over W, b, C, d) "
        f"after a warm-up call, in each of {rounds} fresh processes per framework, the "
        "frameworks' processes interleaved round by round; the best of the rounds is shown, "
        "and 'per round' gives the median (range) of the time ratios of each round's own "
        "processes. Every process is confined to as many cores as threads "
        "(sched_setaffinity); cores busy: its CPU time over the wall time of one more "
        "gradient. Peak: the process's peak RSS; Δ: peak minus the RSS once the "
        "problem is set up (the working memory of the gradient). Rel. err.: "
        f"‖∇J_peer − ∇J_pontryx‖/‖∇J_pontryx‖ (must be ≤ {TOL:g} before timing). "
        "Ratios are pontryx / peer (< 1: pontryx faster or smaller)."
        + (
            f" With {args.threads} threads pontryx also runs the same problem on "
            f"{args.threads} ranks × 1 thread on the data axis (mpirun; the row "
            "'pontryx · ranks (data)', its time over the threaded pontryx's; peak and Δ "
            "summed over the ranks); a peer's time ratio against it in parentheses."
            if args.threads > 1 and mode != "smoke"
            else ""
        )
        + (
            f" The environment pins OPENBLAS_CORETYPE={PINNED}: pontryx's time ratio is given "
            "with the environment's OpenBLAS kernels and with OpenBLAS's own CPU detection "
            "(variable removed; the second pontryx row, its time relative to the first)."
            if PINNED
            else ""
        )
        + (
            " pontryx (blas: mkl): the same pontryx with its GEMMs in Intel MKL "
            "(`parallel.blas: mkl`; with several threads also on the ranks), timed in the same "
            "rounds; its ratio to each peer (best; median (range) per round; on the ranks) in "
            "the column 'time ratio (blas: mkl)'."
            if mkl
            else ""
        )
        + note
        + "\n\n"
        + C.table(
            [
                "N",
                "S",
                "N_t",
                "framework",
                "BLAS kernels",
                "s / gradient",
                "cores busy",
                "peak MB",
                "Δ MB",
                "rel. err.",
                "time ratio" + (f" ({PINNED})" if PINNED else ""),
                "per round",
                *(["time ratio (detected)"] if PINNED else []),
                *(["time ratio (blas: mkl); per round"] if mkl else []),
                "Δ memory ratio",
            ],
            rows,
        )
        + "\n\n**Against each framework's own GEMM.** All three are bound by the same three "
        "GEMMs of 2N²S flops per layer (forward W(M_L U), backward WᵀD and D(M_L U)ᵀ); the "
        "gradient's rate 6N²S·N_t / time against the (N×N)@(N×S) rate of the framework's own "
        "BLAS, measured in the same process, shows how close each gets to its BLAS — and so "
        "that the pontryx/peer time ratio is, up to that efficiency, the ratio of the BLAS "
        "rates. The last column bounds what any implementation of these three GEMMs could "
        "gain over the peer: the peer's time over 6N²S·N_t flops at 100 % of pontryx's best "
        "GEMM rate.\n\n"
        + C.table(
            [
                "N",
                "S",
                "N_t",
                "framework",
                "BLAS kernels",
                "GEMM GFLOP/s",
                "gradient GFLOP/s",
                "gradient / GEMM",
                "pontryx speed-up at most",
            ],
            eff,
        )
    )
    return C.publish("Peers: PyTorch and JAX on the identical discrete model", body)


if __name__ == "__main__":
    main()
