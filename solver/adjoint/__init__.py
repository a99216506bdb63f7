"""pontryx.solver.adjoint — sweeps through depth and the reduced functional.

:mod:`.sweep` (the one loop through depth: forward, adjoint, trajectory,
tangent-linear and second-order sweeps, with the storage strategies
:class:`Full`, :class:`Every`, :class:`Reverse`), :mod:`.continuous` (the
optimise-then-discretise costate), :mod:`.reduced` (:class:`ReducedFunctional`,
:class:`Regulariser`), :mod:`.riesz` (the L²(M_L) Riesz map), :mod:`.taylor`
(Taylor tests, first and second order).
"""

from pontryx.solver.adjoint.continuous import continuous_adjoint_gradient
from pontryx.solver.adjoint.reduced import ReducedFunctional, Regulariser, layer_gradient_norms
from pontryx.solver.adjoint.riesz import METRICS, RieszMap, check_metric, l2_weights
from pontryx.solver.adjoint.sweep import Every, Full, Reverse, Storage, Sweep, SweepResult, storage
from pontryx.solver.adjoint.taylor import TaylorResult, taylor_test, taylor_test_map

__all__ = [
    "METRICS",
    "Every",
    "Full",
    "ReducedFunctional",
    "Regulariser",
    "Reverse",
    "RieszMap",
    "Storage",
    "Sweep",
    "SweepResult",
    "TaylorResult",
    "check_metric",
    "continuous_adjoint_gradient",
    "l2_weights",
    "layer_gradient_norms",
    "storage",
    "taylor_test",
    "taylor_test_map",
]
