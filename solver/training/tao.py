"""PETSc TAO on the reduced functional θ ↦ J(θ) (DESIGN.md §3).

The controls over ``net.trainable`` are one PETSc MPI Vec on the width
communicator (local size ``controls.subset(net.trainable).local_size()``; the
replicated readout offset d lives on width rank 0). TAO evaluates J and ∇J by
one forward and one adjoint sweep (:meth:`ReducedFunctional.value_and_gradient`).
With a data split every data group runs the same TAO on its own width
communicator; the gradients are Allreduced over the data ranks, so all groups
take identical steps.

Methods (``method`` → TAO type):

* gradient-only: ``lmvm`` (L-BFGS with Moré–Thuente line search, the default),
  ``blmvm``, ``bqnls`` (quasi-Newton),
  ``bncg``, ``cg`` (nonlinear conjugate gradients);
* Newton-type: ``ntr`` (trust-region Newton–Steihaug–Toint CG), ``nls``,
  ``ntl``, ``bnls``, ``bntr``, ``bntl``, with a matrix-free Hessian: by default
  (option ``hessian: exact``) the exact action ∇²J(θ) v of
  :meth:`ReducedFunctional.hessian_action` (one tangent-linear and one
  second-order adjoint sweep, regulariser included); ``hessian: fd`` takes
  central differences of exact adjoint gradients instead,

      H(θ) v ≈ (∇J(θ + h v) − ∇J(θ − h v)) / (2h),   h = δ max(‖θ‖, 1) / ‖v‖,

  O(h²) accurate, δ = ``fd_step`` (default 1e-5 ≈ ε^{1/3}, which balances the
  O(h²) truncation against the O(ε/h) round-off). The loss is non-convex, so
  the Hessian may be indefinite: the trust-region Newton–CG (``ntr``; STCG stops
  on negative curvature at the trust-region boundary) is the robust choice and
  the one tested; ``nls`` perturbs the Hessian instead.
* ``tao``: any TAO type by the option ``type``.

The quasi-Newton types use PETSc's dense-representation L-BFGS matrix
(``lmvmdbfgs``: the same L-BFGS approximation as the default recursive
``lmvmbfgs``, applied with compact dense algebra), because the recursive one is
not bit-reproducible from run to run in PETSc 3.25 (1-ulp differences after the
first update in about half of the runs, even serially), which would break
bit-for-bit restarts. ``-tao_lmvm_mat_type lmvmbfgs`` restores it (PETSc gives
LMVM's matrix the fixed prefix ``tao_lmvm_``; BLMVM's is ``pontryx_tao_tao_blmvm_``).

Metric. By default (option ``metric: l2``) TAO works in the Riesz variables
x = √ω θ of the L²(M_L) inner product of the regulariser (ω: kernel.weights()
for layer controls, m for b, E and C, 1 for d; :class:`~.common.RieszMap`): it
sees J̃(x) = J(x/√ω) and ∇_x J = ω^{-1/2} ∇_θ J, so its L-BFGS initial metric,
line-search steps, trust region and tolerances are those of the continuous
problem and do not change with the mesh (Schwedes et al. 2017); the
Hessian is the one of J̃, ω^{-1/2} ∇²J ω^{-1/2}. ``metric: euclidean``: the nodal
values θ themselves, as before. Records and checkpoints hold θ and ∇_θ J.

Options: ``gatol`` (‖∇J‖ ≤ gatol, default 1e-8; the norm of ∇_x J, i.e. the L²
norm of the gradient for ``metric: l2``), ``grtol``, ``gttol`` (TAO's relative
tests, default 0: off), ``hessian`` (exact | fd), ``fd_step`` and
``krylov_max_it`` (Newton-type: at most this many CG iterations per Newton step,
default 50), ``petsc_options`` (a dict of further options without the prefix,
e.g. ``{"tao_ls_type": "armijo"}``). Every TAO object has the options prefix
``pontryx_tao_`` (:func:`pontryx.solver.petsc.configure`), so
``-pontryx_tao_tao_ls_type armijo`` on the command line (or in PETSc.Options)
reaches it too and overrides the dict and the defaults.

Bounds (``training.bounds``): TAO's bound-constrained types keep the controls
in the box (in the Riesz variables, √ω lo ≤ x ≤ √ω hi: the same box); a type
without bounds runs as its bounded variant — ``lmvm`` as ``blmvm`` (projected
L-BFGS), ``cg`` as ``bncg``, ``ntr``/``nls``/``ntl`` as ``bntr``/``bnls``/``bntl``
— and ``gatol`` then tests the projected gradient. ``ntl`` always runs as
``bntl`` (:data:`SUBSTITUTES`: PETSc 3.25's NTL segfaults after a failed line search).

Chunks: :meth:`TaoTrainer.iterate` runs one ``TaoSolve`` of at most k iterations
warm-started from the current controls. TAO's internal state (the L-BFGS
memory, the trust radius) restarts at every call: a checkpoint cannot hold it,
so uninterrupted runs restart at the same chunk boundaries and resumed runs are
bit-identical (see :mod:`.base`). The TAO objects are created and destroyed
within each call. If TAO converges, ``iterate`` ends early and
:attr:`TaoTrainer.converged` names the reason (e.g. ``"CONVERGED_GATOL"``).
"""

from __future__ import annotations

from typing import ClassVar

from mpi4py import MPI

import numpy as np
from petsc4py import PETSc

from pontryx.meshes.errors import InputError, show
from pontryx.solver.adjoint.riesz import RieszMap
from pontryx.solver.errors import NonFiniteError, SolveError, caused_by
from pontryx.solver.petsc import (
    configure,
    destroy,
    ineffective,
    quasi_newton_matrix,
    unread,
)
from pontryx.solver.registry import GRADIENT_TYPES, NEWTON_TYPES
from pontryx.solver.training.base import Trainer
from pontryx.solver.training.common import check_finite

__all__ = ["PREFIX", "TAO_TRAINERS", "TaoTrainer"]

PREFIX = "pontryx_tao_"
#: the largest count PETSc takes (its PetscInt)
PETSC_INT_MAX = int(np.iinfo(PETSc.IntType).max)
#: the bound-constrained TAO type a type runs as when the controls have bounds
#: TAO types run as another one: PETSc 3.25's legacy NTL segfaults in its fallback
#: after a failed line search (seen on examples/sine.yaml); BNTL, TAO's BNK
#: implementation of the same method (a trust region safeguarded by a line search),
#: is NTL when there are no bounds.
SUBSTITUTES = {"ntl": "bntl"}
BOUNDED = {"lmvm": "blmvm", "cg": "bncg", "ntr": "bntr", "nls": "bnls", "ntl": "bntl"}
BOUND_TYPES = ("blmvm", "bqnls", "bncg", "bnls", "bntr", "bntl")

_REASONS = {
    getattr(PETSc.TAO.ConvergedReason, k): k
    for k in dir(PETSc.TAO.ConvergedReason)
    if k.isupper() and k not in ("ITERATING", "CONVERGED_ITERATING")
}
_REASONS[0] = "CONTINUE_ITERATING"


class _Hessian:
    """PETSc Python-matrix context: (H + σI) v, H the Hessian of J̃(x) = J(x/√ω):
    exact (``delta`` None: ω^{-1/2} ∇²J ω^{-1/2} v by the second-order sweep) or
    H v = (∇J̃(x+hv) − ∇J̃(x−hv))/(2h), h = δ max(‖x‖,1)/‖v‖; σ is the shift NLS
    adds to an indefinite Hessian."""

    def __init__(self, trainer, delta: float | None):
        self.trainer, self.delta = trainer, delta
        self.work = trainer.controls.copy()
        self.work_sub = self.work.subset(trainer.names)
        self.theta = None
        self.sigma = 0.0

    def set_point(self, x: PETSc.Vec) -> None:
        self.theta = x.array_r.copy()
        self.theta_norm = x.norm()
        self.sigma = 0.0

    def shift(self, mat, s: float) -> None:
        self.sigma += s

    def _gradient(self, x: np.ndarray) -> np.ndarray:
        riesz = self.trainer.riesz
        self.work_sub.set_flat(riesz.to_theta(x))
        _, g = self.trainer._value_and_gradient(self.work)
        return riesz.gradient(g.subset(self.trainer.names).to_flat())

    def _exact(self, v: np.ndarray) -> np.ndarray:
        t = self.trainer
        riesz, names = t.riesz, t.names
        self.work_sub.set_flat(riesz.to_theta(self.theta))
        direction = self.work_sub.zeros_like().set_flat(riesz.to_theta(v))
        t.sweeps += 1
        H = t.rf.hessian_action(self.work, direction)
        return riesz.gradient(H.subset(names).to_flat())

    def mult(self, mat, v: PETSc.Vec, y: PETSc.Vec) -> None:
        vnorm = v.norm()
        if vnorm == 0.0:
            y.zeroEntries()
            return
        if self.delta is None:
            y.array[:] = self._exact(v.array_r) + self.sigma * v.array_r
            return
        h = self.delta * max(self.theta_norm, 1.0) / vnorm
        vv = v.array_r
        gp = self._gradient(self.theta + h * vv)
        gm = self._gradient(self.theta - h * vv)
        y.array[:] = (gp - gm) / (2.0 * h) + self.sigma * vv


class TaoTrainer(Trainer):
    """Any PETSc TAO method on J(θ), its TAO type given by the option type."""

    name = "tao"
    tao_type: str | None = None  # None: from the option ``type``
    resumable_anywhere = False  # TAO's quasi-Newton memory restarts at chunk boundaries
    #: copies of θ (measured, benchmarks/memory.py): PETSc's L-BFGS holds about 16 + 4m
    #: (m = -tao_lmvm_mat_lmvm_hist_size, default 5), pontryx about 6 more
    memory_copies = 42
    supports_bounds = True
    defaults: ClassVar[dict] = {
        "type": "lmvm",
        "gatol": 1e-8,
        "grtol": 0.0,
        "gttol": 0.0,
        "hessian": "exact",
        "fd_step": 1e-5,
        "krylov_max_it": 50,
        "metric": "l2",
        "petsc_options": {},
    }

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        opts = self.options
        self.type = opts.get("type", self.tao_type)
        if self.type not in GRADIENT_TYPES + NEWTON_TYPES:
            raise InputError(
                f"TAO type {show(self.type)} is not supported; expected one of "
                f"{', '.join(GRADIENT_TYPES + NEWTON_TYPES)}",
                "type",
            )
        for key, ok, want in (
            ("gatol", opts["gatol"] >= 0, "≥ 0"),
            ("grtol", opts["grtol"] >= 0, "≥ 0"),
            ("gttol", opts["gttol"] >= 0, "≥ 0"),
            ("fd_step", opts["fd_step"] > 0, "> 0"),
            (
                "krylov_max_it",
                1 <= opts["krylov_max_it"] <= PETSC_INT_MAX,
                f"an integer in 1 … {PETSC_INT_MAX}",
            ),
        ):
            if not ok:
                raise InputError(f"expected {want}, got {show(opts[key])}", key)
        if opts["hessian"] not in ("exact", "fd"):
            raise InputError(f"expected exact or fd, got {show(opts['hessian'])}", "hessian")
        if self.bounds is not None and self.type not in BOUND_TYPES:
            #: the type asked for, when bounds made it run as its bounded variant
            self.requested_type, self.type = self.type, BOUNDED[self.type]
        self.type = SUBSTITUTES.get(self.type, self.type)
        self.names = tuple(rf.net.trainable)
        self.theta = controls.subset(self.names)
        self.riesz = RieszMap(rf.net, self.theta, opts["metric"])
        self.metric = self.riesz.metric
        self.comm = rf.net.space.comm
        self.x = None  # the solution Vec, alive during a solve
        self.sweeps = 0  # gradient evaluations (forward + adjoint sweeps) so far
        self.reason: str | None = None  # TAO's reason of the last solve

    # -- evaluations ----------------------------------------------------------
    def _value_and_gradient(self, controls):
        self.sweeps += 1
        return self.rf.value_and_gradient(controls)

    def _objective_gradient(self, tao, x, g):
        self.riesz.set_theta(self.theta, x.array_r)  # in place: no control-sized temporaries
        self._in_box()
        J, grad = self._value_and_gradient(self.controls)
        self.riesz.gradient_into(grad.subset(self.names), g.array)
        self._cache = (x.array_r.copy(), J, grad, dict(self.rf.last))
        if not np.isfinite(J):
            self._nonfinite = "loss"
        elif not np.isfinite(g.norm()):
            self._nonfinite = "gradient"
        return J

    def _in_box(self) -> None:
        """θ = x/√ω back in the box exactly (x's bounds are √ω lo, √ω hi: θ may be
        one ulp outside)."""
        if self.bounds is not None:
            self.bounds.project(self.theta)

    def _hessian(self, tao, x, H, P):
        H.getPythonContext().set_point(x)

    def _at_solution(self, x):
        """(J, ∇J) at the accepted iterate x, from the cache when TAO evaluated there last."""
        self.theta.set_flat(self.riesz.to_theta(x.array_r))
        self._in_box()
        xc, J, grad, last = self._cache
        same = xc.shape == x.array_r.shape and np.array_equal(xc, x.array_r)
        if self.comm.allreduce(same, op=MPI.LAND):
            self.rf.last = last
            return J, grad
        J, grad = self._value_and_gradient(self.controls)
        return J, grad

    # -- the solve ------------------------------------------------------------
    def _monitor(self, tao, start, records, good):
        if self._error is not None:
            return
        its = tao.getIterationNumber()
        try:
            x = tao.getSolution()
            J, grad = self._at_solution(x)
            self.iteration = start + its
            moved = not self.comm.allreduce(np.array_equal(good, x.array_r), op=MPI.LAND)
            good[:] = x.array_r
            # every TAO iteration is one record; a trust-region method's rejected step
            # (the radius shrunk, the controls unchanged) says so in ``accepted``
            rec = self.record(J, grad, sweeps=self.sweeps, accepted=int(moved))
            check_finite(self.iteration, rec.loss, rec.grad_norm)
            if its > 0:
                records.append(rec)
                if self.on_record is not None:
                    self.on_record(rec)
        except BaseException as e:  # stop TAO cleanly, re-raise after TaoSolve
            self._error = e
            tao.setConvergedReason(PETSc.TAO.ConvergedReason.CONVERGED_USER)

    def _make_tao(self, max_it):
        tao = PETSc.TAO().create(comm=self.comm)
        tao.setType(self.type)
        tao.setTolerances(
            gatol=self.options["gatol"], grtol=self.options["grtol"], gttol=self.options["gttol"]
        )
        if self.type in NEWTON_TYPES:
            tao.getKSP().setTolerances(max_it=self.options["krylov_max_it"])
        extra = quasi_newton_matrix(PREFIX, self.type)
        unused = configure(tao, PREFIX, self.options["petsc_options"], extra)
        self._unused = ineffective(PREFIX, self.options["petsc_options"], unused)
        tao.setMaximumIterations(max_it)
        tao.setObjectiveGradient(self._objective_gradient)
        bounds = None
        if self.bounds is not None:  # the box in the Riesz variables: √ω lo ≤ x ≤ √ω hi
            bounds, n = [], (self.theta.local_size(), PETSc.DETERMINE)
            for flat in self.bounds.flat(self.theta):
                v = PETSc.Vec().createMPI(n, comm=self.comm)
                v.array[:] = np.clip(self.riesz.to_x(flat), -PETSc.INFINITY, PETSc.INFINITY)
                bounds.append(v)
            tao.setVariableBounds(tuple(bounds))
        H = None
        if tao.getType() in NEWTON_TYPES:
            n = (self.theta.local_size(), PETSc.DETERMINE)
            delta = None if self.options["hessian"] == "exact" else self.options["fd_step"]
            H = PETSc.Mat().createPython((n, n), _Hessian(self, delta), comm=self.comm)
            H.setUp()
            tao.setHessian(self._hessian, H)
        return tao, H, bounds

    def _iterate(self, n):
        if n < 1:
            return
        start = self.iteration
        self.x = PETSc.Vec().createMPI((self.theta.local_size(), PETSc.DETERMINE), comm=self.comm)
        self.x.array[:] = self.riesz.to_x(self.theta.to_flat())
        records, good = [], self.x.array_r.copy()
        self._error, self._nonfinite = None, None
        self._cache = (np.empty(0), None, None, None)
        tao, H, bounds = self._make_tao(n)
        try:
            tao.setSolution(self.x)
            tao.setMonitor(self._monitor, args=(start, records, good))
            try:
                tao.solve()
            except PETSc.Error as e:
                failed = caused_by(e, SolveError)  # an inner solve of an evaluation
                if failed is not None and self._error is None:
                    self._error = failed
                elif self._nonfinite is None or self._error is not None:
                    raise
                else:
                    self._error = NonFiniteError(  # TAO refuses a non-finite start
                        f"training: non-finite {self._nonfinite} at iteration {start}"
                    )
            code = tao.getConvergedReason()
            self.theta.set_flat(self.riesz.to_theta(self.x.array_r))  # monitor set the iteration
            self._in_box()
        finally:
            destroy(tao, H, self.x, *(bounds or ()))
            self.x = None
        error, self._error = self._error, None
        if isinstance(error, NonFiniteError | SolveError):  # back to the last good iterate
            self.theta.set_flat(self.riesz.to_theta(good))
            self._in_box()
            self.iteration = records[-1].iteration if records else start
        if error is not None:
            raise error
        self.reason = _REASONS.get(code, str(code))
        self.converged = self.reason if code > 0 else None
        # stopped for good without converging (line-search failure, …)
        self.failed = None if code > 0 or self.reason == "DIVERGED_MAXITS" else self.reason
        yield from records

    def probe(self) -> None:
        """Configure a TAO of this method once: an unknown type or value fails now;
        an option of ``petsc_options`` that TAO did not read is an error keyed by it."""
        tao, H, bounds = self._make_tao(1)
        destroy(tao, H, *(bounds or ()))
        if self._unused:
            raise unread(PREFIX, self._unused[0], "TAO")

    def destroy(self) -> None:
        """Nothing to free: the PETSc objects of a solve never outlive :meth:`iterate`."""


def _tao_method(tao_type: str) -> type[TaoTrainer]:
    kind = "Newton-type" if tao_type in NEWTON_TYPES else "gradient-only"
    defaults = {k: v for k, v in TaoTrainer.defaults.items() if k != "type"}
    return type(
        tao_type.upper(),
        (TaoTrainer,),
        {
            "name": tao_type,
            "tao_type": tao_type,
            "defaults": defaults,
            "__doc__": f"PETSc TAO {tao_type.upper()} ({kind}) on J(θ).",
            "__module__": __name__,
        },
    )


#: method name → Trainer subclass for every supported TAO type, plus the generic "tao".
TAO_TRAINERS: dict[str, type[TaoTrainer]] = {
    "tao": TaoTrainer,
    **{t: _tao_method(t) for t in GRADIENT_TYPES + NEWTON_TYPES},
}
globals().update({cls.__name__: cls for cls in TAO_TRAINERS.values()})
