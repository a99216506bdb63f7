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
  ``ntl``, ``bnls``, ``bntr``, ``bntl``, with the matrix-free Hessian

      H(θ) v ≈ (∇J(θ + h v) − ∇J(θ − h v)) / (2h),   h = δ max(‖θ‖, 1) / ‖v‖,

  central differences of exact adjoint gradients: O(h²) accurate, two extra
  sweeps per Hessian–vector product, δ = ``fd_step`` (default 1e-5 ≈ ε^{1/3},
  which balances the O(h²) truncation against the O(ε/h) round-off).
  Why this and not Gauss–Newton: an exact Gauss–Newton product JᵀH_ℓJ v needs a
  tangent-linear (forward-mode) sweep of every scheme and kernel, which the
  solver does not have; the difference of adjoint gradients reuses the exact
  discrete adjoint, works for every scheme, kernel and loss, and is the full
  Hessian, regulariser included. The loss is non-convex, so the Hessian may be
  indefinite: the trust-region Newton–CG (``ntr``; STCG stops on negative
  curvature at the trust-region boundary) is the robust choice and the one
  tested; ``nls`` perturbs the Hessian instead.
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
finite-difference Hessian is the one of J̃. ``metric: euclidean``: the nodal
values θ themselves, as before. Records and checkpoints hold θ and ∇_θ J.

Options (``method_options``): ``gatol`` (‖∇J‖ ≤ gatol, default 1e-8; the norm
of ∇_x J, i.e. the L² norm of the gradient for ``metric: l2``), ``grtol``,
``gttol`` (TAO's relative tests, default 0: off), ``fd_step`` and
``krylov_max_it`` (Newton-type: at most this many CG iterations per Newton step,
default 50), ``petsc_options`` (a dict of further options without the prefix,
e.g. ``{"tao_ls_type": "armijo"}``). Every TAO object has the options prefix
``pontryx_tao_``, so ``-pontryx_tao_tao_ls_type armijo`` on the command line (or
in PETSc.Options) reaches it too and overrides the dict and the defaults.

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

from pontryx.solver.training.base import Trainer
from pontryx.solver.training.common import (
    NonFiniteError,
    RieszMap,
    check_finite,
    method_options,
)

__all__ = ["GRADIENT_TYPES", "NEWTON_TYPES", "TAO_TRAINERS", "TaoTrainer"]

PREFIX = "pontryx_tao_"
GRADIENT_TYPES = ("lmvm", "blmvm", "bqnls", "bncg", "cg")
NEWTON_TYPES = ("ntr", "nls", "ntl", "bnls", "bntr", "bntl")
QUASI_NEWTON = ("lmvm", "blmvm", "bqnls")  # their L-BFGS matrix defaults to lmvmdbfgs

_REASONS = {
    getattr(PETSc.TAO.ConvergedReason, k): k
    for k in dir(PETSc.TAO.ConvergedReason)
    if k.isupper() and k not in ("ITERATING", "CONVERGED_ITERATING")
}
_REASONS[0] = "CONTINUE_ITERATING"


class _FDHessian:
    """PETSc Python-matrix context: (H + σI) v with H v = (∇J(θ+hv) − ∇J(θ−hv))/(2h),
    h = δ max(‖θ‖,1)/‖v‖; σ is the shift NLS adds to an indefinite Hessian."""

    def __init__(self, trainer, delta: float):
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

    def mult(self, mat, v: PETSc.Vec, y: PETSc.Vec) -> None:
        vnorm = v.norm()
        if vnorm == 0.0:
            y.zeroEntries()
            return
        h = self.delta * max(self.theta_norm, 1.0) / vnorm
        vv = v.array_r
        gp = self._gradient(self.theta + h * vv)
        gm = self._gradient(self.theta - h * vv)
        y.array[:] = (gp - gm) / (2.0 * h) + self.sigma * vv


class TaoTrainer(Trainer):
    """Any PETSc TAO method on J(θ); see the module docstring."""

    name = "tao"
    tao_type: str | None = None  # None: from the option ``type``
    defaults: ClassVar[dict] = {
        "gatol": 1e-8,
        "grtol": 0.0,
        "gttol": 0.0,
        "fd_step": 1e-5,
        "krylov_max_it": 50,
        "metric": "l2",
        "petsc_options": {},
    }

    def __init__(self, rf, controls, **options):
        defaults = dict(self.defaults)
        if self.tao_type is None:
            defaults["type"] = "lmvm"
        opts = method_options(self.name, defaults, options)
        super().__init__(rf, controls, **opts)
        self.type = opts.get("type", self.tao_type)
        if self.type not in GRADIENT_TYPES + NEWTON_TYPES:
            raise ValueError(
                f"training.type: TAO type {self.type!r} is not supported; expected one of "
                f"{list(GRADIENT_TYPES + NEWTON_TYPES)}"
            )
        if not opts["gatol"] >= 0 or not opts["fd_step"] > 0 or not opts["krylov_max_it"] >= 1:
            raise ValueError("training.gatol/fd_step/krylov_max_it: expected ≥ 0, > 0, ≥ 1")
        self.names = tuple(rf.net.trainable)
        self.theta = controls.subset(self.names)
        self.riesz = RieszMap(rf.net, self.theta, opts["metric"])
        self.comm = rf.net.space.comm
        self.x = None  # the solution Vec, alive during a solve
        self.sweeps = 0  # gradient evaluations (forward + adjoint sweeps) so far
        self.converged: str | None = None  # TAO's reason if the last solve converged
        self.reason: str | None = None  # TAO's reason of the last solve
        self.on_record = None  # called with each Record inside TAO's monitor (live)

    # -- evaluations ----------------------------------------------------------
    def _value_and_gradient(self, controls):
        self.sweeps += 1
        return self.rf.value_and_gradient(controls)

    def _objective_gradient(self, tao, x, g):
        self.theta.set_flat(self.riesz.to_theta(x.array_r))
        J, grad = self._value_and_gradient(self.controls)
        g.array[:] = self.riesz.gradient(grad.subset(self.names).to_flat())
        self._cache = (x.array_r.copy(), J, grad, dict(self.rf.last))
        if not np.isfinite(J):
            self._nonfinite = "loss"
        elif not np.isfinite(g.norm()):
            self._nonfinite = "gradient"
        return J

    def _hessian(self, tao, x, H, P):
        H.getPythonContext().set_point(x)

    def _at_solution(self, x):
        """(J, ∇J) at the accepted iterate x, from the cache when TAO evaluated there last."""
        self.theta.set_flat(self.riesz.to_theta(x.array_r))
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
            rec = self.record(J, grad, sweeps=self.sweeps)
            check_finite(self.iteration, rec.loss, rec.grad_norm)
            moved = not self.comm.allreduce(np.array_equal(good, x.array_r), op=MPI.LAND)
            good[:] = x.array_r
            if its > 0 and moved:  # once per accepted step (trust-region methods
                records.append(rec)  # also monitor rejected ones)
                if self.on_record is not None:
                    self.on_record(rec)
        except BaseException as e:  # stop TAO cleanly, re-raise after TaoSolve
            self._error = e
            tao.setConvergedReason(PETSc.TAO.ConvergedReason.CONVERGED_USER)

    def _make_tao(self, max_it):
        tao = PETSc.TAO().create(comm=self.comm)
        tao.setOptionsPrefix(PREFIX)
        tao.setType(self.type)
        tao.setTolerances(
            gatol=self.options["gatol"], grtol=self.options["grtol"], gttol=self.options["gttol"]
        )
        newton = self.type in NEWTON_TYPES
        if newton:
            tao.getKSP().setTolerances(max_it=self.options["krylov_max_it"])
        db = PETSc.Options()
        extra = {PREFIX + k: v for k, v in self.options["petsc_options"].items()}
        if self.type in QUASI_NEWTON:  # PETSc gives lmvm's matrix the fixed prefix tao_lmvm_
            key = (
                "tao_lmvm_mat_type" if self.type == "lmvm" else f"{PREFIX}tao_{self.type}_mat_type"
            )
            extra = {key: "lmvmdbfgs", **extra}
        user = {k for k in extra if db.hasName(k)}  # the command line wins
        for k, v in extra.items():
            if k not in user:
                db[k] = v
        try:
            tao.setFromOptions()
        finally:
            for k in extra:
                if k not in user:
                    db.delValue(k)
        tao.setMaximumIterations(max_it)
        tao.setObjectiveGradient(self._objective_gradient)
        H = None
        if tao.getType() in NEWTON_TYPES:
            n = (self.theta.local_size(), PETSc.DETERMINE)
            H = PETSc.Mat().createPython(
                (n, n), _FDHessian(self, self.options["fd_step"]), comm=self.comm
            )
            H.setUp()
            tao.setHessian(self._hessian, H)
        return tao, H

    def _iterate(self, n):
        if n < 1:
            return
        start = self.iteration
        self.x = PETSc.Vec().createMPI((self.theta.local_size(), PETSc.DETERMINE), comm=self.comm)
        self.x.array[:] = self.riesz.to_x(self.theta.to_flat())
        records, good = [], self.x.array_r.copy()
        self._error, self._nonfinite = None, None
        self._cache = (np.empty(0), None, None, None)
        tao, H = self._make_tao(n)
        try:
            tao.setSolution(self.x)
            tao.setMonitor(self._monitor, args=(start, records, good))
            try:
                tao.solve()
            except PETSc.Error:
                if self._nonfinite is None or self._error is not None:
                    raise
                self._error = NonFiniteError(  # TAO refuses a non-finite start
                    f"training: non-finite {self._nonfinite} at iteration {start}"
                )
            code = tao.getConvergedReason()
            self.theta.set_flat(self.riesz.to_theta(self.x.array_r))  # monitor set the iteration
        finally:
            self.destroy(tao, H)
        error, self._error = self._error, None
        if isinstance(error, NonFiniteError):  # back to the last finite iterate
            self.theta.set_flat(self.riesz.to_theta(good))
            self.iteration = records[-1].iteration if records else start
        if error is not None:
            raise error
        self.reason = _REASONS.get(code, str(code))
        self.converged = self.reason if code > 0 else None
        yield from records

    @property
    def failed(self) -> str | None:
        """TAO's reason if the last solve stopped for good without converging
        (line-search failure, …); ``None`` after convergence or DIVERGED_MAXITS."""
        if self.reason is None or self.converged or self.reason == "DIVERGED_MAXITS":
            return None
        return self.reason

    def destroy(self, *objects) -> None:
        """Free the PETSc objects of a solve (none outlive :meth:`iterate`)."""
        for obj in (*objects, self.x):
            if obj is not None:
                obj.destroy()
        self.x = None


def _tao_method(tao_type: str) -> type[TaoTrainer]:
    kind = "Newton-type (FD Hessian)" if tao_type in NEWTON_TYPES else "gradient-only"
    return type(
        tao_type.upper(),
        (TaoTrainer,),
        {
            "name": tao_type,
            "tao_type": tao_type,
            "__doc__": f"PETSc TAO {tao_type.upper()} ({kind}) on J(θ).",
            "__module__": __name__,
        },
    )


#: method name → Trainer subclass for every supported TAO type, plus the generic "tao".
TAO_TRAINERS: dict[str, type[TaoTrainer]] = {
    "tao": TaoTrainer,
    **{t: _tao_method(t) for t in GRADIENT_TYPES + NEWTON_TYPES},
}
