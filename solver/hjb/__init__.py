"""Hamilton–Jacobi–Bellman in reduced dimension (issue 16, part 2).

* :mod:`.system`   — two-state control systems with a separable Hamiltonian: the
  two-dof continuum network with a fixed kernel and the bias as control, and LQR;
* :mod:`.scheme`   — the value function on a DOLFINx grid by a monotone upwind scheme,
  and the feedback law u ↦ θ*(t, u);
* :mod:`.ranges`   — a priori bounds of every quantity of a study (refused when not finite);
* :mod:`.compare`  — closed-loop costs of the feedback law against the open-loop
  Pontryagin/L-BFGS solutions that pontryx finds for the same reduced network.
"""
