"""The registries of pontryx's building blocks, each defined once: kernels, depth
schemes, mass lumpings and training methods (activations and embeddings are
registered where they are defined, in :mod:`pontryx.forms`; mesh kinds in
:mod:`pontryx.meshes.kinds`; data sets in :mod:`pontryx.solver.data.dataset`).

One line per entry: name → ``"module:Class"`` (below ``pontryx.solver``). Light to
import: the configuration schema checks names against these tables, and the
classes (which bring DOLFINx and PETSc) are imported on first use by
:func:`load`. Adding a kernel, scheme or method is one module plus one line
here; what the rest of pontryx needs to know about it (a kernel's options and
output fields, a scheme's order and traits, a method's options) is declared on
the class itself.
"""

from __future__ import annotations

import importlib

__all__ = [
    "EXCHANGES",
    "GRADIENT_TYPES",
    "KERNELS",
    "LUMPINGS",
    "METHODS",
    "NEWTON_TYPES",
    "SCHEMES",
    "load",
]

KERNELS = {
    "dense": "model.kernels.dense:DenseKernel",
    "lowrank": "model.kernels.lowrank:LowRankKernel",
    "local": "model.kernels.local:LocalKernel",
    "conv": "model.kernels.conv:ConvKernel",
}

SCHEMES = {
    "imex_euler": "model.schemes.imex_euler:IMEXEuler",
    "midpoint": "model.schemes.midpoint:IMEXMidpoint",
    "verlet": "model.schemes.verlet:Verlet",
    "rk4": "model.schemes.rk4:RK4",
}

#: Mass lumpings of V_h (see :class:`~pontryx.solver.model.width.WidthSpace`).
LUMPINGS = ("auto", "rowsum", "hrz")

#: How the width ranks exchange rows (``parallel.exchange``, :mod:`~pontryx.solver.model.shared`).
EXCHANGES = ("shared", "mpi")

#: PETSc TAO types offered as methods: gradient-only and Newton-type.
GRADIENT_TYPES = ("lmvm", "blmvm", "bqnls", "bncg", "cg")
NEWTON_TYPES = ("ntr", "nls", "ntl", "bnls", "bntr", "bntl")

METHODS = {
    **{t: f"training.tao:{t.upper()}" for t in GRADIENT_TYPES + NEWTON_TYPES},
    "tao": "training.tao:TaoTrainer",
    "sgd": "training.stochastic:SGD",
    "adam": "training.stochastic:Adam",
    "langevin": "training.stochastic:Langevin",
    "msa": "training.msa:MSA",
    "emsa": "training.msa:EMSA",
    "lbfgs": "training.lbfgs:LBFGS",
    "oneshot": "training.oneshot:OneShot",
}


def load(registry: dict[str, str], name: str):
    """The class registered as ``name`` in ``registry`` (imported on first use)."""
    module, cls = registry[name].split(":")
    return getattr(importlib.import_module(f"{__package__}.{module}"), cls)
