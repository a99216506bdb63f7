"""Activation functions σ with exact derivatives σ' and σ'', in NumPy and UFL.

Each activation is defined once as a UFL expression builder (``ufl``) and once in
NumPy (``f``, ``df``, ``d2f``, which act on arrays in place where possible, since
they run on every layer of every batched sweep). A test holds them against
each other and against finite differences.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import ufl

from pontryx.meshes.errors import InputError, show

__all__ = ["ACTIVATIONS", "Activation", "get_activation"]

#: Smoothing width δ of the smoothed ReLU  σ(z) = (z + √(z² + δ²) − δ)/2.
SMOOTH_RELU_DELTA = 0.1


@dataclass(frozen=True)
class Activation:
    """σ and its first two derivatives, elementwise; ``f(z, out=None)`` and
    ``df(z, out=None)`` may write into ``out`` (which may be ``z`` itself).
    ``df_of_f(s, out)``, where given, is σ' from the value s = σ(z) (tanh: 1 − s²,
    sigmoid: s(1 − s)), rounded exactly as ``df(z)``: a forward step that has σ(z)
    gets σ'(z) without evaluating σ again."""

    name: str
    f: Callable[[np.ndarray], np.ndarray]
    df: Callable[[np.ndarray], np.ndarray]
    d2f: Callable[[np.ndarray], np.ndarray]
    ufl: Callable[[ufl.core.expr.Expr], ufl.core.expr.Expr]
    df_of_f: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None

    def derivative(self, z: np.ndarray, s: np.ndarray, out: np.ndarray) -> np.ndarray:
        """σ'(z) into ``out`` (which may be ``z``), given s = σ(z) (not ``out``)."""
        if self.df_of_f is not None:
            return self.df_of_f(s, out)
        return self.df(z, out=out)

    def ufl_derivative(self, z):
        """σ'(z) as a UFL expression, by symbolic differentiation of ``self.ufl``."""
        zz = ufl.variable(z)
        return ufl.diff(self.ufl(zz), zz)


def _into(out, value):
    """``value`` written into ``out`` (if given)."""
    if out is None:
        return value
    out[...] = value
    return out


def _array_out(z, out):
    """``out``, or a new float array of z's shape (also for a number or a 0-d array,
    where NumPy's ufuncs would return a scalar the in-place steps cannot write)."""
    return np.empty(np.shape(z)) if out is None else out


def _tanh_df(z, out=None):
    t = np.tanh(z, out=_array_out(z, out))  # 1 − tanh², in place (as 1.0 − t * t)
    np.multiply(t, t, out=t)
    return np.subtract(1.0, t, out=t)


def _tanh_df_of_f(t, out):
    np.multiply(t, t, out=out)  # the operations of _tanh_df after its tanh
    return np.subtract(1.0, out, out=out)


def _tanh_d2f(z):
    t = np.tanh(z)
    return -2.0 * t * (1.0 - t * t)


def _sigmoid(z, out=None):
    # Stable for large |z|: 0.5 (1 + tanh(z/2)), in place.
    s = np.multiply(z, 0.5, out=_array_out(z, out))
    np.tanh(s, out=s)
    s += 1.0
    s *= 0.5
    return s


def _sigmoid_df(z, out=None):
    s = _sigmoid(z, out=out)
    s *= 1.0 - s
    return s


def _sigmoid_df_of_f(s, out):
    np.subtract(1.0, s, out=out)  # s · (1 − s), as _sigmoid_df
    return np.multiply(out, s, out=out)


def _sigmoid_d2f(z):
    s = _sigmoid(z)
    return s * (1.0 - s) * (1.0 - 2.0 * s)


def _softplus(z, out=None):
    return np.logaddexp(0.0, z, out=out)


def _srelu(z, out=None, d=SMOOTH_RELU_DELTA):
    return _into(out, 0.5 * (z + np.sqrt(z * z + d * d) - d))


def _srelu_df(z, out=None, d=SMOOTH_RELU_DELTA):
    return _into(out, 0.5 * (1.0 + z / np.sqrt(z * z + d * d)))


def _srelu_d2f(z, d=SMOOTH_RELU_DELTA):
    return 0.5 * d * d / (z * z + d * d) ** 1.5


ACTIVATIONS: dict[str, Activation] = {
    "tanh": Activation("tanh", np.tanh, _tanh_df, _tanh_d2f, ufl.tanh, _tanh_df_of_f),
    "sigmoid": Activation(
        "sigmoid",
        _sigmoid,
        _sigmoid_df,
        _sigmoid_d2f,
        lambda z: 1 / (1 + ufl.exp(-z)),
        _sigmoid_df_of_f,
    ),
    "softplus": Activation(
        "softplus", _softplus, _sigmoid, _sigmoid_df, lambda z: ufl.ln(1 + ufl.exp(z))
    ),
    "smooth_relu": Activation(
        "smooth_relu",
        _srelu,
        _srelu_df,
        _srelu_d2f,
        lambda z: (z + ufl.sqrt(z * z + SMOOTH_RELU_DELTA**2) - SMOOTH_RELU_DELTA) / 2,
    ),
}


def get_activation(name: str) -> Activation:
    """The activation called ``name``; a clear error lists the valid names."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise InputError(
            f"unknown activation {show(name)}; expected one of {', '.join(ACTIVATIONS)}", "name"
        ) from None
