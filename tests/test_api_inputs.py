"""The library's arguments checked as the command line's are (an InputError keyed by
the argument, one line, on every rank), and controls of any memory order trained:
the findings of an audit of the Python API (each once a wrong number, a silent
truncation or a deep traceback)."""

import math

from mpi4py import MPI

import numpy as np
import pytest
from tiny import ellipses_problem

from pontryx.meshes import InputError, create_mesh
from pontryx.solver import ContinuumNetwork, Controls, ReducedFunctional, WidthSpace, minimize
from pontryx.solver.errors import NonFiniteError


@pytest.mark.parametrize("method", ["lmvm", "adam", "sgd", "lbfgs"])
def test_controls_of_any_memory_order_are_trained(method):
    """A Fortran-ordered W was never updated by the TAO methods and adam (they wrote
    through flat views, which of such an array are copies): Controls keeps C order."""
    rf, theta = ellipses_problem()
    ref = theta.copy()
    theta["W"] = np.asfortranarray(theta["W"])
    assert theta["W"].flags.c_contiguous
    minimize(rf, theta, method, max_iterations=3)
    minimize(rf, ref, method, max_iterations=3)
    assert not np.array_equal(theta["W"], rf.net.init_controls(seed=0)["W"])
    assert all(np.array_equal(theta[k], ref[k]) for k in ref)
    rf.net.destroy()


def test_controls_arithmetic_is_checked():
    rf, theta = ellipses_problem()
    assert (-theta).norm() == theta.norm() and (theta / 2).norm() == 0.5 * theta.norm()
    theta["b"][0, 0] = np.nan
    assert math.isnan(theta.max_abs())  # was the largest finite value
    other = ContinuumNetwork(rf.net.space, 2, 2, layers=1).init_controls(seed=0)
    with pytest.raises(InputError, match="controls of another network") as e:
        theta.copy().axpy(1.0, other)  # was broadcast into every layer
    assert e.value.key in theta
    with pytest.raises(InputError, match="controls of another network"):
        theta.dot(other)
    with pytest.raises(InputError, match="another network") as e:
        rf(other)  # was an IndexError
    with pytest.raises(InputError, match="missing") as e:
        rf(theta.subset(["W", "b"]))  # was KeyError: 'E'
    with pytest.raises(InputError, match="another network") as e:
        rf.hessian_action(theta, other.subset(["W"]))
    assert e.value.key == "W"
    with pytest.raises(InputError, match="expected real numbers") as e:
        Controls({"W": np.zeros(2, complex)}, MPI.COMM_WORLD)
    assert e.value.key == "W"
    assert Controls({"W": np.zeros(2, int)}, MPI.COMM_WORLD)["W"].dtype == np.float64
    rf.net.destroy()


@pytest.mark.parametrize("method", ["lmvm", "lbfgs", "msa", "emsa", "adam"])
def test_non_finite_initial_controls_are_one_error_for_every_method(method):
    """lbfgs returned DIVERGED_LS_FAILURE, msa/emsa a PETSc error 83."""
    rf, theta = ellipses_problem()
    theta["b"][0, 0] = np.inf
    with pytest.raises(NonFiniteError, match=r"iteration 0 \(the initial controls"):
        minimize(rf, theta, method, max_iterations=2)
    rf.net.destroy()


def test_reduced_functional_arguments():
    rf, theta = ellipses_problem()
    X, y = rf.X.T, rf.y
    for S in (0, -5, 2.5, len(X) - 1, True):  # S = 0 divided by zero, -5 gave J < 0
        with pytest.raises(InputError, match="global number of samples") as e:
            ReducedFunctional(rf.net, X, y, S=S)
        assert e.value.key == "S"
    assert ReducedFunctional(rf.net, X, y, S=len(X) + 3).S == len(X) + 3
    with pytest.raises(InputError, match="S_local") as e:
        ReducedFunctional(rf.net, X[:0], y[:0])  # (ZeroDivisionError at its first call)
    for value in (-1.0, float("nan"), "a"):  # the setters skipped the check
        with pytest.raises(InputError, match="finite number ≥ 0") as e:
            rf.alpha = value
        assert e.value.key == "alpha"
    with pytest.raises(InputError, match="'samples' or 'rows'") as e:
        ReducedFunctional(rf.net, X, y, threads="x")
    fresh = ReducedFunctional(rf.net, X, y)
    with pytest.raises(InputError, match="no evaluation yet") as e:
        fresh.metric()  # was a TypeError on None
    fresh(theta)
    assert 0 <= fresh.metric() <= 1
    rf.net.destroy()


def test_network_arguments():
    space = WidthSpace(create_mesh({"kind": "unit_interval", "n": 4}, MPI.COMM_WORLD))
    bad = [
        ({"T": math.inf}, "T"),  # gave J = nan
        ({"T": "1"}, "T"),
        ({"layers": 2.9}, "layers"),  # became 2
        ({"layers": 10**30}, "layers"),
        ({"layers": None}, "layers"),
        ({"epsilon": "a"}, "epsilon"),
        ({"kernel": []}, "kernel"),
        ({"scheme": ["midpoint"]}, "scheme"),
        ({"kernel_options": [1]}, "kernel_options"),
        ({"input_shape": (3, 3)}, "input_shape"),
        ({"train_embedding": "no"}, "train_embedding"),  # made E trainable
    ]
    for change, key in bad:
        with pytest.raises(InputError) as e:
            ContinuumNetwork(space, 2, 2, **change)
        assert e.value.key == key, (change, e.value)
    for n_in, n_out, key in ((0, 2, "n_in"), (2.7, 2, "n_in"), ("2", 2, "n_in"), (2, -3, "n_out")):
        with pytest.raises(InputError) as e:
            ContinuumNetwork(space, n_in, n_out)
        assert e.value.key == key
    with pytest.raises(InputError) as e:
        ContinuumNetwork(None, 2, 2)
    assert e.value.key == "space"
    net = ContinuumNetwork(space, 2, 2, layers=2)
    for seed in (-1, 1.5, "a", None, True):
        with pytest.raises(InputError) as e:
            net.init_controls(seed=seed)
        assert e.value.key == "seed"
    for gain in (math.nan, math.inf, -1.0):
        with pytest.raises(InputError) as e:
            net.init_controls(gain=gain)
        assert e.value.key == "gain"
    net.destroy()


def test_minimize_arguments():
    rf, theta = ellipses_problem()
    for value in (2.5, "a", None, math.nan):  # 2.5 ran 2 iterations
        with pytest.raises(InputError, match="integer ≥ 0") as e:
            minimize(rf, theta, "lmvm", max_iterations=value)
        assert e.value.key == "max_iterations"
    with pytest.raises(InputError) as e:
        minimize(rf, theta, ["lmvm"])
    assert e.value.key == "method"
    with pytest.raises(InputError) as e:
        minimize(rf, theta, "lmvm", [1])
    assert e.value.key == "options"
    rf.net.destroy()
