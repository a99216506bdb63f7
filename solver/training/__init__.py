"""Training: every method is a :class:`Trainer`; :func:`train` is the one loop.

    from pontryx.solver.training import minimize
    result = minimize(rf, controls, "lmvm", {"gatol": 1e-6}, max_iterations=200, test_rf=rf_test)
    result.controls, result.history[-1].test_metric, result.reason

(:func:`minimize` is :func:`make_trainer` followed by :func:`train`).

Methods (:data:`pontryx.solver.registry.METHODS`): PETSc TAO (:mod:`.tao`:
``lmvm``, ``blmvm``, ``bqnls``, ``bncg``, ``cg``; Newton-type ``ntr``, ``nls``,
… with the exact Hessian action; ``tao`` for any of them by the option
``type``), pontryx's memory-lean L-BFGS (:mod:`.lbfgs`: ``lbfgs``),
stochastic (:mod:`.stochastic`: ``sgd``, ``adam``, ``langevin``), the
Pontryagin sweeps (:mod:`.msa`: ``msa``, ``emsa``) and the one-shot
Euler–Lagrange solve (:mod:`.oneshot`: ``oneshot``). Multilevel training
(nested iteration in width and depth, any method) is
:func:`pontryx.solver.training.levels.train_levels`.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pontryx.meshes.errors import InputError, show
from pontryx.solver.errors import NonFiniteError
from pontryx.solver.registry import METHODS, load
from pontryx.solver.training.base import Callback, Record, Trainer
from pontryx.solver.training.loop import TrainResult, minimize, train

__all__ = [
    "METHODS",
    "Callback",
    "NonFiniteError",
    "Record",
    "TrainResult",
    "Trainer",
    "make_trainer",
    "method_class",
    "minimize",
    "train",
]


def method_class(name: str) -> type[Trainer]:
    """The Trainer class of method ``name``; an unknown name is keyed ``method``."""
    if name not in METHODS:
        expected = ", ".join(METHODS)
        raise InputError(f"unknown method {show(name)}; expected one of {expected}", "method")
    return load(METHODS, name)


def make_trainer(name: str, rf, controls, options: dict | None = None, bounds=None) -> Trainer:
    """The trainer called ``name`` on (rf, controls), keeping them in ``bounds`` (a
    :class:`~pontryx.solver.model.bounds.Bounds`, or None); option errors keyed by
    the option, a method without bounds refuses them (keyed ``bounds``). NumPy
    scalars among the options are taken as the Python numbers they hold, and any
    mapping as a dict (``np.float32(0.01)`` had been refused as "not a number")."""
    return method_class(name)(rf, controls, bounds=bounds, **_plain(dict(options or {})))


def _plain(value):
    """``value`` with NumPy scalars as Python numbers and mappings as dicts (nested)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value
