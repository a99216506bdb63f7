"""Shared helpers of the benchmark scripts: command line, timing, the machine's
GEMM rate, fresh-process workers, peak memory, fits and Markdown tables.

Every benchmark measures the quantities it compares side by side in one run
(e.g. a kernel's GFLOP/s and the dense GEMM rate of the same shapes), so the
ratios it prints mean something on a loaded or throttled machine too.
Nothing here imports DOLFINx: :func:`problem` does so lazily.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

# as pontryx.solver does when it is imported before NumPy (see its __init__): OpenBLAS's
# idle threads sleep at once instead of spinning beside the element-wise work
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
OUT = HERE / "out"
#: the environment running the benchmarks (``.venv``, or wherever PONTRYX_VENV put
#: it): its mpirun and pontryx, whatever the checkout holds
VENV = Path(sys.prefix)
MPIRUN = VENV / "bin" / "mpirun"
PYTHON = sys.executable

MODES = ("smoke", "quick", "full")

#: Timer of every measurement: "wall" (time.perf_counter, the default) or "cpu"
#: (time.process_time: user + system time of the process, all its threads).
#: The CPU clock keeps single-threaded costs meaningful on a machine shared
#: with other jobs; it counts busy-waiting threads and MPI polling too.
CLOCK_ENV = "PONTRYX_BENCH_CLOCK"
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
#: The library of the kernels' GEMMs in the workers (``--blas``, :mod:`pontryx.solver.model.blas`).
BLAS_ENV = "PONTRYX_BENCH_BLAS"


def now() -> float:
    """The current reading of the benchmark clock (see :data:`CLOCK_ENV`)."""
    return CLOCKS[os.environ.get(CLOCK_ENV, "wall")]()


# -- command line ----------------------------------------------------------------
def parser(doc: str, threads: int | None = None) -> argparse.ArgumentParser:
    """--smoke (seconds: proves the script runs), default quick, --full; --threads
    (default ``threads``, else all cores); --clock; --worker JSON (internal: run one
    configuration in this fresh process). The description is the first line of
    ``doc`` (the script's docstring)."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--smoke", action="store_true", help="tiniest sizes (seconds)")
    g.add_argument("--full", action="store_true", help="all sizes (long)")
    p.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="BLAS threads (default: all cores)"
    )
    p.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default=os.environ.get(CLOCK_ENV, "wall"),
        help="wall time (default) or the process's CPU time (for shared machines, with "
        "--threads 1)",
    )
    p.add_argument(
        "--blas",
        choices=("numpy", "mkl"),
        default=os.environ.get(BLAS_ENV, "numpy"),
        help="the library of pontryx's GEMMs and of the GEMM yardstick: numpy (default) or "
        "mkl (pip install 'pontryx[mkl]'; parallel.blas in the YAML)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    if threads is not None:
        p.set_defaults(threads=threads)
    return p


def arguments(doc: str, argv=None, threads: int | None = None):
    """The parsed command line of a script with only the common flags (:func:`parser`)."""
    return parse(parser(doc, threads), argv)


def in_worker(args, worker):
    """Run ``worker(config, threads)`` for ``--worker JSON`` and return its result,
    the kernels' GEMMs on the library of ``--blas``."""
    from pontryx.solver.model import blas

    blas.use(args.blas)
    return worker(json.loads(args.worker), args.threads)


def parse(p: argparse.ArgumentParser, argv=None):
    """Parse the command line; the clock and BLAS choices are passed on to worker
    processes."""
    args = p.parse_args(argv)
    os.environ[CLOCK_ENV] = args.clock
    os.environ[BLAS_ENV] = args.blas
    return args


def mode(args) -> str:
    return "smoke" if args.smoke else "full" if args.full else "quick"


def limit_threads(n: int):
    """Limit the BLAS/OpenMP thread pools of this process to ``n`` threads."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(n))


def thread_env(n: int) -> dict:
    """Environment for a child process with ``n`` BLAS/OpenMP threads (and no
    inherited MPI launcher variables, so a child mpirun starts cleanly)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PMI_", "PMIX_", "HYDRA_", "MPIR_", "OMPI_"))
    }
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[key] = str(n)
    return env


def pinned(threads: int):
    """A ``preexec_fn`` confining a child process (all its threads) to the first
    ``threads`` of this process's cores, or None when that is all of them: a
    thread setting a framework ignores (XLA's CPU client ran its GEMMs on 2 cores
    with one intra-op thread asked for) cannot take more cores than its peers."""
    cores = sorted(os.sched_getaffinity(0))
    if threads >= len(cores):
        return None
    chosen = set(cores[: max(int(threads), 1)])
    return lambda: os.sched_setaffinity(0, chosen)


def cores_used(fn) -> float:
    """The process's CPU time over the wall time of one call ``fn()``: how many
    cores it kept busy (threads spinning count too)."""
    c, t = time.process_time(), time.perf_counter()
    fn()
    return (time.process_time() - c) / max(time.perf_counter() - t, 1e-12)


# -- timing ------------------------------------------------------------------------
def best_time(fn, repeats: int = 3, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(repeats):
        t = now()
        fn()
        best = min(best, now() - t)
    return best


def best_times(fns: dict, repeats: int = 3, warmup: int = 1) -> dict:
    """Best wall time of each callable, the callables interleaved round by round
    so that a load change on the machine hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(fns, math.inf)
    for _ in range(repeats):
        for key, fn in fns.items():
            t = now()
            fn()
            best[key] = min(best[key], now() - t)
    return best


def gemm_operands(N: int, S: int, seed: int = 0):
    """Operands and output of the dense kernel's GEMM (N×N)@(N×S), float64."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, N)), rng.standard_normal((N, S)), np.empty((N, S))


def gemm_call(N: int, S: int):
    """A callable doing one (N×N)@(N×S) GEMM into a preallocated output, by the
    library of the kernels' GEMMs (:mod:`pontryx.solver.model.blas`)."""
    from pontryx.solver.model import blas

    A, B, C = gemm_operands(N, S)
    return lambda: blas.matmul(A, B, out=C)


def gflops(flops: float, seconds: float) -> float:
    return flops / seconds / 1e9


# -- memory ------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """High-water mark of this process's resident set (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    """Current resident set of this process (MB)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


# -- fresh-process workers -------------------------------------------------------
def run_worker(
    script: str | Path,
    config: dict,
    *,
    threads: int,
    ranks: int | None = None,
    python: str | Path = PYTHON,
    extra_env: dict | None = None,
    timeout: float = 3600,
    pin: bool = False,
) -> dict:
    """Run ``script --worker JSON`` in a fresh process (under ``mpirun -n ranks``
    if given, with ``extra_env`` added to its environment; a value None removes
    the variable) and return the JSON object it prints on its last stdout line.
    ``timeout`` is in wall seconds; with ``--clock cpu`` (a shared machine, where
    the budgets are CPU seconds) it is stretched 5×. Failures and timeouts raise
    :class:`RuntimeError` whose last line says what happened. ``pin`` (one
    process only): confined to ``threads`` cores (:func:`pinned`)."""
    cmd = [str(python), str(script), "--worker", json.dumps(config), "--threads", str(threads)]
    if ranks is not None:
        cmd = [str(MPIRUN), "-n", str(ranks), *cmd]
    if pin and ranks is not None:
        raise ValueError("pin: one process only (mpirun places its ranks itself)")
    env = thread_env(threads)
    for key, value in (extra_env or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    if os.environ.get(CLOCK_ENV) == "cpu":
        timeout *= 5
    try:
        proc = subprocess.run(
            cmd, env=env, capture_output=True, text=True, timeout=timeout,
            preexec_fn=pinned(threads) if pin else None,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise RuntimeError(
            f"worker {Path(script).name}: timed out after {timeout:.0f} s wall"
        ) from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"worker {Path(script).name} {config} failed ({proc.returncode}):\n"
            + proc.stderr[-3000:]
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"worker {Path(script).name} printed no result:\n{proc.stdout[-2000:]}")
    return json.loads(lines[-1])


def emit(result: dict) -> None:
    """A worker's result: one JSON line on stdout (rank 0 only)."""
    from mpi4py import MPI

    if MPI.COMM_WORLD.rank == 0:
        print(json.dumps(result), flush=True)


# -- the discrete model ------------------------------------------------------------
def mesh_n_for(N: int, degree: int = 1) -> int:
    """n with N ≈ (degree·n + 1)² dofs of P_degree on the unit square."""
    return max(1, round((math.sqrt(N) - 1) / degree))


def problem(
    n: int,
    S: int,
    layers: int,
    *,
    kernel: str = "dense",
    kernel_options: dict | None = None,
    scheme: str = "imex_euler",
    epsilon: float = 0.0,
    n_in: int = 4,
    n_out: int = 3,
    alpha: float = 0.0,
    beta: float = 0.0,
    checkpoint=None,
    layout=None,
    comm=None,
    seed: int = 0,
    exchange: str = "shared",
):
    """A classification problem on unit_square n×n (P1, N = (n+1)² dofs) with S
    random samples: returns (space, net, θ, rf, X (n_in × S_local)). ``exchange``:
    the width ranks' (``parallel.exchange``)."""
    from mpi4py import MPI

    from pontryx.meshes import create_mesh
    from pontryx.solver import ContinuumNetwork, ReducedFunctional, WidthSpace, shard

    if layout is not None:
        comm = layout.width
    comm = comm or MPI.COMM_WORLD
    space = WidthSpace(
        create_mesh({"kind": "unit_square", "n": n}, comm), degree=1, exchange=exchange
    )
    net = ContinuumNetwork(
        space,
        n_in,
        n_out,
        kernel=kernel,
        kernel_options=dict(kernel_options or {}),
        scheme=scheme,
        layers=layers,
        epsilon=epsilon,
    )
    theta = net.init_controls(seed=seed)
    rng = np.random.default_rng(seed + 1)
    X = rng.uniform(-1.0, 1.0, size=(S, n_in))
    y = rng.integers(0, n_out, size=S)
    if layout is not None:
        part = shard(S, layout.data.rank, layout.data.size)
        X, y = X[part], y[part]
    rf = ReducedFunctional(
        net, X, y, "classification", alpha=alpha, beta=beta, layout=layout, checkpoint=checkpoint
    )
    return space, net, theta, rf, rf.X


def data_problem(data: str, size, model: dict, seed: int = 0):
    """A shipped data set (``size`` training and test samples, None: its default)
    on unit_square n = model["mesh"] with model["layers"] layers, α = model["alpha"]
    (image embedding for images, else bump), δ = model.get("delta", 0) on the
    readout, θ₀ the initial controls of ``seed``: (dataset, net, θ₀, rf, rf_test)."""
    from mpi4py import MPI

    from pontryx.meshes import create_mesh
    from pontryx.solver import ContinuumNetwork, ReducedFunctional, WidthSpace, load_dataset

    desc = {"name": data}
    if size is not None:
        desc.update(n_train=size, n_test=size)
    ds = load_dataset(desc)
    space = WidthSpace(create_mesh({"kind": "unit_square", "n": model["mesh"]}, MPI.COMM_WORLD))
    net = ContinuumNetwork(
        space,
        ds.X_train.shape[1],
        ds.n_classes,
        layers=model["layers"],
        embedding="image" if len(ds.input_shape) == 2 else "bump",
        input_shape=ds.input_shape,
    )
    rf = ReducedFunctional(
        net, ds.X_train, ds.y_train, alpha=model["alpha"], delta=model.get("delta", 0.0)
    )
    return ds, net, net.init_controls(seed=seed), rf, ReducedFunctional(net, ds.X_test, ds.y_test)


# -- fits and tables ---------------------------------------------------------------
def fit_exponent(x, y) -> float:
    """p in y ≈ c·x^p (least squares in log–log)."""
    x, y = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    return float(np.polyfit(x, y, 1)[0])


def fmt(v, digits: int = 3) -> str:
    if isinstance(v, str):
        return v
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    a = abs(v)
    if a != 0 and (a < 1e-3 or a >= 1e5):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}"


def table(headers, rows) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def section(title: str, body: str, level: int = 2, timed: bool = True) -> str:
    """A Markdown section; notes the clock when its times are CPU times."""
    if timed and os.environ.get(CLOCK_ENV) == "cpu":
        body += "\n\n_Times are CPU times (user + system) of the measuring process (--clock cpu)._"
    return f"{'#' * level} {title}\n\n{body.strip()}\n"


def progress(text: str) -> None:
    """One line of progress on stderr (rank 0), for long runs."""
    from mpi4py import MPI

    if MPI.COMM_WORLD.rank == 0:
        print(text, file=sys.stderr, flush=True)


def publish(title: str, body: str, timed: bool = True) -> str:
    """A script's result: the Markdown :func:`section`, printed on rank 0 and returned."""
    text = section(title, body, timed=timed)
    report(text)
    return text


def report(text: str) -> None:
    """Print on rank 0 (the script's Markdown output)."""
    try:
        from mpi4py import MPI

        if MPI.COMM_WORLD.rank != 0:
            return
    except ImportError:
        pass
    print(text, flush=True)


def machine() -> dict:
    """CPU model, cores, memory and load, for the results header."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 2**20:.1f} GiB"
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "load": load}
