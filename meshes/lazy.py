"""Package names loaded on first use (PEP 562), for the three pontryx packages.

``pontryx.meshes``, ``pontryx.forms`` and ``pontryx.solver`` re-export names that
live in submodules; loading them all eagerly would import DOLFINx and PETSc
with the package, even for the light registries and the configuration schema.
:func:`lazy_exports` gives a package ``__getattr__``/``__dir__``/``__all__``
that import a submodule when one of its names is first used. (Here, in the
lowest layer of the data flow, so that every package can use it.)
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: dict[str, str]):
    """``(__getattr__, __dir__, __all__)`` for ``package``: ``exports`` maps each
    public name to the submodule (relative to the package) that defines it."""
    names = sorted(exports)

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__():
        return names

    return __getattr__, __dir__, names
