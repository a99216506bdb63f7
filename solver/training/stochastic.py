"""Stochastic gradient methods on the reduced functional (DESIGN.md §3).

One iteration = one step on one minibatch B_k:

* ``sgd``       v ← μ v + ∇J_B(θ),  θ ← θ − η v          (heavy ball; μ = ``momentum``)
* ``adam``      m ← β₁ m + (1−β₁) g,  v ← β₂ v + (1−β₂) g²,
                θ ← θ − η m̂ / (√v̂ + ε),  m̂ = m/(1−β₁ᵏ), v̂ = v/(1−β₂ᵏ)   (Kingma–Ba 2015)
* ``langevin``  θ ← θ − η ∇J_B(θ) + √(2 η T_k) ξ_k,  ξ_k ~ N(0, I)
                (Euler–Maruyama for dθ = −∇J dt + √(2T) dW, whose Fokker–Planck
                equation has the Gibbs density ∝ exp(−J/T) as equilibrium; SGD
                is its T = 0 limit), annealed temperature
                T_k = T₀ · decay^k (``schedule: exponential``) or
                T_k = T₀ / (1 + k/τ) (``schedule: inverse``).

Options: ``learning_rate`` η (step k uses η_k = η · ``lr_decay``^k, k = 0, 1, …;
``lr_decay`` = 1: constant), ``batch_size`` (global minibatch size; ``None`` =
full batch, i.e. plain gradient descent), ``seed``, ``metric``, and per method
``momentum``; ``beta1``, ``beta2``, ``epsilon``; ``temperature`` T₀,
``schedule``, ``decay``, ``tau``.

Metric. By default (``metric: l2``) the updates above act on the Riesz
variables x = √ω θ of the L²(M_L) inner product of the regulariser (ω:
kernel.weights() for layer controls, m for b, E and C, 1 for d;
:class:`~.common.RieszMap`) with g = ∇_x J = ω^{-1/2} ∇_θ J: a gradient step is
θ ← θ − η ω⁻¹ ∇_θ J (the L² gradient, mesh independent, Schwedes et al. 2017),
Langevin's noise is white in L² (θ gets ω^{-1/2} ξ), Adam's moments are those of
∇_x J. ``metric: euclidean``: θ and ∇_θ J themselves (the nodal values; the
step sizes then depend on the mesh, W's and b's gradients differ in scale by
≈ N). Checkpoints hold θ; the moments are in the variables of the metric.

Bounds (``training.bounds``): every step is projected onto the box,
θ ← P_Θ(θ − η …) (projected SGD; for Langevin a projected Euler–Maruyama step,
whose stationary law is the Gibbs density restricted to the box only in the
limit η → 0).

Discrete weights (``sgd``, ``adam``: option ``weights: ternary | binary``, default
``real``): the straight-through estimator. The optimiser moves a latent real
kernel W̃; the network's kernel is its quantisation Q(W̃) = c·T (TWN's
threshold for ternary, sign with the L²(M_L) mean of |W̃| for binary:
:func:`~pontryx.solver.training.discrete.twn`), J and ∇J are evaluated there
and the step is applied to W̃ as if ∂Q/∂W̃ = I (BinaryConnect, Courbariaux et
al. 2015; ternary weight networks, Li, Zhang & Liu 2016). The latent kernel is
in the checkpoint; the record's extra has ``sparsity`` (ternary: the fraction
of zero codes). The baseline of :mod:`~pontryx.solver.training.discrete`.

Minibatches: :class:`~pontryx.solver.data.sampler.Minibatches` (epochs of a
seeded permutation of the global samples; the same batches on any layout).

Noise in depth (``model.noise``): each step sees the M paths of every sample of
its minibatch; with ``resample`` the paths of iteration k are those of epoch k
(fresh every step, an unbiased stochastic gradient of E[J]), otherwise the run's
fixed paths (:mod:`pontryx.solver.model.noise`).

Noise. ξ_k is :func:`~pontryx.solver.model.random.canonical_normal`: drawn on
every rank in the canonical dof order, layer by layer, so a run gives the same
result on any number of width ranks (every rank draws one layer's full array at
a time: O(N²) normals per layer for dense kernels).

The record of iteration k reports the (minibatch) loss, metric, gradient and
stationarity max_n ‖∂_θ Hⁿ‖ at θ_{k−1}, the point the step was taken from.
:meth:`state` holds the controls, the moments, the iteration, the epoch's
permutation and the generator's state, so a resumed run continues bit-for-bit.
A non-finite loss or gradient at θ_{k−1} raises :class:`NonFiniteError` with
the controls back at θ_{k−2}, the last point where both were finite.
"""

from __future__ import annotations

import math
import time
from typing import ClassVar

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.adjoint.riesz import RieszMap
from pontryx.solver.data.sampler import Minibatches
from pontryx.solver.errors import NonFiniteError
from pontryx.solver.model.controls import Controls
from pontryx.solver.model.random import canonical_normal
from pontryx.solver.training.base import Record, Trainer
from pontryx.solver.training.common import check_finite
from pontryx.solver.training.discrete import discrete_set

__all__ = ["SGD", "Adam", "Langevin", "StochasticTrainer"]


def _number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class StochasticTrainer(Trainer):
    """Minibatch loop, generator and checkpointing; subclasses implement :meth:`step`."""

    defaults: ClassVar[dict] = {
        "learning_rate": 1e-2,
        "lr_decay": 1.0,
        "batch_size": None,
        "seed": 0,
        "metric": "l2",
    }
    memory_copies = 7  # θ, ∇J, x, the flat copies, two moments
    supports_bounds = True

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        opts = self.options
        if not _number(opts["learning_rate"]) or not opts["learning_rate"] > 0:
            raise InputError(f"expected η > 0, got {show(opts['learning_rate'])}", "learning_rate")
        B = opts["batch_size"]
        if B is not None and (isinstance(B, bool) or not isinstance(B, int) or B < 1):
            raise InputError(f"expected a positive integer or null, got {show(B)}", "batch_size")
        if isinstance(opts["seed"], bool) or not isinstance(opts["seed"], int) or opts["seed"] < 0:
            raise InputError(f"expected an integer ≥ 0, got {show(opts['seed'])}", "seed")
        d = opts["lr_decay"]
        if not _number(d) or not 0 < d <= 1:
            raise InputError(f"expected 0 < decay ≤ 1, got {show(d)}", "lr_decay")
        self.lr = float(opts["learning_rate"])
        self.batch_size = None if B is None or B >= rf.S else int(B)
        self.names = tuple(rf.net.trainable)
        self.theta = controls.subset(self.names)
        self.riesz = RieszMap(rf.net, self.theta, opts["metric"])
        self.metric = self.riesz.metric
        self.rng = np.random.default_rng(int(opts["seed"]))  # the noise stream
        batch = self.batch_size or rf.S
        self.batches = Minibatches.for_functional(rf, batch, int(opts["seed"]))
        self.batches.rng = self.rng  # one generator: batches and noise draw from it in turn
        self.moments = {}  # name → flat local array (optimiser state)
        self._good = None  # θ at the last finite evaluation (flat, local)
        # discrete kernel values (straight-through): the optimiser moves the point
        # ``self.point``, whose kernel controls are the latent real ``self.latent``
        # (the other controls are θ's own arrays); θ's kernel is their quantisation
        self.discrete = discrete_set(rf.net, opts, self.bounds)
        self.latent = self.point = self.theta
        if self.discrete is not None:
            self.latent = Controls(
                {k: self.theta[k].copy() for k in self.discrete.names}, controls.comm
            )
            self.point = Controls(
                {k: self.latent.get(k, v) for k, v in self.theta.items()}, controls.comm
            )
            self._quantise()

    @classmethod
    def copies(cls, options: dict) -> float:
        return cls.memory_copies + (options.get("weights", "real") != "real")

    def _quantise(self) -> None:
        """θ's kernel = the TWN / binary quantisation of the latent kernel."""
        self.discrete.quantise(self.latent, self.theta, rule="twn")

    # -- minibatches ------------------------------------------------------------
    def minibatch(self):
        """The reduced functional on this iteration's minibatch (see the module docstring)."""
        if self.batch_size is None:
            return self.rf
        return self.rf.batch(self.batches.local(self.iteration))

    # -- the loop ---------------------------------------------------------------
    @property
    def eta(self) -> float:
        """The learning rate of this step, η_k = η · lr_decay^k (k = 0 first)."""
        return self.lr * float(self.options["lr_decay"]) ** self.iteration

    def step(self, theta: np.ndarray, g: np.ndarray) -> dict:
        """Update the flat local x = √ω θ in place from the gradient g = ∇_x J
        (θ and ∇_θ J for ``metric: euclidean``); return the extras."""
        raise NotImplementedError

    def _iterate(self, n):
        for _ in range(n):
            self.rf.redraw(self.iteration)  # model.noise.resample: this step's noise paths
            rf = self.minibatch()
            J, grad = rf.value_and_gradient(self.controls)
            per_layer = rf.layer_stationarity(grad)
            rec = Record(
                iteration=self.iteration + 1,
                loss=float(J),
                misfit=float(rf.last["misfit"]),
                train_metric=float(rf.metric()),
                grad_norm=self.gradient_norm(grad),
                stationarity=float(np.max(per_layer)),
                layers={"stationarity": per_layer.tolist()},
            )
            try:
                check_finite(rec.iteration, rec.loss, rec.grad_norm)
            except NonFiniteError:  # back to θ_{k−2}, the last point with finite J and ∇J
                if self._good is not None:
                    self.point.set_flat(self._good)
                    if self.discrete is not None:
                        self._quantise()
                    self.iteration -= 1
                raise
            self._good = self.point.to_flat()
            x = self.riesz.to_x(self._good)
            rec.extra = self.step(x, self.riesz.gradient(grad.subset(self.names).to_flat()))
            self.point.set_flat(self.riesz.to_theta(x))
            if self.bounds is not None:  # projected step: θ ← P_Θ(θ − η …)
                self.bounds.project(self.point)
            if self.discrete is not None:  # straight through: ∇J at Q(latent) moved the latent
                self._quantise()
                if self.discrete.kind == "ternary":
                    rec.extra["sparsity"] = self.discrete.sparsity(self.theta)
            self.iteration += 1
            rec.time = time.perf_counter() - self._t0
            yield rec

    # -- checkpointing ------------------------------------------------------------
    def state(self):
        out = super().state()
        out.update({f"moments/{k}": v.copy() for k, v in self.moments.items()})
        out.update(self.batches.state())  # "perm" and "rng" (the one generator)
        if self.discrete is not None:
            out.update({f"latent/{k}": v.copy() for k, v in self.latent.items()})
        return out

    def state_kinds(self):
        kinds = super().state_kinds()
        kinds.update({f"moments/{k}": ("flat", self.names) for k in self.moments})
        if self.discrete is not None:
            kinds.update({f"latent/{k}": ("control", k) for k in self.latent})
        return kinds

    def restore(self, state, controls_only=False):
        super().restore(state)
        if self.discrete is not None:  # the latent kernel; from a real run: θ's own
            for k, v in self.latent.items():
                v[...] = state.get(f"latent/{k}", self.theta[k])
            self._quantise()
        if controls_only:
            return
        self.moments = {k[8:]: v.copy() for k, v in state.items() if k.startswith("moments/")}
        self.batches.restore(state)


class SGD(StochasticTrainer):
    """Minibatch SGD with optional heavy-ball momentum μ: v ← μ v + g, θ ← θ − η v.

    Default η = 0.1 in the L² metric: on ellipses (unit_square n = 8, 8 layers,
    α = 1e-4, 300 full-batch steps) J reaches 0.677 / 0.636 / 0.526 / 0.442 for
    η = 0.01 / 0.03 / 0.1 / 0.3 (minibatches of 100 alike); η = 1 overshoots. 0.1
    leaves room for minibatch noise."""

    name = "sgd"
    defaults: ClassVar[dict] = {
        **StochasticTrainer.defaults,
        "learning_rate": 0.1,
        "momentum": 0.0,
        "weights": "real",
    }

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        self.mu = float(self.options["momentum"])
        if not 0 <= self.mu < 1:
            raise InputError(f"expected 0 ≤ μ < 1, got {self.mu}", "momentum")

    def step(self, theta, g):
        if self.mu:
            v = self.moments.setdefault("v", np.zeros_like(g))
            v *= self.mu
            v += g
            g = v
        eta = self.eta
        theta -= eta * g
        return {"learning_rate": eta}


class Adam(StochasticTrainer):
    """Adam (Kingma & Ba, ICLR 2015) with bias-corrected moments.

    Default η = 1e-2, not Kingma–Ba's 1e-3. Adam's step is ≈ η per coordinate of
    the metric's variables (x = √ω θ for ``metric: l2``, the nodal values for
    ``euclidean``). Measured on ellipses (dense kernel, unit_square n = 8,
    8 layers, α = 1e-4, full batch, 1000 samples), first check ≥ 99 % test
    accuracy (every 30 steps): metric l2 with η = 1e-2 after 60 steps, 3e-3 after
    90, 1e-3 after 120; metric euclidean with η = 1e-2 after about 500 (η = 1e-3
    stalls at 81 % after 1200)."""

    name = "adam"
    defaults: ClassVar[dict] = {
        **StochasticTrainer.defaults,
        "learning_rate": 1e-2,
        "beta1": 0.9,
        "beta2": 0.999,
        "epsilon": 1e-8,
        "weights": "real",
    }

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        o = self.options
        self.b1, self.b2, self.eps = float(o["beta1"]), float(o["beta2"]), float(o["epsilon"])
        for key, ok, want in (
            ("beta1", 0 <= self.b1 < 1, "0 ≤ β₁ < 1"),
            ("beta2", 0 <= self.b2 < 1, "0 ≤ β₂ < 1"),
            ("epsilon", self.eps > 0, "ε > 0"),
        ):
            if not ok:
                raise InputError(f"expected {want}, got {show(o[key])}", key)

    def step(self, theta, g):
        k = self.iteration + 1
        m = self.moments.setdefault("m", np.zeros_like(g))
        v = self.moments.setdefault("v", np.zeros_like(g))
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * g * g
        mhat = m / (1 - self.b1**k)
        vhat = v / (1 - self.b2**k)
        eta = self.eta
        theta -= eta * mhat / (np.sqrt(vhat) + self.eps)
        return {"learning_rate": eta}


class Langevin(StochasticTrainer):
    """Stochastic gradient Langevin dynamics with an annealed temperature."""

    name = "langevin"
    defaults: ClassVar[dict] = {
        **StochasticTrainer.defaults,
        "temperature": 1e-4,
        "schedule": "exponential",
        "decay": 0.99,
        "tau": 100.0,
    }

    def __init__(self, rf, controls, **options):
        super().__init__(rf, controls, **options)
        o = self.options
        if o["schedule"] not in ("exponential", "inverse"):
            raise InputError(
                f"unknown schedule {show(o['schedule'])}; expected exponential or inverse",
                "schedule",
            )
        for key, ok, want in (
            ("temperature", o["temperature"] >= 0, "T₀ ≥ 0"),
            ("decay", 0 < o["decay"] <= 1, "0 < decay ≤ 1"),
            ("tau", o["tau"] > 0, "τ > 0"),
        ):
            if not ok:
                raise InputError(f"expected {want}, got {show(o[key])}", key)

    def temperature(self, k: int) -> float:
        """T_k = T₀ decay^k or T₀ / (1 + k/τ)."""
        o = self.options
        if o["schedule"] == "exponential":
            return o["temperature"] * o["decay"] ** k
        return o["temperature"] / (1 + k / o["tau"])

    def step(self, theta, g):
        T = self.temperature(self.iteration)
        xi = canonical_normal(self.rng, self.rf.net, self.theta)
        eta = self.eta
        theta -= eta * g
        theta += math.sqrt(2 * eta * T) * xi.to_flat()
        return {"learning_rate": eta, "temperature": T}
