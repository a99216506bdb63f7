"""Discrete kernel values: ternary {−c, 0, c} and binary {−c, c} per layer.

For ``training.options.weights: ternary | binary`` every kernel control θ ∈ {W}
(dense), {A, G} (low rank) or {κ, r, a} (local) of layer n is c·T with an
integer code T ∈ {−1, 0, 1} (ternary) or {−1, 1} (binary) per entry and one
scale c > 0 per layer and control; b, E, C, d stay real.

Two maps from a real array W (one layer) onto that set, both in the weights ω
of the L²(M_L) norm of the regulariser (``kernel.weights()``: ω_ij = m_i m_j for
the dense kernel, so ‖W‖²_ω ≈ ∫∫ w², the norm of the kernel as a function):

* :func:`project` — the L²(M_L) projection (T, c) = argmin ‖cT − W‖²_ω. For
  binary T = sign W and c = Σ ω|W| / Σ ω (exact). For ternary the minimiser has
  the support {|W| > τ} of a threshold τ; alternating T = nearest level of W/c
  (τ = c/2) and c = Σ_{T≠0} ω|W| / Σ_{T≠0} ω (Lloyd's iteration, each step
  decreasing ‖cT − W‖_ω) from the TWN guess below, until the support stops
  changing (at most :data:`LLOYD_STEPS` alternations). This ends at a fixed
  point (a local minimiser over the supports), not always the global one: on
  Gaussian kernels measured within 10⁻⁴ of it (tests/test_discrete.py); the
  exact one needs a sort of all N² values of a layer across the ranks.
* :func:`twn` — the quantiser of ternary weight networks (Li, Zhang & Liu,
  "Ternary weight networks", 2016; its Δ = 0.7·E|W| approximates the optimal
  threshold for Gaussian weights): τ = 0.7 Σ ω|W| / Σ ω, c = the ω-mean of |W|
  above it; binary as :func:`project` (BinaryConnect with XNOR-Net's scale,
  Rastegari et al. 2016). The straight-through baseline's quantiser.

The sums run over all entries of a layer, over the width ranks (collective on
``comm``); a layer is one slice of the leading (depth) axis.

Training (relax and round, with a latent real kernel W̃ kept next to θ):

* E-MSA (``emsa``) — Li & Hao, "An optimal control approach to deep learning
  and applications to discrete-weight neural networks", ICML 2018, maximise
  each layer's Hamiltonian over the discrete set through a real accumulator M
  (binary: θ = sign M; ternary: a threshold of M). pontryx's layer step, in
  the sweep's order: (1) the block solve of :mod:`.msa` maximises the augmented
  Hamiltonian Hⁿ of layer n in the *relaxed* (real) kernel from the current
  discrete θⁿ, giving θ̂ⁿ; (2) the latent kernel takes its displacement,
  W̃ⁿ ← W̃ⁿ + (Ŵⁿ − Wⁿ) (Li & Hao's M with unit decay, the step set by the
  block solve and ρ); (3) Wⁿ ← cT = :func:`project` (W̃ⁿ), the L²(M_L)
  projection with a trained scale c (where Li & Hao fix c and threshold at a
  penalty λ; no clip of the latent as in BinaryConnect: a clip at κc
  changes the Lloyd scale c of the clipped latent, so a sweep of zero
  displacement would still change codes, and at large ρ every sweep was
  rejected); (4) bⁿ
  maximises Hⁿ with that kernel fixed (a block solve in b only). The
  Gauss–Seidel sweep carries the state through the discrete layers. E-MSA's
  step control accepts a sweep iff J of the discrete network does not
  exceed its reference (below; else ρ ← 4ρ, the latent kernel unchanged);
  every accepted sweep
  halves ρ (the rounding makes the real sweep's predicted decrease, the rule
  for real weights, meaningless), but not below the floor ``rho_min``
  (default :data:`RHO_MIN` for discrete weights: without it ρ fell to 10⁻³⁰
  and the first rejected sweep then cost up to 30 rejections).
  The step control is nonmonotone with memory 50 (:data:`NONMONOTONE`, real
  weights: 1): a sweep is accepted iff J ≤ the largest J of the last 50
  iterates. (Memory 5, the default before, let ρ run up to 10¹² once a run
  stalled: swiss roll with δ = 10⁻³, J stuck at 0.172 from sweep 110 of a 20 s
  run, where memory 50 was still descending, J = 0.127 at 20 s. On the three
  data sets of benchmarks/discrete_weights.py, ternary and binary, memory 50
  ended its 20 s at the lower J in 6 of 6 runs, e.g. swiss roll ternary
  0.022 against 0.058; memory 20 in between; RESULTS.md.) The rounding moves
  the network by finite steps however large ρ is, and at a point where every
  rounded sweep increases J the monotone rule rejected every sweep (swiss
  roll with 10 inner iterations: J stuck at 0.066, ρ grown to 10⁸), and the
  nonmonotone rule alone still stalled (memory 5, swiss roll, 5 inner
  iterations: from sweep ≈ 70 every sweep rejected, ρ → 10¹⁵, J stuck at
  0.092). Hence the flip search (``flip_search``, default on for discrete
  weights; :meth:`.msa.EMSA._flip_search`), a discrete line search: a rejected
  sweep's code changes, ranked by their first-order gain −∂J/∂W_ij·ΔW_ij, are
  tried in fractions f = ½, ¼, … (the best ⌈f|F|⌉ flips in full, the rest of
  the displacement and the real controls scaled by f) down to one flip; the
  trial of least J is accepted by the same rule at the same ρ, else ρ ← 4ρ.
  The limit f → 0 is one flip of the largest linearised Hamiltonian gain, so a
  rejected sweep still leads to an accepted smaller step wherever a single
  flip decreases J. More inner iterations on the layer blocks (20) are not
  the default: one run reached J = 0.03 on swiss roll in 20 s, a later one
  (ρ₀ = 0.01) 98.4 % at J = 0.095, and digits fell to 89.7 % (91.0 % with 5).
* Ranks. Every code is a threshold decision, and the TAO block solves amplify
  round-off (swiss roll, 500 samples, 5 inner iterations: the latent kernels
  of 1 and 2 width ranks differ by ≤ 2·10⁻¹² after sweep 1, 3·10⁻¹⁰ after
  sweep 2, 10⁻⁷ after sweep 3; with 20 inner iterations by 10⁻⁶–10⁻⁴ from
  layer 2 of sweep 1 on), so 1 and 2 ranks agree to round-off only until the
  first code flip that round-off decides, for every ``inner_iterations``
  (there, 5 iterations: J agrees to 4·10⁻¹² at sweep 3 and differs by 5·10⁻⁸
  at sweep 4, 3·10⁻³ at sweep 6). The straight-through baseline (no inner
  solves) kept J equal to 2·10⁻¹⁵ (relative) over 400 steps there.
  tests/test_discrete.py checks the agreement over 3 sweeps of a small problem.
* MSA (``msa``) — the Jacobi sweep of real block solves (ρ = 0), then the line
  search on J along θ_old + λ(θ̂ − θ_old) rounds every trial point: its kernel
  is :func:`project` (W̃ + λ(Ŵ − W_old)); the accepted trial's latent is kept.
* the straight-through baseline (``sgd``, ``adam``; Courbariaux et al.,
  "BinaryConnect", NeurIPS 2015; Li, Zhang & Liu, TWN, 2016): J and ∇J at the
  quantised θ (:func:`twn` of W̃), the optimiser's step applied to W̃ as if
  ∂Q/∂W̃ = I.

b, C, d (and E) stay real and are trained as in the real method; bounds may be
put on them, not on the kernel.
"""

from __future__ import annotations

from mpi4py import MPI

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.model.controls import Controls

__all__ = [
    "LLOYD_STEPS",
    "NONMONOTONE",
    "RHO_MIN",
    "WEIGHTS",
    "DiscreteSet",
    "check_weights",
    "codes",
    "project",
    "twn",
]

WEIGHTS = ("real", "ternary", "binary")
LLOYD_STEPS = 50
TWN_THRESHOLD = 0.7
#: E-MSA's defaults for discrete weights: the floor of ρ (``rho_min``; 0 for
#: real weights) and the memory of the nonmonotone step control
#: (``nonmonotone``; 1 for real weights)
RHO_MIN = 1e-3
NONMONOTONE = 50


def check_weights(value) -> str:
    """The option ``weights``: real, ternary or binary; anything else is keyed ``weights``."""
    if value not in WEIGHTS:
        raise InputError(f"expected real, ternary or binary, got {show(value)}", "weights")
    return value


def _layer_sums(comm, W: np.ndarray, *fields) -> np.ndarray:
    """Σ over each layer's entries (all axes but the first) of every array in
    ``fields`` (shaped like W), summed over the ranks: (len(fields), layers)."""
    local = np.array([f.reshape(len(W), -1).sum(axis=1) for f in fields])
    return comm.allreduce(local, op=MPI.SUM)


def _weights(W, omega):
    return np.broadcast_to(omega, W.shape[1:])[None]


def _codes(W, tau):
    """T = sign(W) where |W| > τ (τ per layer), else 0, as int8."""
    t = tau.reshape(-1, *([1] * (W.ndim - 1)))
    return (np.sign(W) * (np.abs(W) > t)).astype(np.int8)


def _scale(comm, W, T, w):
    """c = Σ ω|W|·|T| / Σ ω|T| per layer (the best scale for the codes T)."""
    a = np.abs(T)
    num, den = _layer_sums(comm, W, w * np.abs(W) * a, w * a)
    return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def _binary(comm, W, omega):
    w = _weights(W, omega)
    T = np.where(W >= 0, 1, -1).astype(np.int8)
    return T, _scale(comm, W, T, w)


def twn(comm, W: np.ndarray, omega, kind: str):
    """(T, c) of TWN's quantiser (ternary) or sign with the ω-mean of |W| (binary)
    for the layers W[0], W[1], …; see the module docstring. Collective."""
    if kind == "binary":
        return _binary(comm, W, omega)
    w = _weights(W, omega)
    num, den = _layer_sums(comm, W, w * np.abs(W), w * np.ones_like(W))
    T = _codes(W, TWN_THRESHOLD * num / den)
    return T, _scale(comm, W, T, w)


def project(comm, W: np.ndarray, omega, kind: str):
    """(T, c) = argmin ‖cT − W‖_ω per layer (ternary: Lloyd's iteration from the TWN
    guess, see the module docstring). Collective."""
    T, c = twn(comm, W, omega, kind)
    if kind == "binary":
        return T, c
    w = _weights(W, omega)
    for _ in range(LLOYD_STEPS):
        new = _codes(W, 0.5 * c)
        changed = comm.allreduce(int(np.count_nonzero(new != T)), op=MPI.SUM)
        T = new
        c = _scale(comm, W, T, w)
        if not changed:
            break
    return T, c


def codes(comm, values: np.ndarray):
    """(T as int8, c per layer) of values c_n·T (all layers, the leading axis):
    c_n = max |values of layer n| over the ranks (1 for a layer of zeros) and
    T = values / c_n rounded. Collective."""
    local = np.abs(values.reshape(len(values), -1)).max(axis=1, initial=0.0)
    c = np.empty_like(local)
    comm.Allreduce(local, c, op=MPI.MAX)
    c = np.where(c > 0, c, 1.0)
    T = np.rint(values / c.reshape(-1, *([1] * (values.ndim - 1))))
    return T.astype(np.int8), c


class DiscreteSet:
    """The admissible discrete kernel values of a network: ``kind`` ternary or
    binary on every kernel control (see the module docstring). Maps latent real
    controls to discrete ones and reads the codes and scales back."""

    def __init__(self, net, kind: str):
        self.kind = check_weights(kind)
        if self.kind == "real":
            raise ValueError("DiscreteSet needs ternary or binary")
        self.net, self.comm = net, net.space.comm
        self.names = tuple(net.kernel.shapes())
        self.omega = net.kernel.weights()

    def quantise(self, latent: Controls, out: Controls, rule: str = "l2", layers=None) -> dict:
        """out[name][n] = c T of latent[name][n] for every kernel control and layer n
        (``layers``: those only, default all) by :func:`project` (``rule: l2``) or
        :func:`twn` (``rule: twn``); returns name → the scales c (one per layer).
        Collective."""
        fn = project if rule == "l2" else twn
        idx = slice(None) if layers is None else np.atleast_1d(layers)
        scales = {}
        for name in self.names:
            T, c = fn(self.comm, latent[name][idx], self.omega[name], self.kind)
            out[name][idx] = c.reshape(-1, *([1] * (T.ndim - 1))) * T
            scales[name] = c
        return scales

    def project_layer(self, name: str, W: np.ndarray) -> np.ndarray:
        """c·T of one layer's values W of control ``name`` by :func:`project`. Collective."""
        T, c = project(self.comm, W[None], self.omega[name], self.kind)
        return c[0] * T[0]

    def codes(self, name: str, values: np.ndarray):
        """(T as int8, c per layer) of discrete values c·T of control ``name``
        (all layers; see :func:`codes`). Collective."""
        return codes(self.comm, values)

    def sparsity(self, controls: Controls) -> float:
        """The fraction of zero kernel values over all layers and kernel controls. Collective."""
        zeros = sum(int(np.count_nonzero(controls[k] == 0)) for k in self.names)
        total = sum(controls[k].size for k in self.names)
        zeros, total = self.comm.allreduce(np.array([zeros, total]), op=MPI.SUM)
        return float(zeros / total) if total else 0.0

    def violation(self, controls: Controls) -> float:
        """max over layers and kernel controls of max |values − c·T| (0 for discrete
        values; c, T from :meth:`codes`), and ∞ for a binary code 0. Collective."""
        worst = 0.0
        for name in self.names:
            T, c = self.codes(name, controls[name])
            cT = c.reshape(-1, *([1] * (T.ndim - 1))) * T
            local = float(np.max(np.abs(controls[name] - cT), initial=0.0))
            if self.kind == "binary" and np.any(T == 0):
                local = np.inf
            worst = max(worst, self.comm.allreduce(local, op=MPI.MAX))
        return worst


def discrete_set(net, options: dict, bounds) -> DiscreteSet | None:
    """The :class:`DiscreteSet` of the option ``weights`` (None for real weights);
    bounds on a kernel control are refused (its values are c·T), keyed
    ``bounds.<name>``."""
    kind = check_weights(options.get("weights", "real"))
    if kind == "real":
        return None
    dset = DiscreteSet(net, kind)
    for name in dset.names:
        if bounds is not None and name in bounds.limits:
            raise InputError(
                f"the kernel takes discrete values c·T (weights: {kind}); bound the real "
                "controls (b, C, d) only",
                f"bounds.{name}",
            )
    return dset
