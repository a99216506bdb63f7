"""The forward model: NumPy reference ResNet, depth and width convergence
orders, rank independence, input errors (the batched path against the UFL forms
is tests/test_forms.py)."""

from mpi4py import MPI

import numpy as np
import pytest
from tiny import outputs_on_one_and_all_ranks

from pontryx.forms import get_activation
from pontryx.meshes import InputError, create_mesh
from pontryx.solver import ContinuumNetwork, WidthSpace


def _space(comm=MPI.COMM_WORLD, kind="unit_square", n=4, degree=1):
    return WidthSpace(create_mesh({"kind": kind, "n": n}, comm), degree)


def _samples(S, n_in=2, seed=3):
    return np.random.default_rng(seed).standard_normal((n_in, S))


KERNELS = [("dense", {}), ("lowrank", {"rank": 3}), ("local", {})]


# -- ε = 0, dense kernel: a plain NumPy ResNet ------------------------------------
def test_dense_forward_equals_numpy_resnet():
    sp = _space(n=4)
    net = ContinuumNetwork(sp, 2, 3, kernel="dense", layers=6, activation="tanh")
    theta = net.init_controls(seed=2, gain=1.0)
    theta["b"][...] = np.random.default_rng(1).standard_normal(theta["b"].shape)
    X = _samples(5)
    Yhat = net.forward(theta, X)

    W = [sp.to_canonical(theta["W"][n], axis_full=True) for n in range(net.layers)]
    b = [sp.to_canonical(theta["b"][n]) for n in range(net.layers)]
    m, E, C = (sp.to_canonical(a) for a in (sp.m, theta["E"], theta["C"]))
    u = E @ X
    for n in range(net.layers):
        u = u + net.dt * np.tanh(W[n] @ (m[:, None] * u) + b[n][:, None])
    Y = C.T @ (m[:, None] * u) + theta["d"][:, None]
    assert np.max(np.abs(Y - Yhat)) < 1e-12


# -- convergence in depth and width ------------------------------------------------
def _w(t, x, y):
    r2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(axis=-1)
    return (1.0 + 0.5 * np.cos(np.pi * t)) * np.exp(-r2) - 0.5


def _b(t, x):
    return 0.3 * np.sin(2 * np.pi * x[:, 0] + t)


def _c(x):
    return np.stack([np.cos(np.pi * x[:, 0]), x[:, 0] ** 2], axis=1)


def _fitted_order(Ns, errors):
    return -np.polyfit(np.log(Ns), np.log(errors), 1)[0]


def _w_constant(t, x, y):
    return _w(0.3, x, y)


def _depth_order(scheme, epsilon, w, b):
    """The fitted order of the outputs in N_t = 8 … 64 against N_t = 1024, with
    the layer controls sampled from the fields w, b at the layer midpoints."""
    sp = _space(kind="unit_interval", n=8)
    X = _samples(4)

    def outputs(layers):
        net = ContinuumNetwork(sp, 2, 2, scheme=scheme, epsilon=epsilon, layers=layers, T=1.0)
        theta = net.controls_from_fields(net.init_controls(), w, b, _c)
        Y = net.forward(theta, X)
        net.destroy()
        return Y

    ref = outputs(1024)
    Ns = [8, 16, 32, 64]
    return _fitted_order(Ns, [np.max(np.abs(outputs(N) - ref)) for N in Ns])


@pytest.mark.parametrize(
    "scheme,epsilon,w",
    [
        ("imex_euler", 0.0, _w),
        ("imex_euler", 0.05, _w),
        ("midpoint", 0.0, _w),
        ("midpoint", 0.05, _w),
        # Verlet's two half-updates share θⁿ; order 2 needs controls constant in depth.
        ("verlet", 0.0, _w_constant),
        ("rk4", 0.0, _w_constant),
    ],
)
def test_depth_convergence_order(scheme, epsilon, w):
    """Fitted order within 0.1 of the declared one."""
    b = _b if w is _w else (lambda t, x: _b(0.3, x))
    order = _depth_order(scheme, epsilon, w, b)
    declared = ContinuumNetwork(_space(kind="unit_interval", n=2), 2, 2, scheme=scheme).scheme
    assert abs(order - declared.order) < 0.1, order


def test_rk4_with_controls_varying_in_depth_converges_at_order_two():
    """Layer controls sampled at the midpoints of smooth fields θ(t) are a
    midpoint-rule approximation of them: RK4's outputs then converge at order 2
    (order 4 with controls constant in depth, above)."""
    order = _depth_order("rk4", 0.0, _w, _b)
    assert abs(order - 2) < 0.1, order


@pytest.mark.parametrize("degree", [1, 2])
def test_width_convergence(degree):
    """Outputs converge under mesh refinement (smooth kernel, data, readout);
    the fitted rate is reported and must be at least 1.8 (P1 nodal quadrature: 2)."""
    X = _samples(3)

    def outputs(n):
        sp = _space(kind="unit_interval", n=n, degree=degree)
        net = ContinuumNetwork(sp, 2, 2, layers=4)
        theta = net.controls_from_fields(net.init_controls(), _w, _b, _c)
        return net.forward(theta, X)

    ref = outputs(512)
    ns = [8, 16, 32, 64]
    errors = [np.max(np.abs(outputs(n) - ref)) for n in ns]
    rate = _fitted_order(ns, errors)
    print(f"P{degree} width convergence: errors {errors}, fitted rate {rate:.2f}")
    assert rate > 1.8


# -- rank independence: both parallel axes ------------------------------------------
@pytest.mark.parametrize("axis", ["width", "data"])
@pytest.mark.parametrize("kernel,options", KERNELS)
def test_same_outputs_on_any_number_of_ranks(axis, kernel, options):
    def network(width):
        return ContinuumNetwork(
            _space(width, n=4),
            2,
            2,
            kernel=kernel,
            kernel_options=dict(options),
            epsilon=0.05,
            layers=3,
        )

    serial, parallel = outputs_on_one_and_all_ranks(network, _samples(6), axis)
    assert np.max(np.abs(serial - parallel)) < 1e-12


# -- bad descriptions: errors keyed by the builder's own argument ---------------------------
@pytest.mark.parametrize(
    "kwargs,key",
    [
        ({"kernel": "convolution"}, "kernel.type"),
        ({"kernel": "lowrank"}, "kernel.rank"),
        ({"kernel": "lowrank", "kernel_options": {"rank": 10**6}}, "kernel.rank"),
        ({"kernel": "lowrank", "kernel_options": {"rank": 2.5}}, "kernel.rank"),
        ({"kernel": "dense", "kernel_options": {"rank": 2}}, "kernel.rank"),
        ({"activation": "relu6"}, "activation"),
        ({"scheme": "bdf2"}, "scheme"),
        ({"scheme": "verlet", "epsilon": 0.1}, "epsilon"),
        ({"T": -1.0}, "T"),
        ({"layers": 0}, "layers"),
        ({"epsilon": -0.5}, "epsilon"),
        ({"embedding": "fourier"}, "embedding"),
        ({"embedding": "image"}, "embedding"),
    ],
)
def test_invalid_model_descriptions_name_the_argument(kwargs, key):
    sp = _space(n=2)
    with pytest.raises(InputError) as info:
        ContinuumNetwork(sp, 2, 2, **kwargs)
    assert info.value.key == key and str(info.value).startswith(f"{key}: ")
    assert "\n" not in str(info.value) and "model." not in str(info.value)


def test_invalid_degree_and_lumping():
    mesh = create_mesh({"kind": "unit_square", "n": 2}, MPI.COMM_WORLD)
    with pytest.raises(InputError, match=r"^degree: "):
        WidthSpace(mesh, 5)
    with pytest.raises(InputError, match=r"^lumping: "):
        WidthSpace(mesh, 1, lumping="spectral")
    with pytest.raises(InputError, match=r"^lumping: "):
        WidthSpace(mesh, 2, lumping="rowsum")


def test_activations_match_ufl_and_finite_differences():
    z = np.linspace(-3, 3, 13)
    for name in ("tanh", "sigmoid", "softplus", "smooth_relu"):
        a = get_activation(name)
        h = 1e-6
        assert np.allclose(a.df(z), (a.f(z + h) - a.f(z - h)) / (2 * h), atol=1e-8)
        assert np.allclose(a.d2f(z), (a.df(z + h) - a.df(z - h)) / (2 * h), atol=1e-7)
        # σ' from σ(z) (the forward step's shortcut) rounds exactly as df(z)
        w = np.random.default_rng(0).standard_normal(1000)
        assert np.array_equal(a.derivative(w.copy(), a.f(w), np.empty_like(w)), a.df(w))
        v = w.copy()  # into z itself, as the IMEX Euler step does
        assert np.array_equal(a.derivative(v, a.f(w), out=v), a.df(w))
    with pytest.raises(InputError, match=r"^name: unknown activation 'relu6'"):
        get_activation("relu6")
