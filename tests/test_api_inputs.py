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


@pytest.mark.parametrize("method", ["lmvm", "adam", "msa", "oneshot", "langevin"])
def test_minimize_refuses_controls_of_another_network(method):
    """Controls of another network (another mesh, or other layers) were refused by rf
    and taylor_test but reached the trainers: numpy broadcast errors, a PETSc error,
    an IndexError."""
    rf, theta = ellipses_problem()
    fewer = ContinuumNetwork(rf.net.space, 2, 2, layers=2).init_controls(seed=0)
    for other in (fewer, ellipses_problem(mesh={"kind": "unit_square", "n": 2})[1]):
        with pytest.raises(InputError, match="controls of another network") as e:
            minimize(rf, other, method, max_iterations=1)
        assert e.value.key == "W"
    for bad in (None, 1, rf.net):
        with pytest.raises(InputError) as e:
            minimize(bad, theta, method, max_iterations=1)
        assert e.value.key == "rf"
    with pytest.raises(InputError) as e:
        minimize(rf, dict(theta), method, max_iterations=1)
    assert e.value.key == "controls"
    rf.net.destroy()


def test_controls_convert_in_every_way_of_storing():
    """``theta |= {…}`` and ``setdefault`` stored a Fortran-ordered array as given,
    which training then never updated."""
    rf, theta = ellipses_problem()
    theta |= {"W": np.asfortranarray(theta["W"])}
    assert isinstance(theta, Controls) and theta["W"].flags.c_contiguous
    shape = theta.pop("b").shape
    assert theta.setdefault("b", np.zeros(shape, np.float32)).dtype == np.float64
    assert theta["b"].flags.c_contiguous and theta["b"].dtype == np.float64
    rf.net.destroy()


def test_library_arguments_of_the_wrong_kind_are_keyed():
    """Each escaped as an AttributeError, KeyError or TypeError (or was keyed by
    another argument)."""
    from pontryx.solver import taylor_test
    from pontryx.solver.config import read_yaml, validate_config

    rf, theta = ellipses_problem()
    cases = [
        ("mesh", lambda: WidthSpace(None)),
        ("comm", lambda: create_mesh({"kind": "unit_square", "n": 2}, None)),
        ("net", lambda: ReducedFunctional(None, np.zeros((4, 2)), np.zeros(4, int))),
        ("W", lambda: rf({"W": 1})),
        ("nope", lambda: theta.subset(["nope"])),
        ("direction", lambda: rf.hessian_action(theta, None)),
        ("direction", lambda: taylor_test(rf, theta, None)),
        ("law", lambda: rf.net.init_controls(law="x")),
        ("path", lambda: read_yaml(None)),
        ("ranks", lambda: validate_config({}, ranks=0)),
        ("ranks", lambda: validate_config({}, ranks=2.5)),
        ("config", lambda: validate_config(None)),
    ]
    for key, call in cases:
        with pytest.raises(InputError) as e:
            call()
        assert e.value.key == key and "\n" not in str(e.value), (key, str(e.value))
    rf.net.destroy()


def test_train_levels_checks_its_levels():
    """A 1D level after a 2D one ended in DOLFINx's "Missing IndexMap"; levels that
    are not Levels, or controls of another network, in numpy errors."""
    from pontryx.solver.training.levels import Level, train_levels

    rf2, theta2 = ellipses_problem(mesh={"kind": "unit_square", "n": 2})
    rf1, theta1 = ellipses_problem()
    cases = [
        ("levels.0", [1, 2]),
        ("levels", []),
        ("levels.0.rf", [Level(rf2.net, rf1, 1, controls=theta2)]),
        ("levels.0.controls.W", [Level(rf2.net, rf2, 1, controls=theta1)]),
        ("levels.1", [Level(rf2.net, rf2, 1, controls=theta2), Level(rf1.net, rf1, 1)]),
    ]
    for key, levels in cases:
        with pytest.raises(InputError) as e:
            train_levels(levels)
        assert e.value.key == key, str(e.value)
    rf1.net.destroy()
    rf2.net.destroy()


def test_more_library_arguments_are_keyed():
    """The re-audit's variants: each had escaped as a TypeError, AttributeError,
    KeyError or UFuncTypeError (minimize's callbacks only after iterations)."""
    from types import MappingProxyType

    from pontryx.solver import taylor_test
    from pontryx.solver.app.problem import build_problem
    from pontryx.solver.config import validate_config

    rf, theta = ellipses_problem()
    cases = [
        ("names", lambda: theta.subset(None)),
        ("other", lambda: theta.dot(None)),
        ("other", lambda: theta.axpy(1.0, None)),
        ("a", lambda: theta.axpy("a", theta)),
        ("arrays", lambda: Controls(5, MPI.COMM_WORLD)),
        ("comm", lambda: Controls({"d": np.zeros(2)}, None)),
        ("rf", lambda: taylor_test(None, theta, theta.subset(["b"]))),
        ("test_rf", lambda: minimize(rf, theta, "adam", max_iterations=1, test_rf=5)),
        ("on_record", lambda: minimize(rf, theta, "adam", max_iterations=1, on_record=5)),
        ("bounds", lambda: minimize(rf, theta, "lmvm", max_iterations=1, bounds={"W": 1.0})),
        ("state", lambda: minimize(rf, theta, "adam", max_iterations=1, state=5)),
        ("state", lambda: minimize(rf, theta, "adam", max_iterations=1, state={})),
        ("nonsense", lambda: minimize(rf, theta, "adam", max_iterations=1, nonsense=1)),
        ("layout", lambda: ReducedFunctional(rf.net, np.zeros((4, 2)), np.zeros(4, int), layout=5)),
        ("config", lambda: build_problem(None, MPI.COMM_WORLD)),
        ("comm", lambda: build_problem(validate_config({"data": {"name": "ellipses"}}), None)),
        ("base_dir", lambda: validate_config({}, base_dir=5)),
    ]
    before = theta.copy()
    for key, call in cases:
        with pytest.raises(InputError) as e:
            call()
        assert e.value.key == key and "\n" not in str(e.value), (key, str(e.value))
    assert all(np.array_equal(theta[k], before[k]) for k in theta)  # refused before a step
    # what works: a dict of arrays (or lists) where Controls are read, NumPy scalars as
    # options, any mapping as a configuration
    J = rf(dict(theta))
    assert rf.value_and_gradient(dict(theta))[0] == J
    direction = {"W": (0.1 * theta["W"]).tolist()}
    assert taylor_test(rf, theta, direction).min_rate >= 1.95
    options = {"learning_rate": np.float32(0.01), "batch_size": np.int64(8)}
    minimize(rf, theta, "adam", MappingProxyType(options), max_iterations=np.int64(2))
    config = validate_config(MappingProxyType({"data": MappingProxyType({"name": "ellipses"})}))
    assert config.data["name"] == "ellipses"
    rf.net.destroy()


def test_train_levels_checks_every_level_before_training():
    """Level 1's bad max_iterations or rf_test was found after level 0 had trained
    (its controls changed in place), and keyed without the level."""
    from pontryx.solver.training.levels import Level, train_levels

    rf2, theta2 = ellipses_problem(mesh={"kind": "unit_square", "n": 2})
    rf3, _ = ellipses_problem(mesh={"kind": "unit_square", "n": 3})
    before = theta2.copy()
    for key, second in (
        ("levels.1.max_iterations", Level(rf3.net, rf3, -1)),
        ("levels.1.rf_test", Level(rf3.net, rf3, 1, rf_test=5)),
        ("levels.1.rf_test", Level(rf3.net, rf3, 1, rf_test=rf2)),
        ("levels.1.rf", Level(None, None, 1)),
    ):
        with pytest.raises(InputError) as e:
            train_levels([Level(rf2.net, rf2, 2, controls=theta2), second])
        assert e.value.key == key, str(e.value)
    assert all(np.array_equal(theta2[k], before[k]) for k in theta2)
    rf2.net.destroy()
    rf3.net.destroy()
