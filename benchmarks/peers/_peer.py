"""What the peer scripts share (NumPy only: they run in their own venvs; the
clock, best-of timing and memory readings are ``benchmarks/_common.py``'s, which
imports nothing beyond NumPy).

The problem file (.npz, written by ``peers.py``) holds the discrete model of
DESIGN.md §2 with ε = 0, IMEX Euler, tanh, dense kernel, float64:

    U⁰ = E X,  Uⁿ⁺¹ = Uⁿ + Δt tanh(Wⁿ (m ∘ Uⁿ) + bⁿ),  Ŷ = Cᵀ (m ∘ U^{N_t}) + d,
    J = (1/S) Σ_s CE(ŷ_s, y_s) + (α/2) Δt Σ_n ‖θⁿ‖²_ω + (β/2)/Δt Σ_n ‖θⁿ⁺¹ − θⁿ‖²_ω

with ω_W = m mᵀ, ω_b = m, over the controls W, b, C, d. A peer is run twice,
in fresh processes: once to check (J, ∂J/∂(W, b, C, d)) against the reference
(``--reference``), and only if that agrees, once to time the gradient and read
its peak resident memory (which the reference would otherwise inflate).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import best_time, cores_used, gflops, now, peak_rss_mb, rss_mb  # noqa: F401

NAMES = ("W", "b", "C", "d")


def arguments(description: str):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("problem", help="problem .npz")
    p.add_argument("--reference", help=".npz with the reference J and gradient")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--tol", type=float, default=1e-10)
    p.add_argument(
        "--also-time", action="store_true", help="time after the check, in the same process"
    )
    return p.parse_args()


def load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def stacked(grads) -> dict:
    """Gradients as arrays (per-layer lists stacked over depth)."""
    return {k: np.stack(v) if isinstance(v, list) else np.asarray(v) for k, v in grads.items()}


def relative_error(J, grads, ref) -> tuple[float, float]:
    """(|J − J_ref|/|J_ref|, ‖g − g_ref‖/‖g_ref‖) over all controls."""
    g = stacked(grads)
    num = sum(float(np.sum((g[k] - ref[k]) ** 2)) for k in NAMES)
    den = sum(float(np.sum(ref[k] ** 2)) for k in NAMES)
    eJ = abs(float(J) - float(ref["J"])) / max(abs(float(ref["J"])), 1e-300)
    return eJ, math.sqrt(num / den)


def gemm_rate(gemm, N: int, S: int, repeats: int = 3) -> float:
    """GFLOP/s of the framework's own (N×N)@(N×S) product ``gemm()`` (best of
    ``repeats`` after a warm-up): the yardstick of its gradient, 3 such GEMMs
    per layer."""
    return gflops(2.0 * N * N * S, best_time(gemm, repeats, warmup=1))


def run(name: str, value_and_grad, setup_rss: float, args, gemm=None, shape=None) -> None:
    """With ``--reference``: one (J, ∇J), compared with the reference (and no
    timing, unless ``--also-time``: the quick smoke mode). Otherwise: the best
    time of ``--repeats`` gradients after one warm-up call, the process's peak
    resident memory, the cores one more gradient kept busy and (``gemm``,
    ``shape`` = (N, S)) the framework's GEMM rate, measured after the peak was
    read. Prints one JSON line."""
    t = now()
    J, grads = value_and_grad()
    out = {"peer": name, "J": float(J), "first_call": now() - t}
    if args.reference:
        eJ, eg = relative_error(J, grads, load(args.reference))
        out.update(rel_err_J=eJ, rel_err_grad=eg, agrees=bool(eg <= args.tol and eJ <= args.tol))
    if not args.reference or (args.also_time and out["agrees"]):
        del grads
        best = best_time(value_and_grad, args.repeats, warmup=0)  # warmed up by the check
        out.update(time=best, setup_rss_mb=setup_rss, peak_rss_mb=peak_rss_mb())
        out.update(cores=cores_used(value_and_grad))
        if gemm is not None:
            out.update(gemm_gflops=gemm_rate(gemm, *shape))
    print(json.dumps(out), flush=True)
