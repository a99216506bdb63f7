"""The sweep's workspace: records and temporaries are given back once consumed
(nothing stays lent), repeated gradients reuse the pool without growing it and
are bit-identical to a sweep without pooling, on any number of ranks."""

import numpy as np
import pytest
from test_adjoint import _problem

from pontryx.solver import Workspace
from pontryx.solver.model.workspace import HEAP

CASES = [
    ("imex_euler", 0.0, None),
    ("imex_euler", 0.0, "sqrt"),
    ("imex_euler", 0.0, 3),
    ("imex_euler", 0.1, None),
    ("midpoint", 0.0, None),
    ("midpoint", 0.1, 2),
    ("verlet", 0.0, "reverse"),
]


def test_pool_recycles_only_its_own_arrays():
    ws = Workspace()
    a = ws.take((3, 4))
    foreign = np.zeros((3, 4))
    ws.give(foreign, None)  # ignored
    assert ws.lent == 1 and ws.nbytes == 0
    ws.give(a)
    ws.give(a)  # a second give is ignored
    assert ws.lent == 0 and ws.nbytes == a.nbytes
    assert ws.take((3, 4)) is a and ws.take((3, 4)) is not a
    ws.end()
    assert ws.lent == 0
    c = ws.take((3, 4))
    assert ws.replaced(c, c) is c and ws.lent == 1  # the operation returned its input
    assert ws.replaced(c, foreign) is foreign and ws.lent == 0
    ws.clear()
    assert ws.nbytes == 0
    assert HEAP.take((2,)).shape == (2,) and HEAP.lent == 0


@pytest.mark.parametrize("kernel", ["dense", "lowrank"])
@pytest.mark.parametrize("scheme,epsilon,checkpoint", CASES)
def test_sweeps_reuse_the_pool(kernel, scheme, epsilon, checkpoint):
    options = {"rank": 3} if kernel == "lowrank" else {}
    net, theta, rf = _problem(
        kernel=kernel,
        options=options,
        scheme=scheme,
        epsilon=epsilon,
        layers=6,
        checkpoint=checkpoint,
    )
    ws = net.workspace
    J0, g0 = rf.value_and_gradient(theta)
    assert ws.lent == 0
    held = ws.nbytes
    for _ in range(2):
        J, g = rf.value_and_gradient(theta)
        assert ws.lent == 0 and ws.nbytes == held
        assert J == J0
        for k in g:
            assert np.array_equal(g[k], g0[k]), k
    # without pooling: the same numbers
    net.workspace = HEAP
    J, g = rf.value_and_gradient(theta)
    assert J == J0
    for k in g:
        assert np.array_equal(g[k], g0[k]), k


def test_checkpointing_holds_fewer_arrays():
    held = {}
    for checkpoint in (None, "sqrt"):
        net, theta, rf = _problem(layers=16, checkpoint=checkpoint)
        rf.value_and_gradient(theta)
        held[checkpoint] = net.workspace.nbytes
    assert held["sqrt"] < 0.5 * held[None]


@pytest.mark.parametrize("scheme,epsilon", [("imex_euler", 0.0), ("midpoint", 0.1)])
def test_gradient_reuses_the_previous_gradient_only_when_no_one_holds_it(scheme, epsilon):
    """A gradient nobody holds is written into by the next call (the same values);
    a held gradient, or a view of one of its arrays, is never overwritten."""
    _, theta, rf = _problem(scheme=scheme, epsilon=epsilon, layers=5)
    _, g = rf.value_and_gradient(theta)
    ref = g.copy()
    address = g["W"].ctypes.data
    del g
    _, g = rf.value_and_gradient(theta)
    assert g["W"].ctypes.data == address  # reused
    assert all(np.array_equal(g[k], ref[k]) for k in ref)
    held, view = g, g["b"][1]
    _, g = rf.value_and_gradient(theta)
    assert g["W"].ctypes.data != held["W"].ctypes.data
    assert all(np.array_equal(held[k], ref[k]) for k in ref)
    del held
    _, g2 = rf.value_and_gradient(theta)  # g held: new arrays again
    assert g2["b"].ctypes.data != g["b"].ctypes.data
    assert np.array_equal(view, ref["b"][1])
    assert all(np.array_equal(g2[k], ref[k]) for k in ref)
