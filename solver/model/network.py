"""The continuum network: the discrete model of DESIGN.md §2 on a width space.

    U⁰ = E X,   U^{n+1} = scheme step with Zⁿ = Kⁿ Uⁿ + bⁿ 1ᵀ,   Ŷ = Cᵀ M_L U^{N_t} + d 1ᵀ

Inputs X are (n_in × S) with one column per sample, states U are (n × S) row
blocks of V_h, outputs Ŷ are (n_out × S) on every width rank.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import dolfinx.fem
import numpy as np

from pontryx.forms.activations import get_activation
from pontryx.forms.embedding import embedding_functions
from pontryx.meshes.errors import InputError, integer, nonnegative, positive, show
from pontryx.solver.model.controls import Controls
from pontryx.solver.model.kernels import Kernel, make_kernel
from pontryx.solver.model.schemes import make_scheme
from pontryx.solver.model.workspace import Workspace

__all__ = ["ContinuumNetwork"]

#: The most layers a network takes (each holds its controls and, in a gradient, a state).
MAX_LAYERS = 10**7


class ContinuumNetwork:
    """A continuum network of depth T with ``layers`` = N_t layers.

    Parameters mirror the YAML ``model:`` section: ``kernel`` (a name or a
    :class:`Kernel`), ``kernel_options`` (e.g. ``{"rank": 8}``), ``activation``,
    ``scheme`` (imex_euler | midpoint | verlet | rk4), ``epsilon`` (width diffusion ε ≥ 0),
    ``embedding`` (bump | coordinate | image) and whether the embedding E and
    readout C, d are trainable.
    """

    def __init__(
        self,
        space,
        n_in: int,
        n_out: int,
        *,
        kernel: str | Kernel = "dense",
        kernel_options: dict | None = None,
        activation: str = "tanh",
        scheme: str = "imex_euler",
        T: float = 1.0,
        layers: int = 16,
        epsilon: float = 0.0,
        embedding: str = "bump",
        input_shape: Sequence[int] | None = None,
        train_embedding: bool = False,
        train_readout: bool = True,
    ):
        if not hasattr(space, "V") or not hasattr(space, "comm"):
            raise InputError(f"expected a WidthSpace, got {show(space)}", "space")
        integer(n_in, "n_in", 1, 2**31 - 1)
        integer(n_out, "n_out", 1, 2**31 - 1)
        integer(layers, "layers", 1, MAX_LAYERS)
        positive(T, "T")
        nonnegative(epsilon, "epsilon")
        for name, value in (("kernel", kernel), ("activation", activation), ("scheme", scheme)):
            if not isinstance(value, str) and not (name == "kernel" and isinstance(value, Kernel)):
                raise InputError(f"expected a name, got {show(value)}", name)
        if isinstance(kernel, Kernel) and kernel.space is not space:
            raise InputError("a kernel built on another width space", "kernel")
        if kernel_options is not None and not isinstance(kernel_options, Mapping):
            raise InputError(
                f"expected a mapping of options, got {show(kernel_options)}", "kernel_options"
            )
        for name, flag in (("train_embedding", train_embedding), ("train_readout", train_readout)):
            if not isinstance(flag, bool | np.bool_):
                raise InputError(f"expected true or false, got {show(flag)}", name)
        if input_shape is not None:
            shape = list(input_shape) if isinstance(input_shape, Sequence) else None
            if (
                not shape
                or not all(
                    isinstance(d, int | np.integer) and not isinstance(d, bool) and d > 0
                    for d in shape
                )
                or math.prod(shape) != int(n_in)
            ):
                raise InputError(
                    f"expected sizes > 0 whose product is n_in = {n_in}, got {show(input_shape)}",
                    "input_shape",
                )
        self.space = space
        self.n_in, self.n_out = int(n_in), int(n_out)
        self.T, self.layers, self.epsilon = float(T), int(layers), float(epsilon)
        self.dt = self.T / self.layers
        if self.epsilon > 0:
            self._check_diffusion(space)
        try:
            self.kernel = (
                kernel
                if isinstance(kernel, Kernel)
                else make_kernel(space, kernel, **(kernel_options or {}))
            )
        except InputError as e:
            raise e.under("kernel") from None
        try:
            self.activation = get_activation(activation)
        except InputError as e:
            raise InputError(e.message, "activation") from None
        self.scheme = make_scheme(
            scheme, space, self.kernel, self.activation, self.dt, self.epsilon
        )
        #: arrays reused by the adjoint sweeps (:mod:`pontryx.solver.workspace`)
        self.workspace = Workspace()
        self.embedding_kind = embedding
        self.input_shape = tuple(input_shape) if input_shape else (self.n_in,)
        try:
            self.E0 = self._embedding_matrix(embedding)
        except InputError as e:
            raise InputError(e.message, "embedding") from None
        self.layer_names = (*self.kernel.shapes(), "b")
        self.trainable = (
            *self.layer_names,
            *(("E",) if train_embedding else ()),
            *(("C", "d") if train_readout else ()),
        )

    # -- set-up --------------------------------------------------------------
    #: the largest Δt ε ‖A‖_∞ of the diffusion matrices M_L + cΔtεA (c ≤ 1): their
    #: entries and a factorisation's sums of them stay finite below it
    MAX_DIFFUSION = 1e300

    def _check_diffusion(self, space) -> None:
        """Δt ε ‖A‖_∞ ≤ :data:`MAX_DIFFUSION` (ε = 10³⁰⁸ overflowed the matrix and
        MUMPS failed in the first layer, after the run had started). Collective."""
        import math

        from petsc4py import PETSc

        size = self.dt * self.epsilon * space.A.norm(PETSc.NormType.INFINITY)
        if not (math.isfinite(size) and size <= self.MAX_DIFFUSION):
            raise InputError(
                f"expected Δt ε ‖A‖_∞ ≤ {self.MAX_DIFFUSION:g} (the diffusion matrix "
                f"M_L + Δt ε A must stay finite), got ε = {self.epsilon:g}, Δt = {self.dt:g}",
                "epsilon",
            )

    def _embedding_matrix(self, kind) -> np.ndarray:
        lo, hi = self.space.bounding_box
        shape = self.input_shape if len(self.input_shape) == 2 else None
        family = embedding_functions(kind, self.n_in, lo, hi, shape)
        f = dolfinx.fem.Function(self.space.V)
        E = np.empty((self.space.n, self.n_in))
        for j in range(self.n_in):
            f.interpolate(lambda x, j=j: family(x)[j])
            E[:, j] = f.x.array[: self.space.n]
        return E

    def init_controls(self, seed: int = 0, gain: float = 0.5, law=None) -> Controls:
        """Seeded initial controls, identical on any number of ranks (drawn in
        the canonical dof order).

        With a :class:`~pontryx.solver.model.fields.FieldLaw` ``law`` (what
        ``pontryx train`` uses, ``model.init``): Gaussian random fields on Ω whose
        law does not depend on the mesh (:func:`~pontryx.solver.model.fields.field_controls`).
        Without: white noise on the nodes, W (or A, G, or κ, a, r) gain-normalised
        normal, b = 0, E from the embedding family, C normal, d = 0 — its L² size
        grows with N (‖W‖²_{L²} ≈ gain² N); kept for tests and comparisons."""
        integer(seed, "seed", 0, 2**64 - 1)
        nonnegative(gain, "gain")
        if law is not None:
            from pontryx.solver.model.fields import FieldLaw, field_controls

            if not isinstance(law, FieldLaw):
                raise InputError(f"expected a FieldLaw, got {show(law)}", "law")
            return field_controls(self, law, seed)
        sp, K = self.space, self.kernel

        def rng(name, layer=0):
            return np.random.default_rng([seed, zlib.crc32(name.encode()), layer])

        per_layer = [K.init(lambda name, n=n: rng(name, n), gain) for n in range(self.layers)]
        arrays = {k: np.stack([p[k] for p in per_layer]) for k in K.shapes()}
        arrays["b"] = np.zeros((self.layers, sp.n))
        arrays["E"] = self.E0.copy()
        Cc = rng("C").standard_normal((sp.N, self.n_out)) * np.sqrt(sp.N) / sp.area
        arrays["C"] = sp.from_canonical(Cc)
        arrays["d"] = np.zeros(self.n_out)
        return Controls(arrays, sp.comm)

    def control_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every control array on this rank (what :meth:`init_controls`
        gives): the layer controls stacked over depth, E, C and d."""
        n, L = self.space.n, self.layers
        shapes = {k: (L, *shape) for k, shape in self.kernel.shapes().items()}
        shapes.update(b=(L, n), E=(n, self.n_in), C=(n, self.n_out), d=(self.n_out,))
        return shapes

    def check_controls(self, controls, names=None, key: str = "controls") -> None:
        """``controls`` (a mapping: all names, or ``names``) have this network's
        shapes: an InputError keyed by the first that does not (controls of another
        network, a subset)."""
        if not isinstance(controls, Mapping):
            raise InputError(f"expected Controls, got {show(controls)}", key)
        shapes = self.control_shapes()
        for k in shapes if names is None else names:
            if k not in shapes or k not in controls or np.shape(controls[k]) != shapes[k]:
                got = np.shape(controls[k]) if k in controls else "missing"
                want = shapes.get(k, "no such control")
                raise InputError(f"{got}, expected {want} (controls of another network?)", k)

    def controls_from_fields(self, controls, w=None, b=None, c=None, stage: float = 0.5):
        """Set controls from continuous fields, sampled at t_n + stage·Δt:
        ``w(t, x, y)`` (dense kernel; x: (n, d) owned points, y: (N, d) all points,
        returns (n, N)), ``b(t, x)`` → (n,), ``c(x)`` → (n, n_out) readout functions.
        Used by the convergence studies (deep and width limits)."""
        sp = self.space
        x = sp.x
        if w is not None:
            if "W" not in controls:
                raise InputError("w(t, x, y) needs the dense kernel", "w")
            y = sp.allgather(x)
            for n in range(self.layers):
                controls["W"][n] = w((n + stage) * self.dt, x, y)
        if b is not None:
            for n in range(self.layers):
                controls["b"][n] = b((n + stage) * self.dt, x)
        if c is not None:
            controls["C"][...] = c(x)
        return controls

    def regularisation_weights(self) -> dict[str, np.ndarray]:
        """ω with ‖θⁿ‖² = Σ ω θⁿ², the lumped L² norms of the layer controls."""
        return {**self.kernel.weights(), "b": self.space.m}

    # -- the model -------------------------------------------------------------
    def embed(self, controls, X: np.ndarray) -> np.ndarray:
        """U⁰ = E X."""
        return controls["E"] @ X

    def readout(self, controls, U: np.ndarray) -> np.ndarray:
        """Ŷ = Cᵀ M_L U + d 1ᵀ (summed over the width ranks)."""
        return (
            self.space.sum(controls["C"].T @ (self.space.m[:, None] * U)) + controls["d"][:, None]
        )

    def layer_controls(self, controls, n: int) -> dict[str, np.ndarray]:
        return {k: controls[k][n] for k in self.kernel.shapes()}

    def forward(self, controls, X: np.ndarray, keep: Sequence[int] | None = None):
        """Ŷ for inputs X; with ``keep`` also the list of states U at those
        layer indices (0 … N_t). One forward :class:`~pontryx.solver.adjoint.sweep.Sweep`."""
        from pontryx.solver.adjoint.sweep import Sweep  # the one loop through depth

        Yhat, kept = Sweep(self, controls).forward(X, keep)
        return (Yhat, kept) if keep else Yhat

    def destroy(self):
        self.scheme.destroy()
        self.kernel.destroy()
        self.workspace.clear()
