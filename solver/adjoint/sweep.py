"""The one sweep through depth: forward evaluation, the discrete adjoint, the
stored trajectory, the tangent-linear (forward-mode) sweep and the second-order
adjoint, all on one integration loop with the storage strategy as an object.

For controls θ and inputs X (n_in × S, this rank's samples), a forward sweep runs
U⁰ = E X, U^{n+1} = gⁿ(Uⁿ, θⁿ) (the depth scheme's step), Ŷ = Cᵀ M_L U^{N_t} + d 1ᵀ.
The backward sweep starts from Λ^{N_t} = M_L C ∂ℓ/∂Ŷ and runs each scheme's
adjoint step (DESIGN.md §2) down to Λ⁰, accumulating ∂J/∂θⁿ; then
∂J/∂E = Λ⁰ Xᵀ, ∂J/∂C = M_L U^{N_t} (∂ℓ/∂Ŷ)ᵀ, ∂J/∂d = (∂ℓ/∂Ŷ) 1.

Second order ("forward over reverse"): the tangent sweep carries dUⁿ along
dθ (dU⁰ = dE X, dU^{n+1} = ∂_U gⁿ dUⁿ + ∂_θ gⁿ dθⁿ, dŶ = dCᵀ M_L U + Cᵀ M_L dU
+ dd), the terminal costate's derivative is dΛ^{N_t} = M_L (dC G + C H_ℓ dŶ)
(H_ℓ the loss Hessian), and each scheme's ``adjoint2`` differentiates the adjoint
step along the tangent; the derivative of the gradient is the Hessian action
∇²J_data · dθ (the regulariser's part is added by the reduced functional).

Noise in depth (:mod:`pontryx.solver.model.noise`): every forward step adds the
layer's increment g ΔWⁿ of the sweep's (sample, path) columns; the backward,
tangent and second-order lines do not change (additive noise), so the same
sweeps give the pathwise gradient and Hessian action with the increments fixed.

Storage of the layer records for the backward sweep (like diffrax's
``RecursiveCheckpointAdjoint``/``BacksolveAdjoint``, chosen by the user as
``training.checkpointing``):

* :class:`Full`     — every layer's record is stored (O(N_t) states; fastest);
* :class:`Every`    — the state entering every k-th layer is stored and each
  segment recomputed from it during the backward sweep (O(N_t/k + k) states;
  ``"sqrt"``: k = ⌈√N_t⌉, O(√N_t)). The recomputation repeats the same
  operations, so the gradient is bit-identical to full storage;
* :class:`Reverse`  — reversible schemes (Verlet) recompute each state backwards
  from the next one: O(1) states, equal to full storage up to round-off (the
  tangent and second-order sweeps fall back to √N_t checkpoints here).

The gradient sweep takes its records and temporaries from the network's
:class:`~pontryx.solver.model.workspace.Workspace` and gives each back as soon as
it is consumed, so a training run's gradients reuse one set of arrays. Its records
are made for the adjoint step alone (``record="adjoint"``, see
:mod:`pontryx.solver.model.schemes.base`), and schemes that can (``assigns``) write
each layer's gradient instead of adding it to a zero-filled array; trajectories
keep full records.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.model.controls import Controls
from pontryx.solver.model.workspace import HEAP

__all__ = [
    "Every",
    "Full",
    "Reverse",
    "Storage",
    "Sweep",
    "SweepResult",
    "storage",
]


def _arrays(obj) -> Iterator[np.ndarray]:
    """The arrays in a (nested) tuple of records or states."""
    if isinstance(obj, tuple | list):
        for item in obj:
            yield from _arrays(item)
    elif obj is not None:
        yield obj


def _give_back(ws, objects, keep=()) -> None:
    """Give the arrays of ``objects`` back to the workspace, except those in ``keep``."""
    held = {id(a) for a in _arrays(keep)}
    ws.give(*(a for a in _arrays(objects) if id(a) not in held))


# -- storage strategies ------------------------------------------------------------------------
class Storage:
    """Where the backward sweep finds each layer's record.

    :meth:`forward` runs the layers from ``state`` (``stepper.step(n, state) →
    (new state, record)``; ``record=False`` where the record is not kept, so the
    step may skip what only the adjoint needs) and keeps what :meth:`backward`
    needs; :meth:`backward` then yields ``(n, record)`` for n = N_t − 1 … 0, each
    record once."""

    name = "storage"

    def forward(self, stepper, state, layers: int, ws):
        raise NotImplementedError

    def backward(self, stepper, layers: int, ws) -> Iterator[tuple[int, object]]:
        raise NotImplementedError


class Full(Storage):
    """Every layer's record is kept (O(N_t) states)."""

    name = "full"

    def forward(self, stepper, state, layers, ws):
        self.records = []
        for n in range(layers):
            new, record = stepper.step(n, state)
            self.records.append(record)
            _give_back(ws, state, keep=(record, new))  # a state the record does not hold
            state = new
        return state

    def backward(self, stepper, layers, ws):
        for n in reversed(range(layers)):
            record, self.records[n] = self.records[n], None
            yield n, record


class Every(Storage):
    """The state entering every k-th layer is kept; segments are recomputed."""

    name = "every"

    def __init__(self, k: int | str = "sqrt"):
        if k != "sqrt" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise InputError(
                f"expected 'sqrt', 'reverse', null or an integer k ≥ 1, got {show(k)}",
                "checkpointing",
            )
        self.k = k

    def segment(self, layers: int) -> int:
        return max(1, math.ceil(math.sqrt(layers))) if self.k == "sqrt" else int(self.k)

    def forward(self, stepper, state, layers, ws):
        k = self.segment(layers)
        self.saved = {}
        for n in range(layers):
            if n % k == 0:
                self.saved[n] = state
            new, record = stepper.step(n, state, record=False)
            _give_back(ws, (record, state), keep=(new, *self.saved.values()))
            state = new
        return state

    def backward(self, stepper, layers, ws):
        k = self.segment(layers)
        for start in reversed(range(0, layers, k)):
            segment, s = [], self.saved.pop(start)
            for n in range(start, min(start + k, layers)):
                new, record = stepper.step(n, s)
                segment.append(record)
                _give_back(ws, s, keep=(record, new))
                s = new
            _give_back(ws, s, keep=segment)
            for n in reversed(range(start, min(start + k, layers))):
                yield n, segment.pop()


class Reverse(Storage):
    """Reversible schemes: states recomputed backwards from the last one (O(1))."""

    name = "reverse"

    def forward(self, stepper, state, layers, ws):
        for n in range(layers):
            new, record = stepper.step(n, state, record=False)
            _give_back(ws, (record, state), keep=new)
            state = new
        self.state = state
        return state

    def backward(self, stepper, layers, ws):
        state = self.state
        for n in reversed(range(layers)):
            state, record = stepper.reverse(n, state)
            yield n, record


def storage(spec) -> Storage:
    """The storage strategy for ``training.checkpointing``: ``None`` (full),
    ``"sqrt"`` or an integer k (every k-th state), ``"reverse"``, or a
    :class:`Storage` (returned as is)."""
    if isinstance(spec, Storage):
        return spec
    if spec is None:
        return Full()
    if spec == "reverse":
        return Reverse()
    return Every(spec)


# -- the sweep ------------------------------------------------------------------------------------
@dataclass
class SweepResult:
    """Outputs of one forward–adjoint sweep on this rank's samples."""

    Yhat: np.ndarray  # (n_out × S_local)
    misfit: float  # local part of (1/S) Σ ℓ
    stat: float  # correct count (classification) / squared error sum
    gradient: Controls  # local (not yet summed over the data ranks), no regulariser
    hessian_action: Controls | None = None  # ∇²J_data · dθ (second-order sweeps)
    states: list = field(default_factory=list)  # U⁰ … U^{N_t} (trajectories only)
    costates: list = field(default_factory=list)  # Λ⁰ … Λ^{N_t} (trajectories only)
    G: np.ndarray | None = None  # ∂misfit/∂Ŷ
    #: output sensitivities Λ_kⁿ = ∂Ŷ_k/∂Uⁿ per sample (k = 0 … n_out − 1, each a
    #: list over n = 0 … N_t of state tuples; trajectories with ``sensitivities``)
    sensitivities: list = field(default_factory=list)


class Sweep:
    """Sweeps through the depth of ``net`` at the controls ``controls``.

    ``checkpoint`` chooses the :class:`Storage` of the gradient sweeps (see the
    module docstring). ``noise``: noise in depth, a callable n ↦ g ΔWⁿ for the
    sweep's columns (:class:`~pontryx.solver.model.noise.Increments`), drawn again,
    identically, whenever a layer is recomputed; ``None``: the deterministic
    network. ``workspace``: the pool of the gradient sweep's arrays (default the
    network's; sweeps run concurrently need one each, :mod:`.split`). Every method
    is collective over the width ranks; data ranks are not summed here."""

    def __init__(self, net, controls: Controls, checkpoint=None, noise=None, workspace=None):
        self.net, self.controls = net, controls
        self.workspace = net.workspace if workspace is None else workspace
        self.noise = noise  # g ΔWⁿ of each layer for the sweep's columns, or None
        self.scheme, self.kernel = net.scheme, net.kernel
        self.storage = storage(checkpoint)
        if isinstance(self.storage, Reverse) and not self.scheme.reversible:
            raise InputError(
                f"'reverse' needs a reversible scheme (verlet), not {self.scheme.name}",
                "checkpointing",
            )
        self.ws = HEAP
        self.record = "all"  # the scheme's record kind (``"adjoint"`` in gradient sweeps)

    # -- one layer ----------------------------------------------------------------------
    def _ctx(self, n):
        return self.kernel.layer(self.net.layer_controls(self.controls, n), n)

    def _noise(self, n):
        return None if self.noise is None else self.noise(n)

    def step(self, n, state, record=True):
        """(U^{n+1}, record) from Uⁿ (``record=False``: the record is not kept)."""
        ctx = self._ctx(n)
        b, noise = self.controls["b"][n], self._noise(n)
        kind = self.record if record else None
        out = self.scheme.step(ctx, b, state, n=n, ws=self.ws, noise=noise, record=kind)
        self.kernel.release(ctx)
        return out

    def reverse(self, n, state):
        """(Uⁿ, record) from U^{n+1} (reversible schemes)."""
        ctx = self._ctx(n)
        b, noise = self.controls["b"][n], self._noise(n)
        out = self.scheme.reverse(ctx, b, state, n=n, ws=self.ws, noise=noise)
        self.kernel.release(ctx)
        return out

    def _terminal(self, U, G, grad):
        """Λ^{N_t} = M_L C G (zero for Verlet's V) and the readout gradient."""
        m = self.net.space.m[:, None]
        if "C" in grad:
            grad["C"] += (m * U[0]) @ G.T
            grad["d"] += G.sum(axis=1)
        return (m * (self.controls["C"] @ G), *(np.zeros_like(s) for s in U[1:]))

    # -- forward only ---------------------------------------------------------------------
    def forward(self, X, keep=()):
        """Ŷ for inputs X and the list of the states U at the layer indices ``keep``
        (0 … N_t; each a copy). Only the current state is held otherwise."""
        net = self.net
        state = self.scheme.initial_state(net.embed(self.controls, X))
        kept, keep = {}, set(keep or ())
        for n in range(net.layers):
            if n in keep:
                kept[n] = state[0].copy()
            state, _ = self.step(n, state, record=False)
        if net.layers in keep:
            kept[net.layers] = state[0].copy()
        return net.readout(self.controls, state[0]), [kept[n] for n in sorted(kept)]

    # -- forward and adjoint ------------------------------------------------------------------
    def gradient(
        self, X, misfit_fn, trajectory: bool = False, sensitivities: bool = False, out=None
    ) -> SweepResult:
        """One forward and one adjoint sweep for inputs X (n_in × S_local).

        ``misfit_fn(Ŷ) -> (misfit, ∂misfit/∂Ŷ, stat)`` is the data term on this
        rank's samples. Returns the local gradient of the misfit for every
        trainable control (the regulariser and the data-rank sum are added by the
        caller, :class:`~pontryx.solver.adjoint.reduced.ReducedFunctional`). With
        ``trajectory`` every state U⁰ … U^{N_t} and costate Λ⁰ … Λ^{N_t} is kept
        (full storage, no array recycling): the Pontryagin sweeps need them; with
        ``sensitivities`` (and ``trajectory``) also the output sensitivities
        Λ_kⁿ = ∂Ŷ_k/∂Uⁿ, the costates of the unit cotangents e_k on Ŷ, carried
        backwards through the same layer records in one block of n_out·S columns,
        without parameter products (``grad=None``): the Gauss–Newton Hessian of
        the cost-to-go in Uⁿ is Σ_s Λ_{·,s}ⁿᵀ ∇²ℓ_s Λ_{·,s}ⁿ. ``out``: arrays (name →
        array of the control's shape) the gradient is written into instead of new ones,
        e.g. a previous gradient no one holds any more (their values are not used)."""
        try:
            return self._gradient(X, misfit_fn, trajectory, sensitivities, out)
        except BaseException:  # an aborted sweep (a solve that failed, a signal, …)
            self.ws.end()  # node-shared records it lent go back to their pool
            self.ws, self.record = HEAP, "all"
            raise

    def _gradient(self, X, misfit_fn, trajectory, sensitivities, out) -> SweepResult:
        net = self.net
        if trajectory:
            store, self.ws, states = Full(), HEAP, []
        else:  # records for the adjoint alone (IMEX Euler: Δt σ'(Z) stored)
            store, self.ws, states = self.storage, self.workspace, None
            self.record = "adjoint"
        ws = self.ws
        assign = self.scheme.assigns
        stepper = _Recorder(self, states) if trajectory else self
        state = self.scheme.initial_state(net.embed(self.controls, X))
        if states is not None:
            states.append(state)
        state = store.forward(stepper, state, net.layers, ws)
        Yhat = net.readout(self.controls, state[0])
        misfit, G, stat = misfit_fn(Yhat)
        grad = self._gradient_arrays(assign, out)
        lam = self._terminal(state, G, grad)
        costates = [lam] if trajectory else None
        sens = None  # the K = n_out sensitivity costates as one (n × K·S) block
        if trajectory and sensitivities:
            sens = [self._sensitivity_terminal(state, G.shape[0])]
        if not isinstance(store, Reverse):
            _give_back(ws, state)
        for n, record in store.backward(self, net.layers, ws):
            ctx = self._ctx(n)
            layer_grad = {name: grad[name][n] for name in net.layer_names}
            if assign:  # every layer's gradient written once, by its adjoint step
                new = self.scheme.adjoint(ctx, record, lam, layer_grad, n=n, ws=ws, assign=True)
            else:
                new = self.scheme.adjoint(ctx, record, lam, layer_grad, n=n, ws=ws)
            if sens is not None:  # state cotangents only: no parameter products
                tiled = tuple(np.tile(a, (1, G.shape[0])) for a in record)
                sens.append(self.scheme.adjoint(ctx, tiled, sens[-1], None, n=n))
            self.kernel.release(ctx)
            _give_back(ws, (record, lam), keep=new)
            lam = new
            if costates is not None:
                costates.append(lam)
        if "E" in grad:
            grad["E"] += lam[0] @ X.T
        ws.give(*lam)
        ws.end()
        self.ws, self.record = HEAP, "all"
        return SweepResult(
            Yhat,
            misfit,
            stat,
            grad,
            states=states or [],
            costates=costates[::-1] if costates else [],
            G=G,
            sensitivities=_split_columns(sens[::-1], G.shape[0]) if sens else [],
        )

    def _gradient_arrays(self, assign: bool, out=None) -> Controls:
        """The gradient's arrays: zeros, except the layer controls when the scheme
        writes them (``assign``): those are left unfilled (np.empty), each layer's
        written once by its adjoint step — no zero fill of the N_t layers' arrays.
        Arrays of ``out`` with the right shape are used instead of new ones (zeroed
        where the sweep adds into them)."""
        net = self.net
        layered = set(net.layer_names) if assign else set()
        out = out or {}
        arrays = {}
        for k, v in self.controls.subset(net.trainable).items():
            a = out.get(k)
            if a is None or a.shape != v.shape or a.dtype != v.dtype:
                a = (np.empty_like if k in layered else np.zeros_like)(v)
            elif k not in layered:
                a.fill(0.0)
            arrays[k] = a
        return Controls(arrays, self.controls.comm)

    def _sensitivity_terminal(self, state, K):
        """Λ_k^{N_t} = M_L C e_k 1ᵀ for k = 0 … K−1, side by side (n × K·S)."""
        m, C = self.net.space.m, self.controls["C"]
        S = state[0].shape[1]
        lam = np.repeat(m[:, None] * C, S, axis=1)  # column block k: M_L C[:, k] 1ᵀ
        return (lam, *(np.zeros((s.shape[0], K * S)) for s in state[1:]))

    # -- tangent-linear and second order ----------------------------------------------------
    def _tangent_controls(self, dtheta: Controls, n):
        d = {k: dtheta[k][n] for k in self.kernel.shapes() if k in dtheta}
        db = dtheta["b"][n] if "b" in dtheta else np.zeros_like(self.controls["b"][n])
        full = {k: d.get(k, np.zeros_like(self.controls[k][n])) for k in self.kernel.shapes()}
        return full, db

    def tangent(self, X, dtheta: Controls):
        """(Ŷ, dŶ, dU^{N_t}): the outputs and their derivative along dθ (forward
        mode, one sweep; names missing from ``dtheta`` do not move)."""
        net, scheme, m = self.net, self.scheme, self.net.space.m[:, None]
        self._dtheta, self.ws = dtheta, HEAP
        U0 = net.embed(self.controls, X)
        dU0 = dtheta["E"] @ X if "E" in dtheta else np.zeros_like(U0)
        state, dstate = scheme.initial_state(U0), scheme.initial_tangent(dU0)
        for n in range(net.layers):
            (state, dstate), _ = self._tangent_step(n, (state, dstate))
        Yhat = net.readout(self.controls, state[0])
        dY = net.space.sum(self.controls["C"].T @ (m * dstate[0]))
        if "C" in dtheta:
            dY += net.space.sum(dtheta["C"].T @ (m * state[0]))
        if "d" in dtheta:
            dY += dtheta["d"][:, None]
        self._dtheta = None
        return Yhat, dY, dstate

    def _tangent_step(self, n, both):
        state, dstate = both
        ctx = self._ctx(n)
        new, record = self.scheme.step(ctx, self.controls["b"][n], state, n=n, noise=self._noise(n))
        dth, db = self._tangent_controls(self._dtheta, n)
        dctx = self.kernel.tangent(ctx, dth)
        dnew, trecord = self.scheme.tangent(ctx, dctx, db, record, dstate, n=n)
        self.kernel.release(ctx)
        return (new, dnew), (record, trecord)

    def hessian_action(self, X, misfit_fn, loss_hvp, dtheta: Controls) -> SweepResult:
        """Gradient and Hessian action of the misfit along ``dtheta`` (local to this
        rank's samples): one tangent forward sweep and one second-order adjoint
        sweep. ``loss_hvp(Ŷ, V)`` is the loss Hessian's action (divided by S)."""
        net, scheme, sp = self.net, self.scheme, self.net.space
        m = sp.m[:, None]
        self._dtheta = dtheta
        self.ws = HEAP
        store = Every("sqrt") if isinstance(self.storage, Reverse) else self.storage
        U0 = net.embed(self.controls, X)
        dU0 = dtheta["E"] @ X if "E" in dtheta else np.zeros_like(U0)
        both = (scheme.initial_state(U0), scheme.initial_tangent(dU0))
        stepper = _TangentStepper(self)
        state, dstate = store.forward(stepper, both, net.layers, HEAP)
        C = self.controls["C"]
        Yhat = net.readout(self.controls, state[0])
        misfit, G, stat = misfit_fn(Yhat)
        dY = sp.sum(C.T @ (m * dstate[0]))
        if "C" in dtheta:
            dY += sp.sum(dtheta["C"].T @ (m * state[0]))
        if "d" in dtheta:
            dY += dtheta["d"][:, None]
        dG = loss_hvp(Yhat, dY)
        grad = self.controls.subset(net.trainable).zeros_like()
        hess = grad.zeros_like()
        lam = self._terminal(state, G, grad)
        dlam = (m * (C @ dG), *(np.zeros_like(s) for s in state[1:]))
        if "C" in dtheta:
            dlam = (dlam[0] + m * (dtheta["C"] @ G), *dlam[1:])
        if "C" in hess:
            hess["C"] += (m * dstate[0]) @ G.T + (m * state[0]) @ dG.T
            hess["d"] += dG.sum(axis=1)
        for n, (record, trecord) in store.backward(stepper, net.layers, HEAP):
            ctx = self._ctx(n)
            dth, _ = self._tangent_controls(dtheta, n)
            dctx = self.kernel.tangent(ctx, dth)
            g = {name: grad[name][n] for name in net.layer_names}
            h = {name: hess[name][n] for name in net.layer_names}
            lam, dlam = scheme.adjoint2(ctx, dctx, dth, record, trecord, lam, dlam, g, h, n=n)
            self.kernel.release(ctx)
        if "E" in grad:
            grad["E"] += lam[0] @ X.T
            hess["E"] += dlam[0] @ X.T
        self._dtheta = None
        return SweepResult(Yhat, misfit, stat, grad, hessian_action=hess, G=G)

    _dtheta = None


def _split_columns(path, K):
    """[[Λ_k⁰ … Λ_k^{N_t}] for k] from the states of K column blocks side by side."""
    out = []
    for k in range(K):
        out.append([])
        for lam in path:
            S = lam[0].shape[1] // K
            out[k].append(tuple(a[:, k * S : (k + 1) * S] for a in lam))
    return out


class _Recorder:
    """A stepper that also collects the states (trajectory sweeps)."""

    def __init__(self, sweep, states):
        self.sweep, self.states = sweep, states

    def step(self, n, state, record=True):
        new, record = self.sweep.step(n, state, record)
        self.states.append(new)
        return new, record


class _TangentStepper:
    """Steps (state, tangent state) pairs for the second-order sweep."""

    def __init__(self, sweep):
        self.sweep = sweep

    def step(self, n, both, record=True):  # the tangent step needs the record either way
        return self.sweep._tangent_step(n, both)
