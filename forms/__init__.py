"""pontryx.forms — the mathematics of continuum networks in UFL.

Mass, lumped mass and stiffness forms, activations with exact derivatives,
embedding and readout functions, the local kernel, and the per-sample forward
residual with its adjoint derived by ``ufl.derivative``/``ufl.adjoint``.
No assembly or solver logic lives here.
"""

from .activations import ACTIVATIONS, Activation, get_activation
from .operators import function_space, lumped_measure, mass_form, row_sum_form, stiffness_form

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "function_space",
    "get_activation",
    "lumped_measure",
    "mass_form",
    "row_sum_form",
    "stiffness_form",
]
