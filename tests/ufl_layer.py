"""A reference evaluation of the model from its UFL statement, one sample at a time.

:class:`UFLLayer` steps one layer of a network's depth scheme by assembling and
solving the residuals of :func:`pontryx.forms.residual.layer_forms`, runs the
layer's discrete adjoint from the blocks ``ufl.derivative``/``ufl.adjoint``
derive (the reverse sweep over the layer's steps described in
:mod:`pontryx.forms.residual`), and evaluates the layer Hamiltonian form. The
nonlocal term is the kernel's batched action for the dense and low-rank
kernels; the local kernel's 𝒦 = M_L⁻¹L, 𝒦* and ∂_θ⟨D, 𝒦y⟩ are assembled from
its UFL form :func:`pontryx.forms.kernels.local_operator`. The tests hold the
batched sweep equal to this (tests/test_forms.py).
"""

from __future__ import annotations

import dolfinx.fem
import dolfinx.fem.petsc
import numpy as np
import ufl
from petsc4py import PETSc

from pontryx.forms.kernels import local_operator
from pontryx.forms.operators import lumped_measure
from pontryx.forms.residual import Preactivation, Solve, layer_forms, layer_hamiltonian


def _vector(form, n):
    b = dolfinx.fem.assemble_vector(dolfinx.fem.form(form))
    b.scatter_reverse(dolfinx.la.InsertMode.add)
    return b.array[:n].copy()


class UFLLayer:
    """One layer of ``net`` from the UFL forms, for one sample (collective)."""

    def __init__(self, net):
        sp = self.sp = net.space
        self.net, V = net, sp.V
        const = dolfinx.fem.Constant
        self.c = const(sp.mesh, 0.5)
        self.forms = layer_forms(
            net.scheme.name,
            V,
            const(sp.mesh, net.dt),
            const(sp.mesh, net.epsilon),
            net.activation,
            sp.lumping,
            self.c,
        )
        self.m = _vector(ufl.TestFunction(V) * lumped_measure(V, sp.lumping), sp.n)
        self.layer_vars = self.forms.functions()
        self.costates = [dolfinx.fem.Function(V) for _ in self.forms.output]
        self.H = dolfinx.fem.form(layer_hamiltonian(self.forms, self.costates, sp.lumping))

    # -- plumbing ---------------------------------------------------------------
    def _set(self, f, values):
        f.x.array[: self.sp.n] = values
        f.x.scatter_forward()

    def _get(self, f):
        return f.x.array[: self.sp.n].copy()

    def _matrix(self, form):
        A = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(form))
        A.assemble()
        return A

    def _solve(self, form, rhs):
        A = self._matrix(form)
        x, b = A.createVecRight(), A.createVecLeft()
        b.array[:] = rhs
        ksp = PETSc.KSP().create(self.sp.comm)
        ksp.setOperators(A)
        ksp.setType("preonly")
        ksp.getPC().setType("lu")
        ksp.getPC().setFactorSolverType("mumps")
        ksp.solve(b, x)
        out = x.array.copy()
        for o in (ksp, A, x, b):
            o.destroy()
        return out

    def _matvec(self, form, vec):
        A = self._matrix(form)
        x, y = A.createVecRight(), A.createVecLeft()
        x.array[:] = vec
        A.mult(x, y)
        out = y.array.copy()
        for o in (A, x, y):
            o.destroy()
        return out

    # -- the kernel -------------------------------------------------------------
    def _local(self, theta):
        K = self.net.kernel
        coef = {k: dolfinx.fem.Function(f.function_space) for k, f in K.coef.items()}
        for key, f in coef.items():
            K._set(f, theta[key])
        return coef

    def _local_form(self, theta, u, v):
        c = self._local(theta)
        return local_operator(c["kappa"], c["r"], c["a"], u, v), c

    def kernel_action(self, theta, y, adjoint=False):
        """𝒦y (or 𝒦*y = M_L⁻¹𝒦ᵀM_L y) for one sample."""
        K, sp = self.net.kernel, self.sp
        if K.name != "local":
            ctx = K.layer(theta)
            out = (K.apply_adjoint if adjoint else K.apply)(ctx, y[:, None])[:, 0]
            K.release(ctx)
            return out
        f = dolfinx.fem.Function(sp.V)
        self._set(f, y)
        v = ufl.TestFunction(sp.V)
        L, _ = self._local_form(theta, v, f) if adjoint else self._local_form(theta, f, v)
        return _vector(L, sp.n) / self.m  # 𝒦y = M_L⁻¹ L(y, ·);  𝒦*y = M_L⁻¹ L(·, y)

    def kernel_transpose(self, theta, D, adjoint=False):
        """𝒦ᵀD (or 𝒦*ᵀD = M_L 𝒦 M_L⁻¹ D)."""
        K = self.net.kernel
        if adjoint:
            return self.m * self.kernel_action(theta, D / self.m)
        if K.name != "local":
            ctx = K.layer(theta)
            out = K.apply_T(ctx, D[:, None])[:, 0]
            K.release(ctx)
            return out
        return self.m * self.kernel_action(theta, D / self.m, adjoint=True)

    def kernel_gradient(self, theta, y, D, adjoint=False):
        """∂_θ⟨D, 𝒦(θ) y⟩ (or ⟨D, 𝒦*(θ) y⟩ = ⟨M_L y, 𝒦 M_L⁻¹ D⟩)."""
        if adjoint:
            return self.kernel_gradient(theta, D / self.m, self.m * y)
        K, sp = self.net.kernel, self.sp
        if K.name != "local":
            out = {k: np.zeros_like(v) for k, v in theta.items()}
            ctx = K.layer(theta)
            K.vjp(ctx, y[:, None], D[:, None], out)
            K.release(ctx)
            return out
        fy, fq = dolfinx.fem.Function(sp.V), dolfinx.fem.Function(sp.V)
        self._set(fy, y)
        self._set(fq, D / self.m)  # ⟨D, M_L⁻¹ L y⟩ = L(y, M_L⁻¹ D)
        L, coef = self._local_form(theta, fy, fq)
        out = {}
        for key, f in coef.items():
            g = _vector(ufl.derivative(L, f, ufl.TestFunction(f.function_space)), None)
            bs = f.function_space.dofmap.index_map_bs
            out[key] = g[: sp.n * bs].reshape(theta[key].shape)
        return out

    # -- the layer --------------------------------------------------------------
    def _prepare(self, n):
        self.c.value = 0.5 if n == 0 else 1.0

    def forward(self, n, theta, b, state):
        """The new state and the values of every layer variable (a dict by id)."""
        self._prepare(n)
        values = {}
        for f, v in zip(self.forms.previous, state):
            values[id(f)] = v
            self._set(f, v)
        for step in self.forms.steps:
            if isinstance(step, Preactivation):
                z = self.kernel_action(theta, values[id(step.source)], step.adjoint) + b
                values[id(step.z)] = z
                self._set(step.z, z)
            else:
                self._set(step.unknown, np.zeros(self.sp.n))
                rhs = -_vector(step.residual, self.sp.n)  # F affine in y: J y = −F(0)
                y = self._solve(step.jacobian(), rhs)
                values[id(step.unknown)] = y
                self._set(step.unknown, y)
        return tuple(values[id(f)] for f in self.forms.output), values

    def adjoint(self, n, theta, values, lam):
        """(Λⁿ, ∂/∂b, ∂/∂θ_K) of this layer from Λ^{n+1} by the forms' reverse sweep."""
        self._prepare(n)
        for f in self.layer_vars:
            self._set(f, values[id(f)])
        adj = {id(f): np.zeros(self.sp.n) for f in self.layer_vars}
        for f, L in zip(self.forms.output, lam):
            adj[id(f)] += L
        gb = np.zeros(self.sp.n)
        gK = {k: np.zeros_like(v) for k, v in theta.items()}
        for step in reversed(self.forms.steps):
            if isinstance(step, Solve):
                q = self._solve(step.jacobian_adjoint(), adj[id(step.unknown)])
                for a in step.arguments(self.layer_vars):
                    adj[id(a)] -= self._matvec(step.sensitivity_adjoint(a), q)
            else:
                D = adj[id(step.z)]
                y = values[id(step.source)]
                adj[id(step.source)] += self.kernel_transpose(theta, D, step.adjoint)
                gb += D
                for k, g in self.kernel_gradient(theta, y, D, step.adjoint).items():
                    gK[k] += g
        return tuple(adj[id(f)] for f in self.forms.previous), gb, gK

    def hamiltonian(self, n, theta, b, state, lam):
        """⟨P, gⁿ(Uⁿ, θ)⟩ (P = −Λ^{n+1}) from the layer Hamiltonian form."""
        self.forward(n, theta, b, state)
        for p, L in zip(self.costates, lam):
            self._set(p, -L / self.m)
        return self.sp.sum(dolfinx.fem.assemble_scalar(self.H))
