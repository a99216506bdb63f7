"""pontryx.solver.analysis — looking at training runs after the fact.

:mod:`.diffusion_maps` (Coifman & Lafon's diffusion maps, NumPy/SciPy); the
command that embeds and plots the controls recorded along runs, ``pontryx
analyze``, is :mod:`pontryx.solver.app.analyze`.
"""

from .diffusion_maps import DiffusionMap, bandwidth, diffusion_map

__all__ = ["DiffusionMap", "bandwidth", "diffusion_map"]
