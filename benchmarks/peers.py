"""pontryx against PyTorch autograd and JAX on the identical discrete model.

For each size, pontryx builds the problem (unit_square P1 mesh → M_L = space.m,
dense W, b, E, C, d, random inputs and labels, α = β = 1e-4, float64) and exports
it with its own J and gradient to an .npz. Each peer (``peers/torch_peer.py``,
``peers/jax_peer.py``, in their own venvs) first checks its J and gradient
against pontryx's (relative error ≤ 1e-10, else it is not timed), then, in a
fresh process, times the gradient (best of several after a warm-up call) and
reports its peak resident memory; pontryx is timed the same way. All use the
same number of threads.

    .venv/bin/python benchmarks/peers.py [--smoke | --full] [--threads T]
    .venv/bin/python benchmarks/peers.py --setup-peers    # create the peer venvs

Peers whose venv (benchmarks/.venv-torch, benchmarks/.venv-jax) is missing are
skipped. ``--setup-peers`` creates them: PyTorch CPU wheels exist here for
Python 3.11 only (``--torch-python``), JAX in a 3.12 venv (``--jax-python``).
"""

from __future__ import annotations

import shutil
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
    import numpy as np

    with C.limit_threads(threads):
        space, net, theta, rf, X = C.problem(
            cfg["n"], cfg["S"], cfg["L"], alpha=ALPHA, beta=BETA, seed=cfg.get("seed", 0)
        )
        setup = C.rss_mb()
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
        t = C.now()
        rf.value_and_gradient(theta)
        first = C.now() - t
        best = C.best_time(lambda: rf.value_and_gradient(theta), repeats=cfg["repeats"], warmup=0)
        C.emit(
            {
                "N": space.N,
                "time": best,
                "first_call": first,
                "setup_rss_mb": setup,
                "peak_rss_mb": C.peak_rss_mb(),
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
    proc = subprocess.run(cmd, env=C.thread_env(threads), capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(lines[-1])


# -- driver ---------------------------------------------------------------------------
def measure(n, S, L, threads, repeats, peers, one_process=False) -> list[list]:
    """Rows of the table for one size. ``one_process`` (smoke mode) checks and
    times in the same process, which saves start-ups but inflates the peaks."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="pontryx-peers-") as tmp:
        tmp = Path(tmp)
        base = {"n": n, "S": S, "L": L, "repeats": repeats}
        export = {**base, "role": "export", "dir": str(tmp), "also_time": one_process}
        px = info = C.run_worker(__file__, export, threads=threads)
        N = info["N"]
        if not one_process:
            px = C.run_worker(__file__, {**base, "role": "time"}, threads=threads)
        px_delta = px["peak_rss_mb"] - px["setup_rss_mb"]
        rows.append([N, S, L, "pontryx", px["time"], px["peak_rss_mb"], px_delta, "–", "1", "1"])
        for name in peers:
            chk = run_peer(
                name, tmp / "problem.npz", threads, repeats, tmp / "reference.npz", one_process
            )
            if "error" in chk:
                rows.append([N, S, L, name, "failed", "–", "–", chk["error"][:60], "–", "–"])
                continue
            err = f"{chk['rel_err_grad']:.1e}"
            if not chk["agrees"]:
                rows.append([N, S, L, chk["peer"], "not timed", "–", "–", err + " ✗", "–", "–"])
                continue
            res = chk if one_process else run_peer(name, tmp / "problem.npz", threads, repeats)
            if "error" in res:
                rows.append([N, S, L, chk["peer"], "failed", "–", "–", err, "–", "–"])
                continue
            delta = res["peak_rss_mb"] - res["setup_rss_mb"]
            rows.append(
                [
                    N,
                    S,
                    L,
                    res["peer"],
                    res["time"],
                    res["peak_rss_mb"],
                    delta,
                    err,
                    f"{px['time'] / res['time']:.2f}",
                    f"{px_delta / delta:.2f}" if delta > 0 else "–",
                ]
            )
    return rows


def main(argv=None) -> str:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--setup-peers", action="store_true", help="create the peer venvs and exit")
    p.add_argument("--torch-python", help="Python 3.11 interpreter for .venv-torch")
    p.add_argument("--jax-python", help="Python 3.12 interpreter for .venv-jax")
    args = C.parse(p, argv)
    if args.worker:
        import json

        return worker(json.loads(args.worker), args.threads)
    if args.setup_peers:
        setup_peers(args.torch_python, args.jax_python)
        return ""
    mode = C.mode(args)
    peers = available()
    repeats = 1 if mode == "smoke" else 3
    rows = []
    for n, S, L in CONFIGS[mode]:
        rows += measure(n, S, L, args.threads, repeats, peers, one_process=mode == "smoke")
    missing = [k for k in PEERS if k not in peers]
    note = (
        f" Skipped (venv missing; `benchmarks/peers.py --setup-peers`): {', '.join(missing)}."
        if missing
        else ""
    )
    body = (
        f"Dense kernel, IMEX Euler, ε = 0, tanh, cross-entropy, α = β = {ALPHA:g}, float64, "
        f"{args.threads} thread(s). Time: best of {repeats} gradients (J and ∇J over W, b, C, d) "
        "after a warm-up call. Peak: the process's peak RSS; Δ: peak minus the RSS once the "
        "problem is set up (the working memory of the gradient). Rel. err.: "
        f"‖∇J_peer − ∇J_pontryx‖/‖∇J_pontryx‖ (must be ≤ {TOL:g} before timing). "
        "Ratios are pontryx / peer (< 1: pontryx faster or smaller)."
        + note
        + "\n\n"
        + C.table(
            [
                "N",
                "S",
                "N_t",
                "framework",
                "s / gradient",
                "peak MB",
                "Δ MB",
                "rel. err.",
                "time ratio",
                "Δ memory ratio",
            ],
            rows,
        )
    )
    text = C.section("Peers: PyTorch and JAX on the identical discrete model", body)
    C.report(text)
    return text


if __name__ == "__main__":
    main()
