"""The discrete adjoint sweep: exact gradients of the discrete objective.

Forward sweep, terminal costate Λ^{N_t} = M_L C ∂ℓ/∂Ŷ, backward sweep through
each scheme's adjoint step (DESIGN.md §2), and ∂J/∂E = Λ⁰ Xᵀ,
∂J/∂C = M_L U^{N_t} (∂ℓ/∂Ŷ)ᵀ, ∂J/∂d = (∂ℓ/∂Ŷ) 1.

Memory (``checkpoint``):

* ``None``   — every layer's record is stored (O(N_t) states; fastest);
* ``k`` > 0  — the state entering every k-th layer is stored and each segment
  is recomputed from it during the backward sweep (O(N_t/k + k) states; with
  ``"sqrt"``, k = ⌈√N_t⌉ gives O(√N_t)). The recomputation repeats the same
  operations, so the gradient is bit-identical to full storage;
* ``"reverse"`` — reversible schemes (Verlet) recompute each state backwards
  from the next one: O(1) states, equal to full storage up to round-off.

The sweep takes its records and temporaries from the network's
:class:`~pontryx.solver.workspace.Workspace` and gives each back as soon as it
is consumed, so a training run's gradients reuse one set of arrays (no
first-touch page faults after the first gradient).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["SweepResult", "gradient_sweep"]


class SweepResult:
    """Outputs of one forward–adjoint sweep on this rank's samples."""

    def __init__(self, Yhat, misfit, stat, gradient):
        self.Yhat = Yhat  # (n_out × S_local)
        self.misfit = misfit  # local part of (1/S) Σ ℓ
        self.stat = stat  # correct count (classification) / squared error sum
        self.gradient = gradient  # Controls, local (not yet summed over data ranks)


def _segment_length(checkpoint, layers):
    if checkpoint is None or checkpoint == "reverse":
        return None
    if checkpoint == "sqrt":
        return max(1, math.ceil(math.sqrt(layers)))
    k = int(checkpoint)
    if k < 1:
        raise ValueError(
            f"training.checkpointing: expected 'sqrt', 'reverse' or k ≥ 1, got {checkpoint}"
        )
    return k


def _give_back(ws, arrays, keep=()):
    """Give ``arrays`` back to the workspace, except those in ``keep``."""
    held = {id(a) for a in keep}
    ws.give(*(a for a in arrays if id(a) not in held))


def gradient_sweep(net, controls, X, misfit_fn, checkpoint=None) -> SweepResult:
    """Forward and adjoint sweep for inputs X (n_in × S_local).

    ``misfit_fn(Ŷ) -> (misfit, ∂misfit/∂Ŷ, stat)`` is the data term on this
    rank's samples. Returns the local gradient of the misfit for every
    trainable control (the regulariser and the data-rank sum are added by the
    caller, :class:`~pontryx.solver.reduced.ReducedFunctional`)."""
    scheme, kernel, sp = net.scheme, net.kernel, net.space
    L = net.layers
    if checkpoint == "reverse" and not scheme.reversible:
        raise ValueError(
            "training.checkpointing: 'reverse' needs a reversible scheme (verlet), "
            f"not {scheme.name}"
        )
    k = _segment_length(checkpoint, L)
    b = controls["b"]
    ws = net.workspace

    def run(n, state):
        ctx = kernel.layer(net.layer_controls(controls, n))
        out = scheme.step(ctx, b[n], state, n=n, ws=ws)
        kernel.release(ctx)
        return out

    # forward sweep
    state = scheme.initial_state(net.embed(controls, X))
    records, saved = [None] * L, {}
    for n in range(L):
        if k is not None and n % k == 0:
            saved[n] = state
        new, record = run(n, state)
        if checkpoint is None:
            records[n] = record
        else:  # keep only the checkpoints
            _give_back(ws, (*record, *state), keep=(*new, *(a for s in saved.values() for a in s)))
        state = new
    Yhat = net.readout(controls, state[0])
    misfit, G, stat = misfit_fn(Yhat)

    grad = controls.subset(net.trainable).zeros_like()
    if "C" in grad:
        grad["C"] += (sp.m[:, None] * state[0]) @ G.T
        grad["d"] += G.sum(axis=1)
    lam = (sp.m[:, None] * (controls["C"] @ G), *tuple(np.zeros_like(s) for s in state[1:]))

    # backward sweep
    if checkpoint != "reverse":
        _give_back(ws, state)

    def back(n, record, lam):
        ctx = kernel.layer(net.layer_controls(controls, n))
        g = {name: grad[name][n] for name in net.layer_names}
        new = scheme.adjoint(ctx, record, lam, g, n=n, ws=ws)
        kernel.release(ctx)
        _give_back(ws, (*record, *lam), keep=new)
        return new

    if checkpoint is None:
        for n in reversed(range(L)):
            lam = back(n, records[n], lam)
            records[n] = None
    elif checkpoint == "reverse":
        for n in reversed(range(L)):
            ctx = kernel.layer(net.layer_controls(controls, n))
            state, record = scheme.reverse(ctx, b[n], state, n=n)
            kernel.release(ctx)
            lam = back(n, record, lam)
    else:
        for start in reversed(range(0, L, k)):
            seg, s = [], saved.pop(start)
            for n in range(start, min(start + k, L)):
                s, record = run(n, s)
                seg.append(record)
            _give_back(ws, s, keep=(a for r in seg for a in r))
            for n in reversed(range(start, min(start + k, L))):
                lam = back(n, seg.pop(), lam)

    if "E" in grad:
        grad["E"] += lam[0] @ X.T
    ws.give(*lam)
    ws.end()
    return SweepResult(Yhat, misfit, stat, grad)


def layer_gradient_norms(net, grad) -> np.ndarray:
    """‖∂J/∂θⁿ‖ for n = 0 … N_t−1 (Euclidean over all layer controls, all ranks)."""
    local = np.zeros(net.layers)
    for name in net.layer_names:
        g = grad[name]
        local += (g.reshape(net.layers, -1) ** 2).sum(axis=1)
    return np.sqrt(net.space.sum(local))
