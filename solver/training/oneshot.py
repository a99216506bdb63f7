"""One-shot solve of the discrete Euler–Lagrange system ("deepest learning").

The states of every layer and sample, the costates and the controls are one
unknown x = (θ, U, Λ), and Newton's method solves the KKT system F(x) = ∇L = 0
of :mod:`.kkt` (state equations, costate equations, stationarity — the two-point
boundary value problem of Pontryagin's principle) all at once: the full-space
Lagrange–Newton–Krylov–Schur method of Biros & Ghattas (SIAM J. Sci. Comput.
27(2), 2005). Abarbanel, Rozdeba & Shirman (Neural Computation 30(8), 2018)
call this view of training "deepest learning"; their precision annealing is
kept as an optional continuation.

Line search (``globalisation: line_search``), Newton step k (one :class:`~.base.Record`):

1. Solve K p = −F(x) with right-preconditioned GMRES (PETSc KSP, options prefix
   ``pontryx_snes_``): K the exact Jacobian (the Hessian of L, :meth:`.kkt.KKT.apply`,
   no finite differences), the preconditioner the reduced-space LNKS P₂ or P₄
   (:mod:`.lnks`) with the L-BFGS reduced Hessian B_z, to the Eisenstat–Walker
   forcing tolerance ‖K p + F‖ ≤ η_k ‖F‖ (choice 2: η_k = 0.9 (‖F_k‖/‖F_{k−1}‖)²,
   safeguarded, in [½ tol/‖F_k‖, 0.5]; option ``forcing`` fixes η) or at most
   ``krylov_max_it`` iterations (an inexact, truncated Newton step). Option
   ``control``: the control block B_z⁻¹ of the preconditioner is the L-BFGS
   inverse (``lbfgs``, default) or ≤ ``inner_max_it`` (10) iterations of truncated
   PCG to the relative tolerance ``inner_rtol`` (0.1; :mod:`.steihaug`,
   preconditioned by the L-BFGS inverse) on the Gauss–Newton (``gauss_newton``:
   loss Hessian through the tangent and adjoint sweeps, symmetric positive
   semidefinite) or the exact (``exact``: stopped at negative curvature) reduced
   Hessian, two sweeps per inner iteration; the preconditioner is then not a
   fixed linear map and the Krylov method FGMRES (right-preconditioned).
2. Negative curvature: with y = K p, the curvature of L along the primal part is
   p_xᵀ W p_x = pᵀy − 2 p_Λᵀ y_Λ. If it is not positive (the reduced Hessian is
   indefinite along the step, as far from a minimiser of a non-convex loss), or
   if p is no descent direction of the merit below, the Newton step is replaced
   by the reduced quasi-Newton step p = −P⁻¹F (B_z is positive definite:
   Biros & Ghattas' LRQN step, a descent direction near feasibility).
3. Globalisation: backtracking (Armijo, c₁ = 10⁻⁴, halving, ≤ 30 trials) on the
   doubly augmented Lagrangian φ_ρ(x) = L(x) + (ρ/2)(‖F_U(x)‖² + ‖F_Λ(x)‖²)
   (penalising the costate residual too keeps φ bounded below in Λ, in which L
   is linear); its derivative along p is F·p − ρν with ν = −(F_U, F_Λ)·(Kp)_{U,Λ}
   (exact, from y), and ρ (initially ``rho``) is raised to max(2ρ, 2 F·p/ν) when
   F·p > ρν/2, so that φ falls at least by half the penalty's decrease. With
   ``restoration`` (default true) a rejected trial point x + t p is restored
   before t is halved: its states and costates are re-solved at its θ (one
   forward and one adjoint sweep: U = U(θ), Λ = Λ(θ), so F_U = F_Λ = 0 and
   φ = J(θ)) and the restored point is accepted if it passes the same test.
   Far from a solution (large steps, strongly nonlinear layers) this makes
   the iteration a reduced-space Newton method with full-space linear algebra;
   near a solution the full-space steps are accepted with t = 1 and the
   convergence is quadratic (tested).
4. B_z ← the L-BFGS update with (s, W_z s), s the accepted θ step and W_z s the
   exact reduced Hessian action at the new point (one tangent and one
   second-order sweep; pairs with sᵀW_z s ≤ 0 are skipped).

Trust region (option ``globalisation: trust_region``, the default; items 1–4
are ``globalisation: line_search``): a reduced-space Newton trust-region method on
J(θ) with the one-shot's operators, every iterate consistent — x = (θ, U(θ),
Λ(θ)), so F = (∇J, 0, 0) and ‖F‖ is the KKT residual it reports. Step k:

5. Steihaug–Toint CG (:class:`.steihaug.TrustRegionPath`) on the model
   m(p) = gᵀp + ½ pᵀ W p, ‖p‖_M ≤ Δ, with g = F_θ, W the exact reduced Hessian
   W_z (``model: exact``, default: one forward tangent and one backward
   second-order sweep per CG iteration, :meth:`.lnks.LNKS.reduced_hessian`) or its
   Gauss–Newton part (``model: gauss_newton``), preconditioned by the L-BFGS
   inverse B_z⁻¹ (M = B_z), to the forcing η_k of item 1 or ``krylov_max_it`` CG
   iterations; negative curvature goes to the boundary of the region instead of
   stopping. The trial θ + p is evaluated by one forward sweep (J(θ + p), keeping
   the states; :meth:`.lnks.LNKS.states`); with ρ = (J(θ) − J(θ + p)) / (−m(p))
   the step is accepted if ρ > 10⁻⁴ and Δ ← ¼‖p‖_M if ρ < ¼, Δ ← 2Δ if ρ > ¾ and p is on the
   boundary (Conn, Gould & Toint 2000, Alg. 6.1.1); a rejected step is retried
   on the same CG path cut at the smaller radius (no new Hessian products), at
   most 30 times, then ``DIVERGED_TR_REDUCTION``. Initial Δ: option ``radius``
   (``auto``: ‖B_z⁻¹ g‖_M, the length of the quasi-Newton step). One adjoint
   sweep at the accepted point (:meth:`.lnks.LNKS.costates`) gives its costates;
   with its states they become x and are linearised there;
   B_z is updated with (p, ∇J(θ + p) − ∇J(θ)). Annealing stages are refused
   (the reduced functional is the strong-constraint one).

6. Continuation in the regularisation weight (option ``continuation``, trust region
   only; null by default): ``{alpha0, factor, stage_rtol}`` (defaults 10⁻², 10, 10⁻³)
   solves the problems with α_j = α₀/f^j (j = 0, 1, … while above the target α of
   the regulariser) and then the target α, each by the trust-region steps of item 5
   from the last stage's θ (the warm start runs at α₀). Stage j ends when
   ‖∇J_{α_j}‖ ≤ ``stage_rtol`` × its value at the stage's start (or at the final
   tolerance); the state and costate rows do not depend on α, so x stays
   consistent and only the stationarity rows are recomputed; the L-BFGS pairs get
   the exact change of the regulariser's Hessian, y ← y + (α_{j+1} − α_j) Δt ω s
   (pairs that lose sᵀy > 0 are dropped). ``max_it`` counts Newton steps per
   stage; ‖F(x₀)‖ and the status are those of the target problem (α), and the
   Records of stage j report J_{α_j} (``extra["alpha"]``). While a stage runs the
   regulariser of ``rf`` holds α_j; :meth:`OneShot.destroy` sets the target back.
   Path following for the minimisers θ*(α) (Allgower & Georg, *Introduction to
   numerical continuation methods*, 2003): it converges where the path exists
   and each θ*(α_j) lies in Newton's region of θ*(α_{j+1}); a stationary point of
   J_{α₀} that stays one for every α (e.g. zero layer controls with a
   symmetric readout) ends the continuation there, converged, but not a
   minimiser (README: measured on ellipses).

Warm start (option ``warm_start``, default 20): that many L-BFGS iterations
(two-loop recursion in the L²(M_L) metric, Armijo backtracking) on the reduced
functional J(θ) first, each one Record (extra ``phase`` = ``lbfgs``); its
memory seeds B_z. The Newton phase starts from θ, the forward states U(θ) and
the adjoint Λ(θ), where F = (∇J, 0, 0).

Precision annealing (option ``stages``, default 0): before the strong-constraint
KKT system, ``stages`` Newton solves of the weak-constraint system with
R_f = R0 · a^β (β = 0, 1, …): the state rows relaxed to gⁿ − U^{n+1} −
(S/R_f) M_L⁻¹ Λ^{n+1} (the stationarity of Abarbanel's action with the
penalty's multiplier as unknown), each to ‖F‖ ≤ 10⁻³ of its start, warm-started
from the last.

Status (honest): ``converged`` is set (``CONVERGED_FNORM_RELATIVE`` or
``CONVERGED_FNORM_ABS``) only when ‖F‖ ≤ max(``atol``, ``rtol`` · ‖F(x₀)‖) on the
strong-constraint system, with x₀ the initial controls with their states and
costates (‖F(x₀)‖ = ‖∇J(θ₀)‖); ``failed`` is set to ``DIVERGED_LINE_SEARCH``
(no acceptable step), ``DIVERGED_TR_REDUCTION`` (trust region: no acceptable
step) or ``DIVERGED_MAX_IT`` (``max_it`` Newton steps in a stage).
The norms are Euclidean over all unknowns.

Record (one per L-BFGS or Newton step): loss, misfit, accuracy, ‖∇J‖ and the
Pontryagin residual of the reduced functional at the new θ (the trust region:
from x, where F_θ = ∇J; the line search: one forward and one adjoint sweep), and in
``extra``: ``phase`` (lbfgs | newton), ``R_f``, ``kkt_residual`` ‖F‖,
``kkt_reduction`` ‖F‖/‖F(x₀)‖, ``kkt_state`` ‖F_Λ‖, ``kkt_costate`` ‖F_U‖,
``kkt_stationarity`` ‖F_θ‖, ``merit`` φ_ρ, ``step`` (the accepted step length),
``ksp_its`` (Krylov iterations), ``inner_its`` (inner CG iterations of the
control block), ``sweeps`` (the preconditioner's and the L-BFGS update's
tangent and adjoint sweeps through depth), ``direction`` (newton | quasi_newton | lbfgs),
``rho``, ``eta`` (forcing); with the trust region ``direction`` is
``trust_region:<model>:<end of the CG path>`` (rtol | max_it | boundary |
negative_curvature), ``ksp_its`` the CG iterations, ``radius`` Δ after the step,
``ratio`` ρ of the last trial and ``trials`` (1 + rejected trials).

Parallel: width (rows of V_h), data (samples; θ on data rank 0) and depth
(contiguous blocks of layers with their θⁿ, Uⁿ⁺¹, Λⁿ⁺¹, :mod:`.kkt`). Every sweep
of the solver is depth-distributed and pipelined over ``chunks`` blocks of
samples (default :func:`.lnks.default_chunks`: 1 on one depth rank, otherwise
about one per 128 samples, between 2 and 4 per depth rank): the
preconditioner's, the trust region's Hessian actions (tangent and second-order
sweeps), its trial points (forward sweep) and accepted points (adjoint sweep),
the restorations, the warm start's evaluations and the Records' (:mod:`.lnks`);
inner products and J are sums over all ranks. No sweep runs the whole depth on
every depth rank.

Memory: :meth:`OneShot.memory_bytes` estimates this rank's allocation.
"""

from __future__ import annotations

import math
from typing import ClassVar

from mpi4py import MPI

import numpy as np
from petsc4py import PETSc

from pontryx.meshes.errors import InputError, show, yaml_float
from pontryx.solver.petsc import configure, destroy, ineffective, unread
from pontryx.solver.training.base import Trainer
from pontryx.solver.training.kkt import KKT
from pontryx.solver.training.lnks import (
    CONTROL_BLOCKS,
    LBFGS,
    LNKS,
    PRECONDITIONERS,
    default_chunks,
)
from pontryx.solver.training.steihaug import TrustRegionPath

__all__ = ["OneShot"]

PREFIX = "pontryx_snes_"
_ARMIJO, _BACKTRACKS = 1e-4, 30
GLOBALISATIONS = ("line_search", "trust_region")
MODELS = ("exact", "gauss_newton")
# trust region: accept if actual/predicted > _ETA1, shrink below _ETA2, grow above _ETA3
_ETA1, _ETA2, _ETA3 = 1e-4, 0.25, 0.75
# the continuation in the regularisation weight (option ``continuation``)
CONTINUATION = {"alpha0": 1e-2, "factor": 10.0, "stage_rtol": 1e-3}


#: the most stages of a continuation in α (``continuation``)
MAX_STAGES = 1000


def _positive(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < math.inf


def _count(v, low: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


class _Operator:
    """The KKT Jacobian as a PETSc MATPYTHON."""

    def __init__(self, kkt):
        self.kkt = kkt

    def mult(self, mat, x, y):
        self.kkt.apply(x.array_r, y.array)


class _Preconditioner:
    """The LNKS preconditioner as a PETSc PCPYTHON."""

    def __init__(self, lnks):
        self.lnks = lnks

    def apply(self, pc, x, y):
        self.lnks.apply(x.array_r, y.array)


class OneShot(Trainer):
    """Newton on the KKT system: reduced-space trust region (default), or full-space line search.

    The Euler–Lagrange (KKT) system solved by a reduced-space Newton trust-region
    method on the KKT sweeps (``globalisation: trust_region``) or by the full-space
    Newton–Krylov iteration with a line search (``line_search``); see the module
    docstring. Running out of iterations before the KKT residual
    meets its tolerance is ``not_converged`` (exit 4).

    Options: ``warm_start`` (L-BFGS iterations first, default 20), ``memory``
    (L-BFGS pairs, 10), ``preconditioner`` (p2 | p4 | none), ``initial_hessian``
    (scaled | regulariser: H₀ of B_z⁻¹, :class:`.lnks.LBFGS`), ``rtol`` (1e-6),
    ``atol`` (0), ``max_it`` (Newton steps per stage, 50), ``krylov_max_it`` (20),
    ``forcing`` ("ew" or a fixed η in (0, 1)), ``stages`` (precision annealing
    stages, 0), ``R0`` (1e4), ``a`` (10), ``chunks`` ("auto" or an integer ≥ 1),
    ``control`` (lbfgs | gauss_newton | exact), ``inner_rtol`` (0.1), ``inner_max_it`` (10),
    ``globalisation`` (line_search | trust_region), ``radius`` (auto | Δ₀ > 0), ``model``
    (exact | gauss_newton: the trust region's reduced Hessian), ``continuation`` (null |
    {alpha0, factor, stage_rtol}: item 6 of the module docstring),
    ``petsc_options`` (options of the KSP without its prefix ``pontryx_snes_``).
    """

    name = "oneshot"
    solves_to_tolerance = True
    depth_parallel = True
    defaults: ClassVar[dict] = {
        "warm_start": 20,
        "memory": 10,
        "preconditioner": "p2",
        "initial_hessian": "scaled",
        "rtol": 1e-6,
        "atol": 0.0,
        "max_it": 50,
        "krylov_max_it": 20,
        "forcing": "ew",
        "stages": 0,
        "R0": 1e4,
        "a": 10.0,
        "chunks": "auto",
        "control": "lbfgs",
        "inner_rtol": 0.1,
        "inner_max_it": 10,
        "rho": 1.0,
        "restoration": True,
        "globalisation": "trust_region",
        "radius": "auto",
        "model": "exact",
        "continuation": None,
        "petsc_options": {},
    }

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        o = self.options
        checks = (
            ("warm_start", _count(o["warm_start"]), "an integer ≥ 0"),
            ("memory", _count(o["memory"], 1), "an integer ≥ 1"),
            ("initial_hessian", o["initial_hessian"] in ("regulariser", "scaled"),
             "regulariser or scaled"),
            ("preconditioner", o["preconditioner"] in (*PRECONDITIONERS, "none"), "p4, p2 or none"),
            ("rtol", _positive(o["rtol"]) and o["rtol"] < 1, "0 < rtol < 1"),
            ("atol", o["atol"] == 0 or _positive(o["atol"]), "atol ≥ 0"),
            ("max_it", _count(o["max_it"], 1), "an integer ≥ 1"),
            ("krylov_max_it", _count(o["krylov_max_it"], 1), "an integer ≥ 1"),
            ("forcing", o["forcing"] == "ew" or (_positive(o["forcing"]) and o["forcing"] < 1),
             "ew or a number in (0, 1)"),
            ("stages", _count(o["stages"]), "an integer ≥ 0"),
            ("R0", _positive(o["R0"]), "R_0 > 0"),
            ("a", _positive(o["a"]) and o["a"] > 1, "a growth factor a > 1"),
            ("rho", _positive(o["rho"]), "ρ > 0"),
            ("restoration", isinstance(o["restoration"], bool), "true or false"),
            ("chunks", o["chunks"] == "auto" or _count(o["chunks"], 1), "auto or an integer ≥ 1"),
            ("control", o["control"] in CONTROL_BLOCKS, "lbfgs, gauss_newton or exact"),
            ("inner_rtol", _positive(o["inner_rtol"]) and o["inner_rtol"] < 1,
             "0 < inner_rtol < 1"),
            ("inner_max_it", _count(o["inner_max_it"], 1), "an integer ≥ 1"),
            ("globalisation", o["globalisation"] in GLOBALISATIONS,
             "line_search or trust_region"),
            ("radius", o["radius"] == "auto" or _positive(o["radius"]), "auto or a radius > 0"),
            ("model", o["model"] in MODELS, "exact or gauss_newton"),
            ("petsc_options", isinstance(o["petsc_options"], dict), "a mapping"),
        )  # fmt: skip
        for key, ok, want in checks:
            if not ok:
                raise InputError(f"expected {want}, got {show(o[key])}", key)
        self.alphas = self._alphas(rf, o["continuation"], o["globalisation"])
        if o["globalisation"] == "trust_region" and o["stages"]:
            raise InputError(
                "expected 0 with globalisation: trust_region (a reduced-space method: "
                f"strong constraints only), got {show(o['stages'])}",
                "stages",
            )
        self.net = rf.net
        self.kkt = KKT(rf, controls, self._R_f(0))
        depth = self.kkt.blocks.comm.size
        auto = o["chunks"] == "auto"
        chunks = default_chunks(depth, self.kkt.S_local) if auto else o["chunks"]
        part = self.kkt.theta_slice
        omega, reg = self.kkt.omega()[part], self.kkt.regulariser_diagonal()[part]
        self.lbfgs = LBFGS(o["memory"], omega, self.kkt.dot, reg=reg)
        self.lnks = LNKS(
            self.kkt, self.lbfgs, o["preconditioner"], chunks, o["initial_hessian"],
            o["control"], o["inner_rtol"], o["inner_max_it"],
        )  # fmt: skip
        self.phase = "lbfgs" if o["warm_start"] > 0 else "newton"
        self.stage = self.newton_its = 0
        self.x = self.F = None
        self.F_ref = self.F_norm = self.F_stage = None
        self.L = self.feasibility = 0.0
        self.rho, self.eta = float(o["rho"]), 0.5
        self.radius = None if o["radius"] == "auto" else float(o["radius"])
        self.ksp = self._A = None
        self._J = self._g = self._F_prev = None

    # -- options ------------------------------------------------------------------------
    @staticmethod
    def _alphas(rf, spec, globalisation) -> list[float]:
        """The continuation's regularisation weights α₀ > α₀/f > … > α (the target, last)."""
        if spec is None:
            return []
        want = "a mapping {alpha0, factor, stage_rtol}"
        if not isinstance(spec, dict):
            raise InputError(f"expected null or {want}, got {show(spec)}", "continuation")
        unknown = sorted(set(spec) - set(CONTINUATION))
        if unknown:
            raise InputError(f"expected {want}, got the unknown key {unknown[0]}", "continuation")
        c = CONTINUATION | {k: yaml_float(v) for k, v in spec.items()}  # (1e-3: a string)
        target = rf.regulariser.alpha
        checks = (
            ("alpha0", _positive(c["alpha0"]) and c["alpha0"] > target,
             f"a weight above the target α = {target:g}"),
            ("factor", _positive(c["factor"]) and c["factor"] > 1, "a factor > 1"),
            ("stage_rtol", _positive(c["stage_rtol"]) and c["stage_rtol"] < 1,
             "0 < stage_rtol < 1"),
        )  # fmt: skip
        if globalisation != "trust_region":
            raise InputError(
                "expected null with globalisation: line_search (the continuation in α runs "
                f"the trust region only), got {show(spec)}",
                "continuation",
            )
        if not target > 0:
            raise InputError(
                f"expected a regulariser weight α > 0 to continue to, got α = {target:g}",
                "continuation",
            )
        for key, ok, want in checks:
            if not ok:
                raise InputError(f"expected {key}: {want}, got {show(c[key])}", "continuation")
        stages = (math.log(c["alpha0"]) - math.log(target)) / math.log(c["factor"])
        if stages > MAX_STAGES:
            raise InputError(
                f"{stages:.3g} stages from alpha0 = {c['alpha0']:g} to α = {target:g} by the "
                f"factor {c['factor']:g}; at most {MAX_STAGES}",
                "continuation",
            )
        alphas, a = [], float(c["alpha0"])
        while a > target * (1 + 1e-12):
            alphas.append(a)
            a /= c["factor"]
        return [*alphas, float(target)]

    def _stage_alpha(self, stage: int) -> float:
        """α of continuation stage ``stage`` (the target from the last stage on)."""
        return self.alphas[min(stage, len(self.alphas) - 1)]

    def _set_alpha(self, stage: int) -> None:
        """The regulariser's weight of continuation stage ``stage`` (the target after the
        last); the L-BFGS pairs' gradient differences get the change of the regulariser's
        Hessian, (α_new − α_old) Δt ω s, so that they stay exact for its part."""
        if not self.alphas:
            return
        reg, part = self.rf.regulariser, self.kkt.theta_slice
        alpha = self._stage_alpha(stage)
        if alpha == reg.alpha:
            return
        old = self.kkt.regulariser_diagonal()[part]
        reg.alpha = alpha
        new = self.kkt.regulariser_diagonal()[part]
        H, pairs = self.lbfgs, self.lbfgs.pairs
        H.pairs, H.reg = [], new
        for s, y, _ in pairs:  # pairs that lose the curvature condition are dropped
            H.update(s, y + (new - old) * s)

    def _R_f(self, stage: int) -> float:
        o = self.options
        return o["R0"] * o["a"] ** stage if stage < o["stages"] else math.inf

    def _tol(self) -> float:
        return max(self.options["atol"], self.options["rtol"] * self.F_ref)

    #: copies of the controls beyond the KKT vectors: θ, ∇J, the warm start's
    #: direction, base and trial points, the test evaluation
    memory_copies = 6

    def memory_bytes(self) -> int:
        """Estimate of the bytes this rank's solve allocates beyond the controls'
        copies (:attr:`memory_copies`) and the reduced sweep's states (both counted
        by ``pontryx train``): the KKT-sized vectors (iterate, residual, step, its
        image, trial point, right-hand side: 6, plus the GMRES basis of
        ``krylov_max_it`` + 4; the trust region keeps instead the directions of
        its CG path, θ-sized), the linearisation's layer records (twice with more
        than one sample chunk: the sweeps' contiguous copies, with Λ), the
        preconditioner's tangent records and two field-sized sweep outputs, the
        L-BFGS pairs, and the states, records and costates of a trial point's
        sweeps (this rank's layers and samples). Cheap (no allocation); within a
        factor of about 2 of the peak."""
        k, net = self.kkt, self.net
        n, S, ns = k.space.n, k.S_local, k.n_states
        block = n * S * 8  # one state component of one layer
        r = net.scheme.records  # arrays of one layer's record
        vector = 8 * k.size
        krylov = self.options["krylov_max_it"] + 4
        local = k.blocks.count
        if self.options["globalisation"] == "trust_region":  # the CG path: θ-sized
            out = 6 * vector + 2 * krylov * 8 * k.n_theta
        else:
            out = (6 + krylov) * vector
        out += r * local * block  # linearisation records
        if len(self.lnks.chunks) > 1:  # their chunk copies (and Λ's) for the sweeps
            out += (r + ns) * local * block
        out += (r + 2 * ns) * local * block  # sweep records and outputs
        out += 2 * self.options["memory"] * 8 * k.n_theta
        out += ((2 * ns + r) * local + ns) * block  # a trial point's sweeps
        return int(out)

    # -- the PETSc solver ------------------------------------------------------------------
    def _make_ksp(self):
        k = self.kkt
        sizes = ((k.size, PETSc.DETERMINE), (k.size, PETSc.DETERMINE))
        A = PETSc.Mat().createPython(sizes, _Operator(k), comm=k.world)
        A.setUp()
        ksp = PETSc.KSP().create(comm=k.world)
        ksp.setOperators(A)
        pc = ksp.getPC()
        if self.options["preconditioner"] == "none":
            pc.setType("none")
        else:
            pc.setType("python")
            pc.setPythonContext(_Preconditioner(self.lnks))
        restart = self.options["krylov_max_it"]
        flexible = self.options["control"] != "lbfgs" and self.options["preconditioner"] != "none"
        defaults = {
            "ksp_type": "fgmres" if flexible else "gmres",
            "ksp_pc_side": "right",
            "ksp_gmres_restart": restart,
        }
        given = self.options["petsc_options"]
        defaults.update(given)
        unused = configure(ksp, PREFIX, defaults)
        self._unused = ineffective(PREFIX, given, unused)
        self._A = A
        return ksp

    def _vec(self, array):
        k = self.kkt
        return PETSc.Vec().createWithArray(array, size=(k.size, PETSc.DETERMINE), comm=k.world)

    def probe(self) -> None:
        """Create the KSP (options prefix ``pontryx_snes_``) once, so that a bad
        option shows before training, and free it; an option of ``petsc_options``
        that the KSP did not read is an error keyed by it. The trust region has no
        KSP (its Steihaug CG is pontryx's): ``petsc_options`` are refused, and the
        ``petsc:`` section's ``pontryx_snes_`` options get the warning of a solver
        the run does not have."""
        if self.options["globalisation"] == "trust_region":
            if self.options["petsc_options"]:
                name = next(iter(self.options["petsc_options"]))
                raise InputError(
                    "not read: globalisation: trust_region solves with its own Steihaug CG "
                    "(petsc_options configure the KSP of globalisation: line_search)",
                    f"petsc_options.{name}",
                )
            return
        if self.ksp is None:
            self.ksp = self._make_ksp()
            self.destroy()
            if self._unused:
                raise unread(PREFIX, self._unused[0], "the KSP")

    def destroy(self) -> None:
        """Free the KSP; with a continuation, give the regulariser its target α back
        (the next :meth:`iterate` sets the stage's α again)."""
        destroy(self.ksp, getattr(self, "_A", None))
        self.ksp = self._A = None
        if self.alphas:
            self.rf.regulariser.alpha = self.alphas[-1]

    # -- the iterations ---------------------------------------------------------------------
    def _iterate(self, n):
        if self.alphas and self.F_ref is not None:  # the stage's α (destroy sets the target)
            self.rf.regulariser.alpha = self._stage_alpha(self.stage)
        for _ in range(n):
            if self.converged or self.failed:
                return
            if self.F_ref is None:
                if self.alphas:  # ‖F(x₀)‖ of the problem with the target α
                    self.rf.regulariser.alpha = self.alphas[-1]
                k = self.kkt
                self._J, self._g = self._reduced(k.theta_of_controls(self.controls)[k.theta_slice])
                self.F_ref = math.sqrt(k.dot(self._g, self._g))
                if self.alphas:  # the continuation starts at α₀: J and ∇J anew
                    self._set_alpha(self.stage)
                    self._g = None
            if self.phase == "lbfgs":
                rec = self._lbfgs_step()
            else:
                if self.x is None:
                    self._start_newton()
                if self._check_stage():
                    return
                if self.options["globalisation"] == "trust_region":
                    rec = self._trust_region_step()
                else:
                    rec = self._newton_step()
            yield rec

    # -- warm start: L-BFGS on J(θ) -------------------------------------------------------------
    def _lbfgs_step(self):
        k, H = self.kkt, self.lbfgs
        theta = k.theta_of_controls(self.controls)[k.theta_slice]
        if self._g is None:
            self._J, self._g = self._reduced(theta)
        g = self._g
        if not H.pairs:  # first step: unit length in the L²(M_L) norm
            H.gamma = 1.0 / max(math.sqrt(k.dot(g, g / H.omega)), 1e-300)
        d = -H.apply(g)
        slope = k.dot(g, d)
        if not slope < 0:
            d = -H.gamma * g / H.omega
            slope = k.dot(g, d)
        t, J0 = 1.0, self._J
        for _ in range(_BACKTRACKS):
            trial = self._trial(theta + t * d)
            if math.isfinite(trial.J) and trial.J <= J0 + _ARMIJO * t * slope:
                break
            t *= 0.5
        else:
            t, trial = 0.0, self._trial(theta)
        theta = theta + t * d
        k.controls_of_theta(theta, self.controls)
        J, g_new = trial.J, self.lnks.costates(trial)[1]  # the accepted trial's adjoint
        if t > 0:
            H.update(t * d, g_new - g)
        self._J, self._g = J, g_new
        self.iteration += 1
        if self.iteration >= self.options["warm_start"] or t == 0:
            self.phase = "newton"
        gnorm = math.sqrt(k.dot(g_new, g_new))
        extra = self._extra("lbfgs", gnorm, (gnorm, 0.0, 0.0), J, t, 0, "lbfgs")
        return self.record(J, self._gradient(g_new), **extra)

    def _extra(self, phase, F, blocks, merit, step, its, direction, inner=0, sweeps=0):
        return {
            "phase": phase,
            "R_f": self.kkt.R_f,
            "kkt_residual": float(F),
            "kkt_reduction": float(F / self.F_ref) if self.F_ref else float("nan"),
            "kkt_stationarity": float(blocks[0]),
            "kkt_costate": float(blocks[1]),
            "kkt_state": float(blocks[2]),
            "merit": float(merit),
            "step": float(step),
            "ksp_its": int(its),
            "inner_its": int(inner),
            "sweeps": int(sweeps),
            "direction": direction,
            "rho": float(self.rho),
            "eta": float(self.eta),
            "alpha": float(self.rf.regulariser.alpha),
        }

    # -- Newton ------------------------------------------------------------------------------------
    def _start_newton(self):
        """x = (θ, U(θ), Λ(θ)): the forward states and the adjoint of the current controls."""
        self._restore_states(self.kkt.theta_of_controls(self.controls)[self.kkt.theta_slice])
        self.F_stage = self.F_norm
        if self.ksp is None and self.options["globalisation"] == "line_search":
            self.ksp = self._make_ksp()

    def _restore_states(self, theta, trial=None):
        """x = (θ, U(θ), Λ(θ)) for the θ part ``theta``: the states of the forward sweep
        (``trial``: its :class:`.lnks.Trajectory` if already computed) and the costates
        of the adjoint sweep at θ, both depth-distributed and pipelined
        (:meth:`.lnks.LNKS.states`, :meth:`.lnks.LNKS.costates`), linearised there;
        F_U = F_Λ = 0 (for R_f = ∞) and L = J(θ). Sets the controls and ``rf.last``."""
        k = self.kkt
        trial = self._trial(theta) if trial is None else trial
        Lam, _ = self.lnks.costates(trial)
        k.controls_of_theta(theta, self.controls)
        self.x = k.pack(theta, trial.states[1:], Lam)
        self._linearise()

    def _trial(self, theta):
        """The :class:`.lnks.Trajectory` (J(θ) and the states) of the θ part ``theta``:
        one depth-distributed forward sweep; sets ``rf.last`` (misfit, statistic)."""
        t = self.lnks.states(self.kkt.theta(theta))
        self.rf.last = {"misfit": t.misfit, "stat": t.stat, "J": t.J}
        return t

    def _reduced(self, theta):
        """(J(θ), the θ part of ∇J(θ)) at the θ part ``theta`` by the depth-distributed
        forward and adjoint sweeps."""
        t = self._trial(theta)
        return t.J, self.lnks.costates(t)[1]

    def _gradient(self, g):
        """Full controls (every layer, on every rank) of a θ part ``g``: a gradient."""
        grad = self.controls.zeros_like()
        self.kkt.controls_of_theta(g, grad)
        return grad

    def _linearise(self):
        self.L, _, self.F = self.kkt.linearise(self.x)
        self.F_norm = math.sqrt(self.kkt.dot(self.F, self.F))
        self.feasibility = self._feasibility(self.F)

    def _feasibility(self, F) -> float:
        """‖F_U‖² + ‖F_Λ‖²: the costate and state rows of a residual."""
        rows = F[self.kkt._offset(0) :]
        return self.kkt.world.allreduce(float(np.vdot(rows, rows)), op=MPI.SUM)

    def _merit(self, L=None, feasibility=None) -> float:
        """φ_ρ = L + (ρ/2)(‖F_U‖² + ‖F_Λ‖²) (the doubly augmented Lagrangian)."""
        L = self.L if L is None else L
        feasibility = self.feasibility if feasibility is None else feasibility
        return L + 0.5 * self.rho * feasibility

    def _check_stage(self) -> bool:
        """Stage bookkeeping before a Newton step; True when the solve is over."""
        if self.alphas:
            return self._check_continuation()
        final = not math.isfinite(self.kkt.R_f)
        if final and self.F_norm <= self._tol():
            absolute = self.F_norm <= self.options["atol"]
            self.converged = "CONVERGED_FNORM_ABS" if absolute else "CONVERGED_FNORM_RELATIVE"
            return True
        if not final and self.F_norm <= max(self._tol(), 1e-3 * self.F_stage):
            self.stage += 1
            self.newton_its = 0
            self.kkt.R_f = self._R_f(self.stage)
            self._linearise()
            self.F_stage = self.F_norm
            return self._check_stage()
        if self.newton_its >= self.options["max_it"]:
            self.failed = "DIVERGED_MAX_IT"
            return True
        return False

    def _check_continuation(self) -> bool:
        """Stage bookkeeping of the continuation in α: a stage ends at ‖∇J_α‖ ≤
        ``stage_rtol`` × its initial residual (or the final tolerance); the next
        stage starts from its θ with the smaller α (x stays consistent: U and Λ
        do not depend on α, only the stationarity rows change)."""
        last = len(self.alphas) - 1
        if self.stage >= last and self.F_norm <= self._tol():
            absolute = self.F_norm <= self.options["atol"]
            self.converged = "CONVERGED_FNORM_ABS" if absolute else "CONVERGED_FNORM_RELATIVE"
            return True
        rtol = CONTINUATION | self.options["continuation"]
        if self.stage < last and self.F_norm <= max(self._tol(), rtol["stage_rtol"] * self.F_stage):
            self.stage += 1
            self.newton_its = 0
            self._set_alpha(self.stage)
            self._linearise()
            self.F_stage, self._F_prev = self.F_norm, None
            return self._check_continuation()
        if self.newton_its >= self.options["max_it"]:
            self.failed = "DIVERGED_MAX_IT"
            return True
        return False

    def _forcing(self) -> float:
        o = self.options
        if o["forcing"] != "ew":
            return float(o["forcing"])
        prev = getattr(self, "_F_prev", None)
        if prev is None:
            eta = 0.5
        else:
            eta = 0.9 * (self.F_norm / prev) ** 2
            if 0.9 * self.eta**2 > 0.1:
                eta = max(eta, 0.9 * self.eta**2)
        eta = min(eta, 0.5)
        return max(eta, 0.5 * self._tol() / self.F_norm, 1e-12)

    def _solve(self, eta):
        """p with K p ≈ −F (GMRES, forcing η): (p, iterations, reason)."""
        k = self.kkt
        rhs = -self.F
        p = np.zeros(k.size)
        b, xv = self._vec(rhs), self._vec(p)
        self.ksp.setTolerances(rtol=eta, atol=0.0, max_it=self.options["krylov_max_it"])
        try:
            self.ksp.solve(b, xv)
            its, reason = self.ksp.getIterationNumber(), self.ksp.getConvergedReason()
        finally:
            destroy(b, xv)
        return p, its, reason

    def _slopes(self, p):
        """(F·p, ν = −(F_U, F_Λ)·(Kp)_{U,Λ}, curvature p_xᵀ W p_x) of a direction p; the
        merit's derivative along p is F·p − ρν."""
        k = self.kkt
        y = k.apply(p)
        rows, lam = slice(k._offset(0), None), slice(k._offset(1), None)
        parts = np.array(
            [np.vdot(self.F, p), -np.vdot(self.F[rows], y[rows]), np.vdot(p, y)
             - 2 * np.vdot(p[lam], y[lam])]
        )  # fmt: skip
        k.world.Allreduce(MPI.IN_PLACE, parts, op=MPI.SUM)
        return tuple(float(v) for v in parts)

    def _newton_step(self):
        k = self.kkt
        self.lnks.sweeps = self.lnks.inner_its = 0
        self.eta = self._forcing()
        p, its, reason = self._solve(self.eta)
        direction = "newton"
        Fp, nu, curvature = self._slopes(p)
        broken = reason < 0 and reason != PETSc.KSP.ConvergedReason.DIVERGED_MAX_IT
        if broken or not curvature > 0 or not (Fp < 0 or nu > 0):
            if self.options["preconditioner"] != "none":
                p = -self.lnks.apply(self.F)
                direction = "quasi_newton"
                Fp, nu, curvature = self._slopes(p)
        if nu > 0 and Fp > 0.5 * self.rho * nu:
            self.rho = max(2.0 * self.rho, 2.0 * Fp / nu)
        slope = Fp - self.rho * nu
        phi0 = self._merit()
        x0, F0 = self.x, self.F
        theta0 = x0[k.theta_slice].copy()
        t, accepted, restored = 1.0, False, False
        if slope < 0:
            for _ in range(_BACKTRACKS):
                self.x = x0 + t * p
                self._linearise()
                phi = self._merit()
                if math.isfinite(phi) and phi <= phi0 + _ARMIJO * t * slope:
                    accepted = True
                    break
                if self.options["restoration"]:
                    self._restore_states(self.x[k.theta_slice])
                    phi = self._merit()
                    if math.isfinite(phi) and phi <= phi0 + _ARMIJO * t * slope:
                        accepted = restored = True
                        break
                t *= 0.5
        self.newton_its += 1
        if accepted:
            self._F_prev = math.sqrt(k.dot(F0, F0))
            if self.options["preconditioner"] != "none":
                s = self.x[k.theta_slice] - theta0
                self.lbfgs.update(s, self.lnks.reduced_hessian(s))
            merit = self._merit()
        else:
            self.x = x0
            self._linearise()
            t, merit = 0.0, phi0
            self.failed = "DIVERGED_LINE_SEARCH"
        k.controls_of_theta(self.x[k.theta_slice], self.controls)
        J, g = self._reduced(self.x[k.theta_slice])
        grad = self._gradient(g)
        self.iteration += 1
        blocks = k.block_norms(self.F)
        if restored:
            direction += "+restoration"
        P = self.lnks
        extra = self._extra(
            "newton", self.F_norm, blocks, merit, t, its, direction, P.inner_its, P.sweeps
        )
        return self.record(J, grad, **extra)

    def _trust_region_step(self):
        """One reduced-space Newton trust-region step (module docstring, item 5)."""
        k, P, H = self.kkt, self.lnks, self.lbfgs
        P.sweeps = P.inner_its = 0
        self.eta = self._forcing()
        g = self.F[k.theta_slice].copy()
        if self.radius is None:  # the M-norm of the quasi-Newton step −B_z⁻¹ g
            self.radius = math.sqrt(max(k.dot(g, H.apply(g, self.options["initial_hessian"])), 0))
        gn = self.options["model"] == "gauss_newton"
        path = TrustRegionPath(
            lambda v: P.reduced_hessian(v, gauss_newton=gn),
            lambda r: H.apply(r, self.options["initial_hessian"]),
            g, k.dot, self.radius, self.eta, self.options["krylov_max_it"],
        )  # fmt: skip
        theta0, J0 = self.x[k.theta_slice].copy(), self.L
        accepted, trials = False, 0
        for _ in range(_BACKTRACKS):
            p, m, norm, edge = path.point(self.radius)
            trial = self._trial(theta0 + p)
            J, actual, predicted = trial.J, J0 - trial.J, -m
            small = 10 * np.finfo(float).eps * max(abs(J0), 1e-300)
            ratio = 1.0 if abs(actual) <= small and predicted <= small else (
                actual / predicted if predicted > 0 else -1.0
            )  # fmt: skip
            if not math.isfinite(J):
                ratio = -1.0
            if ratio < _ETA2:
                self.radius = _ETA2 * norm
            elif ratio > _ETA3 and edge:
                self.radius = 2.0 * self.radius
            trials += 1
            if ratio > _ETA1:
                accepted = True
                break
        self.newton_its += 1
        F0 = self.F_norm
        if accepted:
            self._F_prev = F0
            self._restore_states(theta0 + p, trial)
            H.update(p, self.F[k.theta_slice] - g)
            t = 1.0
        else:
            self.failed = "DIVERGED_TR_REDUCTION"
            self._restore_states(theta0)
            J, t = self.L, 0.0
        grad = self._gradient(self.F[k.theta_slice])
        self.iteration += 1
        extra = self._extra(
            "newton", self.F_norm, k.block_norms(self.F), self.L, t, path.iterations,
            f"trust_region:{'gauss_newton' if gn else 'exact'}:{path.reason}", 0, P.sweeps,
        )  # fmt: skip
        extra.update(radius=float(self.radius), ratio=float(ratio), trials=trials)
        return self.record(J, grad, **extra)

    # -- checkpointing ----------------------------------------------------------------------
    def state(self):
        """Controls, iteration and the solver's state on this rank: the phase, stage,
        Newton count, ρ, η, the reference norms, the local KKT vector and the
        L-BFGS pairs (local θ parts)."""
        out = super().state()
        scalars = [
            self.stage,
            self.newton_its,
            self.rho,
            self.eta,
            np.nan if self.F_ref is None else self.F_ref,
            np.nan if self.F_stage is None else self.F_stage,
            np.nan if getattr(self, "_F_prev", None) is None else self._F_prev,
            1.0 if self.phase == "newton" else 0.0,
            np.nan if self.radius is None else self.radius,
        ]
        out["oneshot/scalars"] = np.array(scalars, dtype=float)
        if self.x is not None:
            out["oneshot/x"] = self.x.copy()
        out.update(self.lbfgs.state("oneshot/lbfgs/"))
        return out

    def state_kinds(self):
        """The KKT vector and the L-BFGS pairs are bound to this rank's blocks
        (``local``): a checkpoint restored on another layout restarts the Newton
        phase from the restored θ with its states and costates, without pairs."""
        kinds = super().state_kinds()
        for key in self.state():
            if key == "oneshot/x" or key.startswith(("oneshot/lbfgs/s", "oneshot/lbfgs/y")):
                kinds[key] = ("local",)
        return kinds

    def restore(self, state, controls_only=False):
        super().restore(state)
        self.converged = self.failed = None
        self._g = self.x = None
        if controls_only or "oneshot/scalars" not in state:
            self.phase = "lbfgs" if self.iteration < self.options["warm_start"] else "newton"
            return
        s = state["oneshot/scalars"]
        self.stage, self.newton_its = int(s[0]), int(s[1])
        self.rho, self.eta = float(s[2]), float(s[3])
        self.F_ref = None if np.isnan(s[4]) else float(s[4])
        self.F_stage = None if np.isnan(s[5]) else float(s[5])
        self._F_prev = None if np.isnan(s[6]) else float(s[6])
        self.phase = "newton" if s[7] else "lbfgs"
        self.radius = None if len(s) < 9 or np.isnan(s[8]) else float(s[8])
        self.lbfgs.restore(state, "oneshot/lbfgs/")
        if self.alphas:  # the pairs were saved at this stage's α
            self.rf.regulariser.alpha = self._stage_alpha(self.stage)
            self.lbfgs.reg = self.kkt.regulariser_diagonal()[self.kkt.theta_slice]
        self.kkt.R_f = self._R_f(self.stage)
        if "oneshot/x" in state:
            self.x = state["oneshot/x"].copy()
            self._linearise()
            if self.ksp is None and self.options["globalisation"] == "line_search":
                self.ksp = self._make_ksp()
