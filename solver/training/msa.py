"""Method of successive approximations (MSA) and its extended form (E-MSA).

Li, Chen, Tai & E (2018), "Maximum principle based algorithms for deep
learning", JMLR 18(165), on the discrete model of DESIGN.md §2. Write one layer
as U^{n+1} = gⁿ(Uⁿ, θⁿ) (the depth scheme's step; a tuple of multivectors for
Verlet) and J(θ) = Φ(U^{N_t}) + Σ_n Rⁿ(θⁿ) (misfit through the readout, and the
regulariser).

Signs. Λⁿ = ∂J/∂Uⁿ is the discrete adjoint of :mod:`pontryx.solver.adjoint`:

    Λ^{N_t} = ∇Φ(U^{N_t}) = M_L C ∂ℓ/∂Ŷ,   Λⁿ = (∂_U gⁿ)ᵀ Λ^{n+1},
    ∂J/∂θⁿ = (∂_θ gⁿ)ᵀ Λ^{n+1} + ∇Rⁿ(θⁿ).

Li et al.'s costate is Pⁿ = −Λⁿ (DESIGN's p ≈ −M_L⁻¹Λ, i.e. P = M_L p), with
the layerwise Hamiltonian

    Hⁿ(U, P, θ) = ⟨P, gⁿ(U, θ)⟩ − Rⁿ(θ)   = ⟨P, U⟩ + Δt·H(t_n, u, p, θ) for IMEX Euler, ε = 0,

so ∂_θ Hⁿ = −∂J/∂θⁿ and the discrete maximum principle reads
θⁿ ∈ argmax_θ Hⁿ(Uⁿ, P^{n+1}, θ) = argmin_θ ⟨Λ^{n+1}, gⁿ(Uⁿ, θ)⟩ + Rⁿ(θ).

One MSA sweep (Li et al., Algorithm 1, discrete form): forward sweep storing
U⁰ … U^{N_t}; backward sweep storing Λ⁰ … Λ^{N_t}; then every layer's controls
maximise its (augmented) Hamiltonian, i.e. a few iterations of PETSc TAO
(:class:`BlockSolver`, options prefix ``pontryx_msa_``) minimise

    Eⁿ(θ) = −Hⁿ(Uⁿ, −Λ^{n+1}, θ)
            + (ρ/2S) Σ_s ‖U_s^{n+1} − gⁿ(Uⁿ, θ)_s‖²_{M_L}                     (feasibility)
            + (ρS/2) Σ_s ‖Λ_s^n − ∂_U⟨Λ^{n+1}, gⁿ(U, θ)⟩|_{U=Uⁿ, s}‖²_{M_L⁻¹}   (costate)

from θⁿ_old (the block problems: :mod:`.msa_blocks`). E-MSA (Algorithm 2) has
ρ > 0; plain MSA is ρ = 0 and may diverge (large Hamiltonian steps that the
states cannot follow) — E-MSA's ρ terms keep the sweep a descent method for ρ
large enough. The norms are Li et al.'s sample averages with per-sample
costates S·p_s, p_s = −M_L⁻¹Λ_s, in the L²(M_L) norm. All ρ terms vanish at
θⁿ_old, so E-MSA is a proximal point step.

Gradients: the first two terms by the scheme's adjoint (vjp) with cotangent
Λ^{n+1} − (ρ/S) M_L (U^{n+1} − gⁿ); the costate term is (ρS/2)‖c(θ) − Λⁿ‖²
with c(θ) = (∂_U gⁿ)ᵀ Λ^{n+1}, whose gradient ∂_θ⟨r, c(θ)⟩ (r = ρS M_L⁻¹(c − Λⁿ)
fixed) is the derivative of ∇_θ⟨Λ^{n+1}, gⁿ(U, θ)⟩ along the U-direction r:
exact for IMEX Euler (with Q = S_Δtᵀ Λ^{n+1}, D = Δt σ'(Z)∘Q, Z = KU + b)

    ∂_θ⟨r, c⟩ = vjp_K(r, D) + vjp_K(U, E) + (E 1 for b),   E = Δt σ''(Z)∘Q∘(K r),

and a central difference of two vjp evaluations (O(h²)) for the other schemes.

The state curvature (E-MSA's default, ``curvature: gauss_newton``). The
feasibility term stands for the second-order part of J's expansion in the
state U^{n+1}, which Li et al.'s error estimate bounds by a multiple of
‖δU‖². pontryx uses that part itself, in its Gauss–Newton form: with the output
sensitivities Λ_kⁿ = ∂Ŷ_k/∂Uⁿ (the costates of the unit cotangents on Ŷ,
carried back through the same sweep: :meth:`ReducedFunctional.trajectory`
with ``sensitivities``) and the loss Hessian ∇²ℓ_s at the outputs,

    Eⁿ(θ) = −Hⁿ(Uⁿ, −Λ^{n+1}, θ) + ½ Σ_s (Λ_s^{n+1} δU_s)ᵀ ∇²ℓ_s (Λ_s^{n+1} δU_s)
            + (ρ/2S) ‖δU‖²_{M_L},        δU = gⁿ(Uⁿ, θ) − U^{n+1},

(:class:`~.msa_blocks.StateCurvature`; ρ now only damps it, and the costate
term is left out): each layer's block sees what a change of its output state
costs downstream — the second-order costate of differential dynamic
programming (Mayne 1966) in Gauss–Newton form. ``curvature: none`` is Li et
al.'s augmented Hamiltonian as published.

Order. ``order: gauss_seidel`` (E-MSA's default) solves the blocks in depth
order and propagates the state through every updated layer, so block n sees the
state Uⁿ the layers before it now produce (its δU then includes the upstream
change, which the state curvature prices): sequential in depth.
``order: jacobi`` (Li et al.'s sweep, and plain MSA's) solves every block from
the states and costates of the same forward–backward sweep: the blocks are
independent of each other: with ``parallel.depth`` each depth rank solves a
contiguous block of layers and broadcasts it (the iterates are those of one
rank; the trajectory, sensitivities and step control run on every depth rank).
It needs more damping, hence more sweeps (measured in benchmarks/msa_vs_gd.py,
with the depth axis's speed-up).

The readout C, d (if trainable) is the terminal block: minimise Φ(C, d) (E-MSA:
+ (ρS/2)‖Λ^{N_t} − ∇_U Φ(C, d)‖²_{M_L⁻¹}, exact with the loss's Hessian), with
the Gauss–Seidel sweep at the new U^{N_t}. The embedding E (if trainable;
E-MSA only) is the initial block: ⟨Λ⁰, E X⟩ + (ρ/2S)‖E X − U⁰‖²_{M_L} (or its
state curvature). The β (time-smoothness) regulariser couples neighbouring
layers: Rⁿ holds θ^{n±1} at their old values.

The maximum principle, reported. Every record holds, per layer, the
stationarity ‖∂_θ Hⁿ‖ (as every method does) and the gap
Hⁿ(θ_block) − Hⁿ(θⁿ) ≥ 0 (clipped at 0) that the layer's block solve found at
the sweep's states and costates: a lower bound of the maximum-principle gap
max_θ Hⁿ − Hⁿ(θⁿ) at the iterate the sweep started from (``gap`` = its
maximum over the layers; plots/hamiltonian.png).

Bounds (``training.bounds``): the block solves run TAO's bound-constrained
BLMVM on the box, i.e. the Hamiltonian is maximised over the admissible set.

Discrete weights (``weights: ternary | binary``, default ``real``): the kernel
takes values c·T per layer, T ∈ {−1, 0, 1} or {−1, 1}; each sweep maximises the
relaxed Hamiltonian, moves a latent real kernel and rounds it by the L²(M_L)
projection (Li & Hao, ICML 2018; the exact steps in :mod:`.discrete`).

Each block is collective over the width ranks; the data ranks sum their
samples' contributions. Memory: all N_t + 1 states and costates are stored,
with the state curvature also n_out sensitivities per state.
"""

from __future__ import annotations

from typing import ClassVar

from mpi4py import MPI

import numpy as np
from petsc4py import PETSc

from pontryx.meshes.errors import InputError, show
from pontryx.solver.adjoint.riesz import RieszMap, check_metric
from pontryx.solver.data.sampler import Minibatches
from pontryx.solver.errors import NonFiniteError
from pontryx.solver.model.controls import Controls
from pontryx.solver.model.loss import LOSSES
from pontryx.solver.petsc import (
    configure,
    destroy,
    ineffective,
    quasi_newton_matrix,
    unread,
)
from pontryx.solver.training.base import Trainer
from pontryx.solver.training.common import check_finite
from pontryx.solver.training.discrete import (
    NONMONOTONE,
    RHO_MIN,
    discrete_set,
)
from pontryx.solver.training.msa_blocks import (
    EmbeddingProblem,
    LayerProblem,
    ReadoutProblem,
    Restricted,
    StateCurvature,
)

__all__ = ["EMSA", "MSA", "PREFIX", "BlockSolver"]


# -- the block solves: PETSc TAO ------------------------------------------------------
PREFIX = "pontryx_msa_"
INNER_TYPES = ("lmvm", "blmvm", "bqnls", "bncg", "cg")
_BOUNDED = {"lmvm": "blmvm", "cg": "bncg"}


class BlockSolver:
    """PETSc TAO on one block of a sweep, under the options prefix ``pontryx_msa_``.

    The unknown is a Vec over the width ranks in the block's flat layout
    (:meth:`Controls.to_flat`), in the Riesz variables x = √ω θ of the metric
    (L²(M_L) by default: the same iteration on every mesh), within the block's
    bounds √ω lo ≤ x ≤ √ω hi (a bound-constrained type: ``lmvm`` runs as
    ``blmvm``, ``cg`` as ``bncg``); the block's value and gradient are summed
    over the data ranks by the block problem. L-BFGS types use the reproducible
    dense L-BFGS matrix (``lmvmdbfgs``) as :mod:`.tao` does. :meth:`solve` warm
    starts from the current controls and stops after ``max_it`` iterations or at
    ‖∇‖ ≤ ``gttol``·‖∇₀‖ (an inexact solve with a forcing term)."""

    def __init__(self, net, like: Controls, metric: str, bounds, tao_type: str, options: dict):
        self.comm = like.comm
        self.work = like.copy()
        self.bounds = bounds if bounds and set(bounds.limits) & set(like) else None
        self.riesz = RieszMap(net, like, metric)
        if self.bounds is not None:
            tao_type = _BOUNDED.get(tao_type, tao_type)
        self.type = tao_type
        n = (like.local_size(), PETSc.DETERMINE)
        self.x = PETSc.Vec().createMPI(n, comm=self.comm)
        self.tao = PETSc.TAO().create(comm=self.comm)
        self.tao.setType(tao_type)
        extra = quasi_newton_matrix(PREFIX, tao_type)
        self.unused = configure(self.tao, PREFIX, options, extra)
        self.tao.setObjectiveGradient(self._objective_gradient)
        self.box = []
        if self.bounds is not None:
            for flat in self.bounds.flat(like):
                v = PETSc.Vec().createMPI(n, comm=self.comm)
                v.array[:] = np.clip(self.riesz.to_x(flat), -PETSc.INFINITY, PETSc.INFINITY)
                self.box.append(v)
            self.tao.setVariableBounds(tuple(self.box))
        self.problem, self.first, self.evaluations = None, None, 0

    def _theta(self, x: np.ndarray) -> Controls:
        self.riesz.set_theta(self.work, x)
        if self.bounds is not None:  # one ulp outside after the division by √ω
            self.bounds.project(self.work)
        return self.work

    def _objective_gradient(self, tao, x, g):
        f, grad = self.problem.value_and_gradient(self._theta(x.array_r))
        self.riesz.gradient_into(grad, g.array)
        self.evaluations += 1
        if self.first is None:
            self.first = f
        return f

    def solve(self, problem, theta0: Controls, max_it: int, gttol: float):
        """(θ, F(θ₀), F(θ)) after at most ``max_it`` TAO iterations on the block
        problem F from θ₀ (θ is the solver's work array: copy it before the next
        solve)."""
        self.problem, self.first = problem, None
        self.x.array[:] = self.riesz.to_x(theta0.to_flat())
        if self.bounds is not None:
            lo, hi = (v.array_r for v in self.box)
            np.clip(self.x.array, lo, hi, out=self.x.array)
        self.tao.setTolerances(gatol=0.0, grtol=0.0, gttol=gttol)
        self.tao.setMaximumIterations(max_it)
        self.tao.setSolution(self.x)
        self.tao.solve()
        theta = self._theta(self.x.array_r)
        f = self.tao.getObjectiveValue()
        if self.tao.getConvergedReason() < 0 and self.tao.getIterationNumber() == 0:
            f = problem(theta)  # a failed first line search: TAO's value may be a trial's
        self.problem = None
        return theta, self.first, f

    def destroy(self) -> None:
        destroy(self.tao, self.x, *self.box)


# -- the trainers -------------------------------------------------------------------
MAX_TRIALS = 30  # step-control trials per sweep before giving up (NO_DESCENT)


class EMSA(Trainer):
    """Extended method of successive approximations, E-MSA (Li, Chen, Tai & E 2018).

    Options: ``rho`` (the initial ρ > 0, default 0.01: from 0.1 digits in
    benchmarks/training.py reached 90 % test accuracy after 6 sweeps, from 0.01
    after 4, ellipses 99 % after 7 from either, no sweep rejected), ``curvature``
    (``gauss_newton``, default, or ``none``: Li et al.'s augmented Hamiltonian),
    ``order`` (``gauss_seidel``, default, or ``jacobi``), ``step_control``
    (default true: ρ adapted, see below), ``gatol`` (stop when ‖∇J‖ ≤ gatol,
    default 1e-8, in the metric), ``inner_iterations`` (TAO iterations per
    block and sweep, default 5),
    ``rho_min`` (the floor of ρ; default null: 0, and 10⁻³ for discrete
    weights), ``nonmonotone`` (the memory M of the step control, below;
    default null: 1, and 50 for discrete weights), ``flip_search`` (null,
    default: on for discrete weights; a rejected sweep's best code flips are
    tried before ρ grows, see :meth:`_flip_search` and :mod:`.discrete`;
    refused for real weights), ``inner_type`` (the blocks' TAO type: lmvm,
    default, blmvm, bqnls, bncg, cg), ``forcing`` (a block solve stops early at
    ‖∇Eⁿ‖ ≤ forcing·‖∇Eⁿ(θ_old)‖; default 0: after ``inner_iterations``),
    ``petsc_options`` (further TAO options without the prefix), ``metric``
    (``l2``, default: the block solves in the L²(M_L) metric of the
    regulariser, mesh-independent; ``euclidean``: in nodal coordinates),
    ``batch_size`` (samples per sweep; None, or at least the samples: the full
    batch, as for sgd/adam), ``seed`` (the
    minibatch stream of :class:`~pontryx.solver.data.sampler.Minibatches`,
    checkpointed), ``weights`` (``real``, default; ``ternary`` or ``binary``:
    discrete kernel values, see :mod:`.discrete`; the latent kernel is
    checkpointed). Defaults measured on ellipses (1000 samples, unit_square
    n = 8, 8 layers): with the state curvature and the Gauss–Seidel sweep ρ
    falls at every sweep and no sweep is rejected; 5 inner iterations balance
    the work per sweep against the sweeps needed (2, 3, 5, 8 reach J = 0.095,
    0.045, 0.005, 0.006 after 20 sweeps).

    Step control. Li et al.'s error estimate (their Theorem 2) bounds
    J(θ_new) − J(θ_old) by minus the sweep's decrease of the augmented
    Hamiltonian plus terms the ρ penalties dominate once ρ exceeds a constant
    of the problem — which is not known (on ellipses with α = 1e-4 a fixed
    ρ = 1 sends J from 0.70 to 5.9 in three sweeps; ρ ≈ 30–100 is needed at the
    start, far less later). So ρ is adapted like a trust region (Levenberg–
    Marquardt): a sweep is accepted iff J(θ_new) ≤ J(θ_old) (the sweep's
    batch; with ``nonmonotone`` M > 1 and the full batch iff J(θ_new) ≤ the
    largest J of the last M iterates, Grippo, Lampariello & Lucidi's
    nonmonotone rule, 1986); on rejection ρ ← 4ρ and the blocks are solved again from the same
    states and costates; after an accepted sweep whose decrease of J is at
    least ¾ of the predicted Σ_blocks (Eⁿ(θ_old) − Eⁿ(θ_new)) (discrete
    weights: after every accepted sweep), ρ ← max(ρ/2,
    ``rho_min``) (the floor; default null: 0 for real weights, 10⁻³ for
    discrete ones, see :mod:`.discrete`). So
    E-MSA is a descent method for every ρ₀ (M = 1; for M > 1 the largest J of
    every M consecutive iterates does not increase). After 30 rejections in a row the
    run stops (``failed = "NO_DESCENT"``). ``step_control: false``: fixed ρ
    (Li et al.'s Algorithm 2 as published).

    Each sweep yields one Record of the full-batch J, ∇J and stationarity
    max_n ‖∂_θ Hⁿ‖ *after* the update (one extra forward–adjoint sweep; with the
    full batch it provides the states and costates of the next sweep), extra =
    {"rho": ρ of the accepted sweep, "decrease": Σ_blocks (Eⁿ(θ_old) −
    Eⁿ(θ_new)), "rejected": rejected trials before it, "fraction": the part of
    the sweep taken (1, or f < 1 from the flip search), "batch": samples,
    "gap": the largest layer gap}, layers = {"stationarity", "gap"}.
    """

    name = "emsa"
    supports_bounds = True
    depth_parallel = True  # the Jacobi sweep's layer solves (order: jacobi)
    defaults: ClassVar[dict] = {
        "rho": 0.01,
        "rho_min": None,
        "nonmonotone": None,
        "step_control": True,
        "gatol": 1e-8,
        "curvature": "gauss_newton",
        "order": "gauss_seidel",
        "inner_iterations": 5,
        "inner_type": "lmvm",
        "forcing": 0.0,
        "petsc_options": {},
        "metric": "l2",
        "batch_size": None,
        "seed": 0,
        "weights": "real",
        "flip_search": None,
    }
    #: whether a discrete-weight sweep projects each layer as it goes (E-MSA) or the
    #: step control projects the whole proposal (MSA's line search)
    project_layers = True

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        opts = self.options
        self._check(opts)
        self.rho = float(opts.get("rho", 0.0))
        discrete = opts.get("weights", "real") != "real"
        floor = opts.get("rho_min")  # null: 0 (real), RHO_MIN (discrete: see .discrete)
        self.rho_min = float(floor if floor is not None else RHO_MIN if discrete else 0.0)
        self.inner = int(opts["inner_iterations"])
        memory = opts.get("nonmonotone")  # null: 1 (real), 50 (discrete)
        self.memory = int(memory if memory is not None else NONMONOTONE if discrete else 1)
        self.history: list[float] = []  # J of the last accepted iterates (nonmonotone)
        search = opts.get("flip_search")  # null: on for discrete weights
        self.flip_search = bool(discrete if search is None else search)
        self.inner_type, self.forcing = opts["inner_type"], float(opts["forcing"])
        # plain MSA has neither: Li et al.'s published Jacobi sweep
        self.curvature, self.order = opts.get("curvature", "none"), opts.get("order", "jacobi")
        self._solvers: dict = {}  # block key → BlockSolver, for one sweep
        layout = getattr(rf, "layout", None)
        self.depth = layout.depth if layout is not None else MPI.COMM_SELF
        if self.depth.size > 1 and self.order != "jacobi":
            raise InputError(
                "the Gauss–Seidel sweep is sequential in depth; with a depth axis "
                "use order: jacobi",
                "order",
            )
        self.gaps: list[float] = []  # the last sweep's maximum-principle gaps, by layer
        bs = opts["batch_size"]  # as sgd/adam: a batch of all samples or more is the full one
        self.batch_size = None if bs is None or bs >= rf.S else bs
        self.step_control = bool(opts["step_control"])
        self.metric = check_metric(opts["metric"])  # also the metric of ‖∇J‖ in the records
        self.batches = (
            Minibatches.for_functional(rf, self.batch_size, int(opts["seed"]))
            if self.batch_size is not None
            else None
        )
        # discrete kernel values (training.options.weights): the latent real kernel
        self.discrete = discrete_set(rf.net, opts, self.bounds)
        self.latent = self._proposal = None
        if self.discrete is not None:
            names = self.discrete.names
            self.latent = Controls({k: controls[k].copy() for k in names}, controls.comm)
            self.discrete.quantise(self.latent, self.controls)
        self._cache = None

    def _check(self, opts):
        rho = opts["rho"]
        if isinstance(rho, bool) or not (isinstance(rho, int | float) and rho > 0):
            raise InputError(f"expected ρ > 0 for {self.name}, got {show(rho)}", "rho")
        floor = opts.get("rho_min")
        if floor is not None and (
            isinstance(floor, bool) or not (isinstance(floor, int | float) and floor >= 0)
        ):
            raise InputError(f"expected null or ρ_min ≥ 0, got {show(floor)}", "rho_min")
        inner, bs = opts["inner_iterations"], opts["batch_size"]
        if isinstance(inner, bool) or not (isinstance(inner, int) and inner >= 1):
            raise InputError(f"expected an integer ≥ 1, got {show(inner)}", "inner_iterations")
        search = opts.get("flip_search")
        if search is not None and not isinstance(search, bool):
            raise InputError(f"expected null, true or false, got {show(search)}", "flip_search")
        if search and opts.get("weights", "real") == "real":
            raise InputError("needs weights: ternary or binary", "flip_search")
        memory = opts.get("nonmonotone")
        if memory is not None and (
            isinstance(memory, bool) or not (isinstance(memory, int) and memory >= 1)
        ):
            raise InputError(f"expected null or an integer ≥ 1, got {show(memory)}", "nonmonotone")
        if bs is not None and (isinstance(bs, bool) or not (isinstance(bs, int) and bs >= 1)):
            raise InputError(f"expected null or a positive integer, got {show(bs)}", "batch_size")
        for key, allowed in (
            ("curvature", ("gauss_newton", "none")),
            ("order", ("gauss_seidel", "jacobi")),
        ):
            if opts[key] not in allowed:
                raise InputError(f"expected {' or '.join(allowed)}, got {show(opts[key])}", key)
        if opts["inner_type"] not in INNER_TYPES:
            raise InputError(
                f"expected one of {', '.join(INNER_TYPES)}, got {show(opts['inner_type'])}",
                "inner_type",
            )
        g = opts["gatol"]
        if isinstance(g, bool) or not (isinstance(g, int | float) and g >= 0):
            raise InputError(f"expected ≥ 0, got {show(g)}", "gatol")
        f = opts["forcing"]
        if isinstance(f, bool) or not (isinstance(f, int | float) and 0 <= f < 1):
            raise InputError(f"expected 0 ≤ forcing < 1, got {show(f)}", "forcing")
        if not isinstance(opts["petsc_options"], dict):
            raise InputError(
                f"expected a mapping, got {show(opts['petsc_options'])}", "petsc_options"
            )
        if not isinstance(opts["step_control"], bool):
            raise InputError(
                f"expected true or false, got {show(opts['step_control'])}", "step_control"
            )
        seed = opts["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"expected an integer ≥ 0, got {show(seed)}", "seed")

    # -- sweeps -----------------------------------------------------------------
    def _full(self):
        """(J, ∇J, misfit, stat, trajectory) of the full batch at the current controls."""
        c = self._cache
        same = c is not None and all(np.array_equal(v, c[0][k]) for k, v in self.controls.items())
        if c is None or not self.rf.net.space.comm.allreduce(same, op=MPI.LAND):
            rf = self.rf
            # the output sensitivities only where the next sweep starts from it
            sens = self.curvature == "gauss_newton" and self.batch_size is None
            traj = rf.trajectory(self.controls, sensitivities=sens)
            J, grad, misfit, stat = rf.reduce(self.controls, traj.gradient, traj.misfit, traj.stat)
            self._cache = c = (self.controls.copy(), (J, grad, misfit, stat, traj))
        return c[1]

    def _layer_regulariser(self, n, old):
        """Rⁿ of layer n with its neighbours held at ``old`` (Jacobi)."""
        regulariser = self.rf.regulariser

        def reg(theta, grad):
            return regulariser.layer(n, theta, old, grad)

        return reg

    def blocks(self, traj, X, misfit_fn, S, rho=None):
        """(key, problem) of every block of one sweep in the order they are solved:
        the embedding (when trainable), the layers 0 … N_t − 1, the readout (when
        trainable); ρ: default the current one. With ``curvature: gauss_newton``
        the layer and embedding blocks carry the :class:`StateCurvature` of their
        output state."""
        net, old = self.rf.net, self.controls
        U, Lam = traj.states, traj.costates
        rho = self.rho if rho is None else rho
        comm, outer = self.rf.data_comm, self.rf.regulariser.outer

        def curvature(n):
            if self.curvature != "gauss_newton":
                return None
            sens = [path[n] for path in traj.sensitivities]
            hvp = LOSSES[self.rf.task].hvp
            return StateCurvature(net, U[n], sens, traj.Yhat, hvp, S, rho / S)

        if "E" in net.trainable:
            yield (
                "embedding",
                EmbeddingProblem(
                    net, X, U[0][0], Lam[0][0], rho, S, comm, curvature=curvature(0), reg=outer
                ),
            )
        for n in range(net.layers):
            reg = self._layer_regulariser(n, old)
            yield n, LayerProblem(
                net, n, U[n], U[n + 1], Lam[n], Lam[n + 1], rho, S, reg, comm,
                curvature=curvature(n + 1),
            )  # fmt: skip
        if "C" in net.trainable:
            yield (
                "readout",
                ReadoutProblem(
                    net, U[-1][0], Lam[-1][0], misfit_fn, self.rf.task, rho, S, comm, reg=outer
                ),
            )

    def _block_controls(self, key, controls):
        net = self.rf.net
        if key == "readout":
            return controls.subset(("C", "d"))
        if key == "embedding":
            return controls.subset(("E",))
        return Controls({k: controls[k][key] for k in net.layer_names}, controls.comm)

    def _solver(self, key, block: Controls) -> BlockSolver:
        """The TAO of block ``key`` for one sweep (TAO keeps state from one solve to the
        next, e.g. its line search's step: fresh objects keep resumed runs identical)."""
        solver = self._solvers.get(key)
        if solver is None:
            o = self.options
            solver = BlockSolver(
                self.rf.net, block, self.metric, self.bounds, self.inner_type, o["petsc_options"]
            )
            self._solvers[key] = solver
        return solver

    def probe(self) -> None:
        """Configure one block's TAO: a bad type or value fails now; an option of
        ``petsc_options`` that TAO did not read is an error keyed by it."""
        block = self._block_controls(0, self.controls)
        solver = BlockSolver(
            self.rf.net, block, self.metric, self.bounds, self.inner_type,
            self.options["petsc_options"],
        )  # fmt: skip
        unused = ineffective(PREFIX, self.options["petsc_options"], solver.unused)
        solver.destroy()
        if unused:
            raise unread(PREFIX, unused[0], "TAO")

    def destroy(self) -> None:
        """Free the blocks' TAO objects."""
        for solver in self._solvers.values():
            solver.destroy()
        self._solvers = {}

    def _batch(self):
        """(batch functional, its trajectory, its J) at the current controls."""
        if self.batch_size is None:
            J, _, _, _, traj = self._full()
            return self.rf, traj, J
        rfb = self.rf.batch(self.batches.local(self.iteration))
        traj = rfb.trajectory(self.controls, sensitivities=self.curvature == "gauss_newton")
        return rfb, traj, rfb.reduce(self.controls, traj.gradient, traj.misfit, traj.stat)[0]

    def _owner(self, key) -> int:
        """The depth rank that solves block ``key`` (Jacobi sweep over a depth axis:
        contiguous blocks of layers, the embedding with layer 0, the readout with
        the last layer)."""
        P, L = self.depth.size, self.rf.net.layers
        n = 0 if key == "embedding" else L - 1 if key == "readout" else key
        return n * P // L

    def sweep(self, traj=None, rfb=None, rho=None):
        """One (E-)MSA update from the states and costates ``traj`` of batch
        ``rfb`` (default: this iteration's batch at the current controls) with
        ρ (default: the current one); returns (θ_new, Σ_blocks of the decrease).
        With a depth axis (Jacobi sweep only) every depth rank solves its own
        blocks and broadcasts them: the same result as one rank."""
        if traj is None:
            rfb, traj, _ = self._batch()
        new = self.controls.copy()
        decrease, gaps = 0.0, {}
        discrete = self.discrete is not None and self.project_layers
        if discrete:
            self._proposal = self.latent.copy()
        net, seidel = self.rf.net, self.order == "gauss_seidel"
        depth, owners = self.depth, {}
        state = traj.states[0]
        try:
            for key, problem in self.blocks(traj, rfb.X, rfb._misfit, rfb.S, rho):
                owners[key] = self._owner(key)
                if owners[key] != depth.rank:
                    continue
                if seidel and isinstance(key, int):  # the state the updated layers produce
                    problem.U = state
                elif seidel and key == "readout":
                    problem.U = state[0]
                x0 = self._block_controls(key, self.controls)
                theta, f0, f = self._solver(key, x0).solve(problem, x0, self.inner, self.forcing)
                if discrete and isinstance(key, int):
                    theta, f = self._discrete_layer(key, problem, x0, theta.copy())
                if isinstance(key, int):  # Hⁿ(θ_solve) − Hⁿ(θⁿ) ≤ max_θ Hⁿ − Hⁿ(θⁿ)
                    if not problem.rho and problem.curvature is None:  # the block is −Hⁿ
                        gap = f0 - f
                    else:
                        gap = problem.without_rho(x0) - problem.without_rho(theta)
                    gaps[key] = max(gap, 0.0)
                target = self._block_controls(key, new)
                for k in theta:
                    target[k][...] = theta[k]
                decrease += f0 - f
                if seidel and key == "embedding":
                    state = net.scheme.initial_state(target["E"] @ rfb.X)
                elif seidel and isinstance(key, int):
                    ctx = net.kernel.layer({k: target[k] for k in net.kernel.shapes()})
                    state, _ = net.scheme.step(ctx, target["b"], state, n=key)
                    state = tuple(u.copy() for u in state)
                    net.kernel.release(ctx)
        finally:
            self.destroy()
        if depth.size > 1:  # every block from its depth rank
            for key, root in owners.items():
                target = self._block_controls(key, new)
                for k in target:
                    arr = np.ascontiguousarray(target[k])
                    depth.Bcast(arr, root=root)
                    target[k][...] = arr
                if discrete and isinstance(key, int):  # and its latent kernel
                    for k in self._proposal:
                        arr = np.ascontiguousarray(self._proposal[k][key])
                        depth.Bcast(arr, root=root)
                        self._proposal[k][key] = arr
            decrease = depth.allreduce(decrease)
            for part in depth.allgather(gaps):
                gaps.update(part)
        self.gaps = [gaps[n] for n in sorted(gaps)]  # the layers' maximum-principle gaps
        return new, decrease

    def _discrete_layer(self, n, problem, old, theta):
        """Layer n's discrete-weight step (see :mod:`.discrete`): the displacement of
        the block solve moves the latent kernel, whose L²(M_L) projection c·T is the
        layer's new kernel; then b is re-solved with c·T fixed. Returns (θⁿ, its
        block value)."""
        latent = self._proposal
        for k in self.discrete.names:
            latent[k][n] += theta[k] - old[k]
            theta[k][...] = self.discrete.project_layer(k, latent[k][n])
        b = theta.subset(("b",))
        fixed = Restricted(problem, {k: theta[k] for k in self.discrete.names})
        b, _, _ = self._solver(("b", n), b).solve(fixed, b, self.inner, self.forcing)
        theta["b"][...] = b["b"]
        return theta, problem(theta)

    def _set(self, controls):
        for k in self.controls:
            self.controls[k][...] = controls[k]

    def _trial(self, rfb, candidate) -> float:
        """J of the sweep's batch at ``candidate``; the controls are left there."""
        if self.bounds is not None:  # θ_old + λ(θ_MSA − θ_old) may be one ulp outside
            self.bounds.project(candidate)
        self._set(candidate)
        return float(self._full()[0] if rfb is self.rf else rfb(self.controls))

    def _step(self):
        """One accepted sweep (the controls updated); its record extras, or None
        if no trial decreased J."""
        rfb, traj, J_old = self._batch()
        old = self.controls.copy()
        # ∇J at θ_old for the flip search: the full batch's is cached with its trajectory
        grad = self._full()[1].copy() if self.flip_search and rfb is self.rf else None
        for rejected in range(MAX_TRIALS):
            rho = self.rho
            new, decrease = self.sweep(traj, rfb, rho)
            if not self.step_control:
                if self.bounds is not None:
                    self.bounds.project(new)
                self._set(new)
                self.latent = self._proposal
                return {"rho": rho, "decrease": decrease, "rejected": 0}
            J_new = self._trial(rfb, new)
            if J_new <= self._reference(J_old):
                self._remember(J_old)
                self.latent = self._proposal
                # discrete weights: the rounding makes the predicted decrease
                # meaningless; every accepted sweep halves ρ (down to ρ_min)
                if self.discrete is not None or J_old - J_new >= 0.75 * decrease:
                    self.rho = max(0.5 * rho, self.rho_min)
                return {"rho": rho, "decrease": decrease, "rejected": rejected, "fraction": 1.0}
            self._set(old)
            if self.flip_search:
                if grad is None:
                    grad = self._batch_gradient(rfb, old)
                f = self._flip_search(rfb, old, new, grad, self._reference(J_old))
                if f is not None:  # a part of the sweep accepted; ρ kept
                    self._remember(J_old)
                    return {"rho": rho, "decrease": decrease, "rejected": rejected, "fraction": f}
            self.rho = 4.0 * rho
        return None

    def _batch_gradient(self, rfb, old) -> Controls:
        """∇J of the sweep's batch at ``old`` (the current controls): one adjoint
        sweep without sensitivities."""
        self._set(old)
        return rfb.value_and_gradient(self.controls)[1]

    def _flip_search(self, rfb, old, new, grad, reference):
        """The discrete line search of a rejected sweep (``flip_search``): the
        sweep's proposal changes the codes T of a set F of kernel entries; rank
        them by their first-order gain −∂J/∂W_ij·(W_new − W_old)_ij (the linearised
        Hamiltonian increase of each flip) and try, for f = ½, ¼, …, the latent
        W̃_old + f·ΔW̃ + (1 − f)·1_top(f)·ΔW̃ (the best ⌈f|F|⌉ flips taken in full,
        the rest of the displacement scaled by f), its projection as kernel and
        θ_old + f(θ_new − θ_old) for the real controls, down to one flip; the
        trial of least J is taken if J ≤ ``reference``. Returns its f (controls
        and latent set) or None (controls at ``old``)."""
        names, dset = self.discrete.names, self.discrete
        delta = Controls({k: self._proposal[k] - self.latent[k] for k in names}, old.comm)
        flipped, gain = {}, {}
        for k in names:
            flipped[k] = np.sign(new[k]) != np.sign(old[k])
            gain[k] = -grad[k] * (new[k] - old[k])
        local = np.concatenate([gain[k][flipped[k]] for k in names]) if names else np.empty(0)
        gathered = np.sort(np.concatenate(self.rf.net.space.comm.allgather(local)))[::-1]
        count = len(gathered)
        if count == 0:
            return None
        best, f, keep = None, 1.0, count
        while best is None or keep > 1:  # f = ½, ¼, … down to one flip; the least J
            f *= 0.5
            keep = int(np.ceil(f * count))
            threshold = gathered[keep - 1]
            latent = self.latent.copy()
            for k in names:
                top = flipped[k] & (gain[k] >= threshold)
                latent[k] += np.where(top, 1.0, f) * delta[k]
            point = old.copy().axpy(f, new - old)
            dset.quantise(latent, point)
            if self.bounds is not None:
                self.bounds.project(point)
            J = float(rfb(point))
            if best is None or J < best[0]:
                best = (J, f, point, latent)
        if best[0] > reference:
            self._set(old)
            return None
        self._set(best[2])
        self.latent = best[3]
        return best[1]

    def _reference(self, J_old: float) -> float:
        """The value a trial must not exceed: J_old, or with ``nonmonotone`` M > 1
        (full batch) max(J_old, the M − 1 accepted iterates' J before it) (Grippo,
        Lampariello & Lucidi 1986)."""
        if self.batch_size is not None:
            return J_old
        return max([J_old, *self.history])  # at most M − 1 values

    def _remember(self, J_old: float) -> None:
        if self.memory > 1 and self.batch_size is None:
            self.history = [*self.history, J_old][-(self.memory - 1) :]

    def _iterate(self, n):
        for _ in range(n):
            if self.failed or self.converged:
                return
            last = self.controls.copy()
            extra = self._step()
            if extra is None:
                self._set(last)
                self.failed = "NO_DESCENT"
                return
            self.iteration += 1
            J, grad, misfit, stat, _ = self._full()
            self.rf.last = {"misfit": misfit, "stat": stat, "J": J, "gradient": grad}
            batch = self.rf.S if self.batch_size is None else self.batch_size
            if self.discrete is not None and self.discrete.kind == "ternary":
                extra["sparsity"] = self.discrete.sparsity(self.controls)
            rec = self.record(J, grad, **extra, batch=batch, gap=max(self.gaps, default=0.0))
            rec.layers["gap"] = list(self.gaps)
            try:
                check_finite(self.iteration, rec.loss, rec.grad_norm)
            except NonFiniteError:
                self._set(last)
                self.iteration -= 1
                self._cache = None
                raise
            if rec.grad_norm <= self.options["gatol"]:
                self.converged = "CONVERGED_GATOL"
            yield rec

    # -- checkpointing --------------------------------------------------------------
    def state(self):
        out = super().state()
        out["msa/rho"] = np.array(self.rho)
        out["msa/step"] = np.array(getattr(self, "step", 1.0))
        out["msa/history"] = np.array(self.history, dtype=float)
        if self.batches is not None:
            out.update({f"msa/{k}": v for k, v in self.batches.state().items()})
        if self.latent is not None:
            out.update({f"latent/{k}": v.copy() for k, v in self.latent.items()})
        return out

    def state_kinds(self):
        kinds = super().state_kinds()
        if self.latent is not None:
            kinds.update({f"latent/{k}": ("control", k) for k in self.latent})
        return kinds

    def restore(self, state, controls_only=False):
        super().restore(state)
        self._cache, self.failed = None, None
        if self.latent is not None:  # the latent kernel; from a real run: θ's, quantised
            if all(f"latent/{k}" in state for k in self.latent):
                for k, v in self.latent.items():
                    v[...] = state[f"latent/{k}"]
            else:
                for k, v in self.latent.items():
                    v[...] = self.controls[k]
                self.discrete.quantise(self.latent, self.controls)
        if controls_only:
            return
        if "msa/rho" in state:
            self.rho = float(state["msa/rho"])
            self.step = float(state["msa/step"])
        if "msa/history" in state:
            self.history = [float(v) for v in np.atleast_1d(state["msa/history"])]
        if self.batches is not None and "msa/perm" in state:
            self.batches.restore({k[4:]: v for k, v in state.items() if k.startswith("msa/")})
        self._cache, self.failed = None, None


class MSA(EMSA):
    """The plain method of successive approximations, MSA (Li et al. 2018, Algorithm 1).

    Every block minimises only its Hamiltonian part (−Hⁿ, the readout misfit) with a few
    TAO iterations (Li et al.'s Algorithm 1: the Jacobi sweep, no state
    curvature). Not a descent method in general: with weak
    regularisation the layerwise maximiser of Hⁿ saturates σ (θ → ∞ in the
    direction of the costate) and J explodes. Options as :class:`EMSA` without
    ``rho``; ``step_control`` (default true) damps the sweep by a backtracking
    line search on J along it, θ_old + λ(θ_MSA − θ_old), λ ← λ/4 until J does
    not increase (each trial one forward–adjoint sweep, no block solves), the
    next sweep starting from min(1, 2λ); extra["step"] = λ. ``step_control:
    false`` is Li et al.'s Algorithm 1 as published. The embedding E cannot be
    trained (its Hamiltonian ⟨Λ⁰, E X⟩ is linear in E)."""

    name = "msa"
    defaults: ClassVar[dict] = {
        k: v
        for k, v in EMSA.defaults.items()
        if k not in ("rho", "rho_min", "nonmonotone", "curvature", "order", "flip_search")
    }

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        self.rho, self.step, self.flip_search = 0.0, 1.0, False

    def _check(self, opts):
        if "E" in self.rf.net.trainable:
            raise InputError(
                "method 'msa' cannot train the embedding (its Hamiltonian is linear in E); "
                "use 'emsa'",
                "method",
            )
        # plain MSA: ρ = 0, no state curvature, the Jacobi sweep
        super()._check({**opts, "rho": 1.0, "curvature": "none", "order": "jacobi"})

    project_layers = False  # discrete weights: the line search projects (see _point)

    def _point(self, old, direction, lam):
        """θ_old + λ(θ_MSA − θ_old); for discrete weights the kernel is the L²(M_L)
        projection of latent + λ(W_MSA − W_old) (the proposed latent in
        ``self._proposal``)."""
        point = old.copy().axpy(lam, direction)
        if self.bounds is not None:  # λ = 1 may land an ulp outside (step_control: false)
            self.bounds.project(point)
        if self.discrete is not None:
            names = self.discrete.names
            self._proposal = self.latent.copy().axpy(lam, direction.subset(names))
            self.discrete.quantise(self._proposal, point)
        return point

    def _step(self):
        rfb, traj, J_old = self._batch()
        old = self.controls.copy()
        new, decrease = self.sweep(traj, rfb, 0.0)
        extra = {"rho": 0.0, "decrease": decrease, "rejected": 0, "step": 1.0}
        direction = new - old
        if not self.step_control:
            self._set(self._point(old, direction, 1.0))
            self.latent = self._proposal
            return extra
        lam = self.step
        for rejected in range(MAX_TRIALS):
            if self._trial(rfb, self._point(old, direction, lam)) <= J_old:
                self.step = min(1.0, 2.0 * lam) if rejected == 0 else lam
                self.latent = self._proposal
                return {**extra, "rejected": rejected, "step": lam}
            lam *= 0.25
        return None
