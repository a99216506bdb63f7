"""``pontryx train`` of a configuration with an ``inverse:`` section: the network as
the prior of a PDE inverse problem (:mod:`pontryx.solver.inverse`).

:func:`build_inverse` builds, from a validated configuration and before anything
is written, the physical mesh (``inverse.domain``), the state equation, the
observations (a file, or synthetic from ``inverse.truth``), the network of
``model:`` on its width mesh (``mesh:``) with n_in = gdim inputs and one output,
log κ, and the chained functional; every error is one line keyed by its YAML
path. Its training run is :class:`~.inverse_run.InverseRun`.

What the per-iteration columns mean here: ``misfit`` is Φ + R (the data misfit
and the H¹ term on log κ), ``train_metric`` the discrepancy √(Σ r_i²/M) (1 at the
noise level), ``test_metric`` the relative L² error of κ against κ† (when κ† is
given; every ``training.test_every`` iterations).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mpi4py import MPI

import numpy as np

from pontryx.meshes.errors import InputError
from pontryx.meshes.factory import create_mesh, mesh_summary
from pontryx.solver.app import petsc_options
from pontryx.solver.app.network import build_network, section, use_blas
from pontryx.solver.config.schema import petsc_key_paths
from pontryx.solver.inverse.expressions import expression
from pontryx.solver.inverse.functional import InverseFunctional, KappaError
from pontryx.solver.inverse.misfit import ReducedMisfit, relative_error
from pontryx.solver.inverse.observations import (
    NodalObservations,
    Observations,
    PointObservations,
    canonical_index,
    check_truth,
    random_points,
    read_observations,
    synthetic,
    true_values,
)
from pontryx.solver.inverse.pde import PREFIX, EllipticPDE
from pontryx.solver.layout import Layout
from pontryx.solver.model.network import ContinuumNetwork
from pontryx.solver.model.width import WidthSpace
from pontryx.solver.registry import NEWTON_TYPES

__all__ = ["InverseProblem", "build_inverse"]


@dataclass
class InverseProblem:
    """What ``pontryx train``/``validate``/``check-gradient``/``evaluate`` need for
    an inverse run (the attributes they share with :class:`~.problem.Problem`)."""

    config: object
    layout: Layout
    space: WidthSpace  # the network's width space
    net: ContinuumNetwork
    controls: object
    rf: InverseFunctional
    rf_test: KappaError | None
    physical: WidthSpace  # V_h on Ω_phys (canonical order, lumped mass, output)
    pde: EllipticPDE
    observations: Observations
    truth: object = None  # κ† (an Expression) or None
    notes: list = field(default_factory=list)
    noise = None
    dataset = None
    metric_name = "discrepancy"
    test_label = "κ err"

    def describe(self) -> list[str]:
        inv, m, o = self.config.inverse, self.config.model, self.observations
        obs = inv.observations
        where = (
            "every dof (field)"
            if obs.kind == "field"
            else f"{o.count} points" + (f" from {Path(obs.file).name}" if obs.file else "")
        )
        data = (
            f"synthetic from κ† = {inv.truth}, {obs.refine} refinement(s)"
            if obs.file is None
            else "from the file" + (f"; κ† = {inv.truth} for the error" if inv.truth else "")
        )
        sp, ph = self.space, self.physical
        return [
            f"layout: {self.layout.describe()}",
            f"Ω_phys: {mesh_summary(ph.mesh)}; P{ph.degree}, {ph.N} dofs (the network's samples)",
            f"pde:    −∇·(κ∇u) = {inv.pde.source}, u = {inv.pde.g_D} on Γ_D = {inv.pde.dirichlet}"
            + (f", κ∂ₙu = {inv.pde.g_N} on the rest" if inv.pde.dirichlet != "all" else ""),
            f"data:   u at {where}, {data}; noise η = {inv.noise:g} (σ = {o.sigma:.3e})",
            f"prior:  log κ = network(x) on {mesh_summary(sp.mesh)}, P{sp.degree}, N = {sp.N}; "
            f"{m.kernel.type} kernel, {m.activation}, {m.scheme}, T = {m.T:g}, {m.layers} "
            f"layers; κ₀ = {inv.initial:g}; H¹ term γ = {inv.regularisation.gamma:g}, "
            f"δ = {inv.regularisation.delta:g}",
            *self.notes,
        ]

    def method_options(self, method: str, options: dict) -> dict:
        """The TAO methods search their lines by Armijo backtracking unless a line
        search is given (``training.options.petsc_options.tao_ls_type`` or the
        PETSc option ``-pontryx_tao_tao_ls_type``): TAO's default Moré–Thuente search
        gives up at a first trial point where κ = exp(m) overflows (j = +∞, see
        :meth:`~pontryx.solver.inverse.misfit.ReducedMisfit.value_and_gradient`),
        which the first, unscaled quasi-Newton step of a misfit with small σ reaches;
        Armijo halves the step instead. Not ``lbfgs`` (pontryx's own) nor ``ntr``
        (a trust region: it reads no line-search option)."""
        from petsc4py import PETSc

        from pontryx.solver.training.tao import PREFIX as TAO_PREFIX

        tao_type = options.get("type", "lmvm") if method == "tao" else method
        if tao_type in ("lbfgs", "ntr"):
            return options
        given = dict(options.get("petsc_options") or {})
        user = PETSc.Options().getAll()  # (hasName would mark the user's option as read)
        if "tao_ls_type" not in given and f"{TAO_PREFIX}tao_ls_type" not in user:
            given["tao_ls_type"] = "armijo"
        return {**options, "petsc_options": given}

    def evaluate(self, controls) -> dict:
        """Misfit, discrepancy and κ error at ``controls`` (collective)."""
        J = self.rf(controls)
        last = self.rf.last
        out = {
            "train": {
                "loss": float(J),
                "misfit": float(last["phi"]),
                "regulariser_h1": float(last["regulariser"]),
                "discrepancy": self.rf.metric(last["stat"]),
                "samples": int(self.observations.count),
            },
        }
        if self.rf_test is not None:
            out["kappa_error"] = float(self.rf_test(controls))
        return out

    def destroy(self) -> None:
        self.pde.destroy()
        self.net.destroy()
        self.space.destroy()
        self.physical.destroy()
        self.layout.destroy()
        petsc_options.remove(self.config.petsc_options)


def _operator(inv, pde, truth):
    """(B, data): the observation operator of ``inverse.observations`` with the
    observed values (a file) or the noise-free values u†(x_i) and the indices the
    noise is drawn by (synthetic); errors keyed by their YAML path."""
    o, V, comm = inv.observations, pde.V, pde.comm
    gdim = pde.mesh.geometry.dim
    with section("inverse.observations"):
        if o.file is not None:
            points, values = read_observations(o.file, gdim)
            try:
                B = PointObservations(V, points)
            except InputError as e:
                raise InputError(e.message, "file") from None
            if float(np.max(np.abs(values))) == 0:
                raise InputError("every observed value is 0: σ = η max|d| would vanish", "file")
            return B, {"values": values}
        if o.kind == "field":
            B = NodalObservations(V)
            points = np.concatenate(comm.allgather(B.points))
            order = canonical_index(points)[B.mine]
        else:
            points = random_points(pde.mesh, o.points, o.seed)
            B, order = PointObservations(V, points), None
    options = {k: getattr(inv.pde, k) for k in ("source", "dirichlet", "g_D", "g_N")}
    try:
        clean = true_values(V, truth, points, o.refine, **options)[B.mine]
    except InputError as e:  # keyed by true_values' arguments: refine, truth, the PDE's
        raise e.under(_SYNTHETIC_SECTIONS.get(e.key, "inverse.pde")) from None
    return B, {"clean": clean, "order": order}


#: the sections of the keys of :func:`true_values`' errors other than the PDE's
_SYNTHETIC_SECTIONS = {"refine": "inverse.observations", "truth": "inverse"}


def _observations(inv, B, data) -> Observations:
    """Observations with σ = η max|u†(x_i)| (synthetic) or η max|d_i| (a file)."""
    if "values" in data:
        values = data["values"]
        return Observations(B, values[B.mine], inv.noise * float(np.max(np.abs(values))))
    return synthetic(B, data["clean"], inv.noise, inv.observations.seed, data["order"])


def build_inverse(config, comm: MPI.Comm) -> InverseProblem:
    """Everything an inverse run needs (collective; nothing written). On failure
    the ``petsc:`` options are removed again."""
    try:
        return _build(config, comm)
    except BaseException:
        petsc_options.remove(config.petsc_options)
        raise


def _build(config, comm: MPI.Comm) -> InverseProblem:
    c, inv, t = config, config.inverse, config.training
    cls_newton = t.method in NEWTON_TYPES or (
        t.method == "tao" and t.options.get("type") in NEWTON_TYPES
    )
    if cls_newton and t.options.get("hessian", "exact") == "exact":
        raise InputError(
            "an inverse run has no exact Hessian action; use hessian: fd (differences of "
            "adjoint gradients) or a gradient method",
            "training.options.hessian",
        )
    with section("parallel"):
        use_blas(c.parallel.blas)
        layout = Layout.create(comm, *c.parallel.sizes(comm.size), depth=c.parallel.depth)
    if layout.n_depth > 1:
        raise InputError("an inverse run has no depth axis", "parallel.depth")
    petsc_options.apply(c.petsc_options, petsc_key_paths(c.petsc))
    with section("inverse.domain"):
        phys_mesh = create_mesh(inv.domain, comm)
    gdim = phys_mesh.geometry.dim
    physical = WidthSpace(phys_mesh, degree=inv.degree)
    _ = physical.canonical  # collective: made now, so later gathers to rank 0 need no peer
    truth = None
    with section("inverse"):
        if inv.truth is not None:
            truth = expression(inv.truth, gdim, "truth")
            check_truth(truth, truth(physical.x.T), physical.x, comm)
    with petsc_options.errors(f"the PDE solver (prefix {PREFIX})"), section("inverse.pde"):
        pde = EllipticPDE(
            physical.V,
            source=inv.pde.source,
            dirichlet=inv.pde.dirichlet,
            g_D=inv.pde.g_D,
            g_N=inv.pde.g_N,
        )
    try:
        B, data = _operator(inv, pde, truth)
        with section("inverse"):
            observations = _observations(inv, B, data)
        with section("inverse.regularisation"):
            misfit = ReducedMisfit(
                pde,
                observations,
                inv.regularisation.gamma,
                inv.regularisation.delta,
                m0=float(np.log(inv.initial)),
            )
        space, net, controls = build_network(c, layout, gdim, 1)
        controls["d"][:] = np.log(inv.initial)  # log κ starts near log κ₀
        with section("training"):
            rf = InverseFunctional(
                net,
                misfit,
                layout,
                alpha=t.alpha,
                beta=t.beta,
                gamma=t.gamma,
                checkpoint=t.checkpointing,
            )
    except BaseException:
        pde.destroy()
        raise
    rf_test = KappaError(rf, relative_error(pde, truth)) if truth is not None else None
    return InverseProblem(
        c, layout, space, net, controls, rf, rf_test, physical, pde, observations, truth
    )
