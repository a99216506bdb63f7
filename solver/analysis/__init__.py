"""pontryx.solver.analysis — looking at training runs after the fact.

:mod:`.diffusion_maps` (Coifman & Lafon's diffusion maps, NumPy/SciPy) and
:mod:`.paths` (``pontryx analyze``: the controls recorded along runs, embedded
and plotted).
"""

from .diffusion_maps import DiffusionMap, bandwidth, diffusion_map

__all__ = ["DiffusionMap", "bandwidth", "diffusion_map"]
