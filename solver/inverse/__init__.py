"""A continuum network as the prior of a PDE inverse problem (issue 16, part 1).

Recover κ in −∇·(κ∇u) = f from noisy observations of u, with log κ(x) the output
of a continuum network at the coordinates x:

* :mod:`.expressions`  — coefficients as numbers or safe expressions in x;
* :mod:`.pde`          — the state equation and its adjoint (DOLFINx/PETSc, forms from
  :mod:`pontryx.forms.elliptic`);
* :mod:`.observations` — point and field observation operators, data files, synthetic data;
* :mod:`.misfit`       — j(m) = Φ(u(m)) + R(m) and its adjoint gradient in the nodal values of m;
* :mod:`.functional`   — J(θ) = j(m(θ)) + R_net(θ), the network chained with the PDE;
* :mod:`.nodal`        — the classical anchor: m as a nodal field with H¹ (Tikhonov)
  regularisation, minimised by PETSc TAO.
"""

from pontryx.solver.inverse.functional import InverseFunctional, KappaError
from pontryx.solver.inverse.misfit import ReducedMisfit, relative_error
from pontryx.solver.inverse.pde import EllipticPDE

__all__ = ["EllipticPDE", "InverseFunctional", "KappaError", "ReducedMisfit", "relative_error"]
