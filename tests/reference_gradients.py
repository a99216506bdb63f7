"""Reference gradients of the shipped examples (kept across refactorings).

For every ``examples/*.yaml`` (with 48 training samples, to stay fast) the value
J and the gradient ∇J at the initial controls θ₀ and at θ₀ + 0.1·δ (δ a seeded
direction) are fingerprinted: J, and for every trainable control the sum, the
Euclidean norm and the inner products with three seeded standard-normal arrays
drawn in the canonical dof order — numbers that do not depend on the rank
count. ``python tests/reference_gradients.py --write`` stores them in
``tests/data/reference_gradients.json``; ``tests/test_reference.py`` compares.

The reference was written on one rank before the sweep/loop refactoring
(issue #10); on the machine that wrote it the values were bit-identical after
it. It was rewritten when the initial controls became random fields (issue
#14), after checking that the fingerprints at the former nodal initial controls
(``init_controls(seed, gain)`` with the examples' former gains) were unchanged.
Across machines and rank counts BLAS kernels and reduction orders differ in the
last bits, so the test allows a relative 1e-11.
"""

from mpi4py import MPI  # noqa: I001

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "tests" / "data" / "reference_gradients.json"
OVERRIDES = ("data.n_train=48", "data.n_test=16", "parallel.width=null", "parallel.data=null")
EXAMPLES = ("cube", "digits", "disk", "ellipses", "peaks", "sine", "swiss_roll")


def fingerprints(name: str, comm=MPI.COMM_WORLD) -> dict:
    from pontryx.solver.app.problem import build_problem
    from pontryx.solver.config import load_config
    from pontryx.solver.outputs.canonical import random_direction, to_canonical

    config = load_config(ROOT / "examples" / f"{name}.yaml", OVERRIDES, ranks=comm.size)
    problem = build_problem(config, comm)
    net, rf = problem.net, problem.rf
    theta0 = problem.controls
    delta = random_direction(net, theta0, net.trainable, seed=7)
    out = {}
    for label, theta in (("init", theta0), ("moved", theta0.copy().axpy(0.1, delta))):
        J, grad = rf.value_and_gradient(theta)
        canon = to_canonical(net, grad.subset(net.trainable))
        rng = np.random.default_rng(11)
        entry = {"J": float(J)}
        for key in net.trainable:
            g = canon[key]
            probes = [float(np.vdot(rng.standard_normal(g.shape), g)) for _ in range(3)]
            entry[key] = [float(g.sum()), float(np.linalg.norm(g)), *probes]
        out[label] = entry
    problem.destroy()
    return out


def main() -> None:
    data = {name: fingerprints(name) for name in EXAMPLES}
    if "--write" in sys.argv and MPI.COMM_WORLD.rank == 0:
        STORE.write_text(json.dumps(data, indent=1) + "\n")
    elif MPI.COMM_WORLD.rank == 0:
        print(json.dumps(data, indent=1))


if __name__ == "__main__":
    main()
