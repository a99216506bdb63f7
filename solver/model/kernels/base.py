"""The interface of the kernel parametrisations of the nonlocal operator 𝒦(t).

Every kernel (DESIGN.md §1–2; n owned rows, N global dofs, S samples) provides

* ``shapes``     — per-layer local shapes of its controls,
* ``weights``    — lumped-mass weights ω with ‖θ‖² = Σ ω θ² (the L² norms of
                   the regulariser: ∫∫ w² ≈ Σ_ij m_i m_j W_ij² etc.),
* ``init``       — one layer's initial controls from seeded generators (white
                   noise on the nodes, scaled by a gain),
* ``field_init`` — one layer's initial controls from a Matérn field
                   (:mod:`pontryx.solver.model.fields`, the law of ``model.init``),
* ``layer(θⁿ)``  — prepare layer n (assemble, gather, …) → a context; ``release``,
* ``apply``      — K U,  ``apply_T`` — Kᵀ D (new arrays, which the schemes may
                   overwrite in place; taken from the
                   :class:`~pontryx.solver.model.workspace.Workspace` ``ws`` where
                   the kernel supports it, temporaries given back to it),
* ``apply_and_record`` — K U and V, the form of U that ``backward(…, recorded=True)``
                   takes in U's place (U itself; the dense and low-rank kernels: M_L U,
                   which their forward product computes anyway),
* ``vjp``        — accumulate ∂/∂θ ⟨D, K(θ) U⟩ (the kernel part of ∂J/∂θⁿ),
* ``backward``   — Kᵀ D and the ``vjp`` together (what an adjoint step needs;
                   kernels may share work between the two; without a gradient
                   to accumulate only Kᵀ D; with ``assign`` the gradient arrays
                   hold no values yet and are written, not added to; ``add``:
                   Kᵀ D + add, in the same pass where the kernel can),

and for tangent-linear and second-order sweeps

* ``tangent(ctx, dθ)`` — the derivative K'(θ)[dθ] as a context that ``apply``
                   and ``apply_T`` accept (for kernels linear in θ, K(dθ) itself),
* ``second_vjp`` — accumulate ∂/∂θ ⟨D, K'(θ)[dθ] U⟩ (zero for kernels linear in θ).

What the outputs need is declared here too, so adding a kernel is one module
plus one registry line (:mod:`pontryx.solver.registry`):

* ``options``    — the YAML keys of ``model.kernel`` besides ``type`` (:class:`Option`),
* ``full_axis``  — controls with a second, full-length dof axis (canonical order
                   permutes both axes),
* ``has_rows``   — whether w(t, x_i, ·) rows can be drawn (ParaView); ``row``,
* ``threadsafe`` — whether sweeps may run concurrently in threads on one width
                   rank (NumPy products only, no PETSc objects, no state kept
                   between calls; :mod:`pontryx.solver.adjoint.split`),
* ``fields``     — controls that are fields on V_h (ParaView), name → value shape,
* ``export``     — extra arrays of ``model.npz`` (collective).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.model.threads import add_into
from pontryx.solver.model.workspace import HEAP, Workspace

__all__ = ["Kernel", "Option", "positive_int"]


def plus(Y: np.ndarray, add: np.ndarray | None) -> np.ndarray:
    """Y += add (unless ``add`` is None), in row blocks; returns Y."""
    return Y if add is None else add_into(Y, add)


def positive_int(value: Any) -> int:
    """An integer ≥ 1 (booleans are not integers)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(f"expected an integer ≥ 1, got {show(value)}")
    return int(value)


@dataclass(frozen=True)
class Option:
    """An option of a kernel (a key of ``model.kernel``): ``check(value)`` returns
    the value or raises :class:`InputError` without a key."""

    check: Callable[[Any], Any]
    required: bool = False
    default: Any = None
    description: str = ""


class Kernel:
    """Common interface; see the module docstring."""

    name: ClassVar[str] = "kernel"
    options: ClassVar[dict[str, Option]] = {}
    full_axis: ClassVar[tuple[str, ...]] = ()
    has_rows: ClassVar[bool] = False
    threadsafe: ClassVar[bool] = False
    fields: ClassVar[dict[str, tuple[int, ...] | str]] = {}

    def __init__(self, space):
        self.space = space

    @classmethod
    def check_options(cls, options: dict) -> dict:
        """Options validated and completed with their defaults; errors keyed by option."""
        out = {}
        for key, value in options.items():
            if key not in cls.options and value is not None:  # null: not given
                allowed = ", ".join(cls.options) or "none"
                raise InputError(
                    f"not an option of the {cls.name} kernel (options: {allowed})", key
                )
        for key, opt in cls.options.items():
            if key not in options or options[key] is None:
                if opt.required:
                    raise InputError(f"required for the {cls.name} kernel", key)
                out[key] = opt.default
                continue
            try:
                out[key] = opt.check(options[key])
            except InputError as e:
                raise InputError(e.message, key) from None
        return out

    # -- controls --------------------------------------------------------------
    def shapes(self) -> dict[str, tuple[int, ...]]:
        raise NotImplementedError

    def weights(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def init(self, rng_for, gain: float) -> dict[str, np.ndarray]:
        """One layer's controls; ``rng_for(name)`` gives a seeded generator."""
        raise NotImplementedError

    def field_init(self, field, rng_for, variance: float) -> dict[str, np.ndarray]:
        """One layer's controls drawn from ``field`` (a
        :class:`~pontryx.solver.model.fields.MaternField`), the kernel w of pointwise
        variance ``variance``; ``rng_for(name)`` gives a seeded generator."""
        raise NotImplementedError

    def normal(self, rng, shape_full, scale):
        return scale * rng.standard_normal(shape_full)

    # -- the operator -----------------------------------------------------------
    def layer(self, theta: dict[str, np.ndarray], n: int | None = None):
        """The context of layer ``n`` with controls ``theta`` (``n`` lets a kernel
        reuse per-layer objects; ``None`` for a one-off layer)."""
        return theta

    def release(self, ctx) -> None:
        """Let go of what :meth:`layer` made for a one-off layer."""

    def apply(self, ctx, U: np.ndarray, ws: Workspace = HEAP) -> np.ndarray:
        raise NotImplementedError

    def apply_T(self, ctx, D: np.ndarray, ws: Workspace = HEAP) -> np.ndarray:
        raise NotImplementedError

    def apply_and_record(self, ctx, U: np.ndarray, ws: Workspace = HEAP):
        """(K U, V) with V what :meth:`backward` takes for U with ``recorded=True``
        (here U itself)."""
        return self.apply(ctx, U, ws), U

    def vjp(
        self, ctx, U: np.ndarray, D: np.ndarray, out: dict[str, np.ndarray], ws: Workspace = HEAP
    ) -> None:
        raise NotImplementedError

    def backward(
        self,
        ctx,
        U: np.ndarray,
        D: np.ndarray,
        out: dict | None,
        ws: Workspace = HEAP,
        assign: bool = False,
        recorded: bool = False,
        add: np.ndarray | None = None,
    ) -> np.ndarray:
        """Kᵀ D, accumulating ∂/∂θ ⟨D, K(θ) U⟩ into ``out`` unless it is ``None``
        (sweeps that only need state cotangents skip the parameter gradient);
        ``assign``: ``out``'s arrays of this kernel hold no values yet and are
        written (here: zeroed, then accumulated into); ``recorded``: ``U`` is the
        V of :meth:`apply_and_record` (here U itself); ``add``: returns Kᵀ D + add."""
        if out is not None:
            if assign:
                self.clear(out)
            self.vjp(ctx, U, D, out, ws)
        return plus(self.apply_T(ctx, D, ws), add)

    def clear(self, out: dict) -> None:
        """Zero this kernel's arrays in the layer gradient ``out``."""
        for name in self.shapes():
            out[name][...] = 0.0

    def apply_adjoint(self, ctx, V: np.ndarray) -> np.ndarray:
        """The L²(M_L) adjoint K* = M_L⁻¹ Kᵀ M_L (the discrete 𝒦*)."""
        m = self.space.m[:, None]
        return self.apply_T(ctx, m * V) / m

    # -- tangent-linear and second order ------------------------------------------
    def tangent(self, ctx, dtheta: dict[str, np.ndarray]):
        """K'(θ)[dθ] as a context for :meth:`apply`/:meth:`apply_T` (linear kernels:
        the operator of dθ itself)."""
        return self.layer(dtheta)

    def second_vjp(self, ctx, dtheta, U, D, out) -> None:
        """Accumulate ∂/∂θ ⟨D, K'(θ)[dθ] U⟩ into ``out`` (zero for linear kernels)."""

    # -- what the outputs need ----------------------------------------------------
    def row(self, theta: dict[str, np.ndarray], i: int) -> np.ndarray:
        """w(t, x_i, ·) on the owned dofs for the canonical dof ``i`` (collective)."""
        raise NotImplementedError

    def export(self, controls, layers: int) -> dict[str, np.ndarray]:
        """Extra arrays of ``model.npz`` on width rank 0 (collective)."""
        return {}

    def destroy(self) -> None:
        """Free per-layer objects."""
