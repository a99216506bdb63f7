"""The random-field law of the initial controls (solver/model/fields.py): the
Matérn normalisation, a law that does not grow with the mesh (the former nodal
white noise does), pathwise convergence of coupled draws, the depth
correlation, the same draws on any number of ranks, and keyed errors."""

from mpi4py import MPI

import numpy as np
import pytest

from pontryx.meshes import InputError, create_mesh
from pontryx.solver import ContinuumNetwork, Layout, WidthSpace
from pontryx.solver.model.fields import FieldLaw, MaternField, RestrictedNoise, field_controls
from pontryx.solver.model.prolongation import Prolongation
from pontryx.solver.outputs.canonical import to_canonical

KERNELS = [("dense", {}), ("lowrank", {"rank": 3}), ("local", {})]


def _space(n, kind="unit_square", comm=MPI.COMM_WORLD, degree=1):
    return WidthSpace(create_mesh({"kind": kind, "n": n}, comm), degree)


def _kernel_norm(sp, W):
    """‖w‖_{L²(Ω×Ω)} with the lumped mass in x and y."""
    return np.sqrt(sp.sum(float(np.sum(sp.m[:, None] * W**2 * sp.allgather(sp.m)[None, :]))))


@pytest.mark.serial
@pytest.mark.parametrize("smoothness", [1, 2])
@pytest.mark.parametrize("kind,n", [("unit_interval", 256), ("unit_square", 32)])
def test_pointwise_variance_is_normalised(kind, n, smoothness):
    """The exact covariance T M_L Tᵀ of the discrete field has variance ≈ 1 at the
    centre of Ω (σ_M normalises the continuum field on R^d; the Neumann
    boundary is far away for ρ = 0.2)."""
    sp = _space(n, kind)
    field = MaternField(sp, 0.2, smoothness)
    T = field._T(np.diag(np.sqrt(sp.m)))  # columns: T M_L^{1/2} e_j
    var = np.sum(T**2, axis=1)
    centre = np.argmin(np.sum((sp.x - 0.5) ** 2, axis=1))
    assert var[centre] == pytest.approx(1.0, abs=0.08)
    field.destroy()


@pytest.mark.serial
def test_norms_do_not_grow_with_the_mesh():
    """‖w‖_{L²} of the field law stays put from n = 4 to 16 (mean of 4 seeds);
    nodal white noise (``init_controls(seed, gain)``) grows like √N."""
    law = FieldLaw(variance=1.0, correlation_length=0.3)
    field, nodal = [], []
    for n in (4, 8, 16):
        net = ContinuumNetwork(_space(n), 2, 2, layers=1)
        sp = net.space
        field.append(
            np.mean([_kernel_norm(sp, field_controls(net, law, s)["W"][0]) for s in range(4)])
        )
        nodal.append(_kernel_norm(sp, net.init_controls(seed=0, gain=1.0)["W"][0]))
    assert max(field) / min(field) < 1.3, field
    assert nodal[2] / nodal[0] > 3, nodal  # ‖W‖ ≈ gain √N: √(289/25) ≈ 3.4


@pytest.mark.serial
def test_coupled_draws_converge_pathwise():
    """One realisation of 𝒲 restricted to nested meshes (RestrictedNoise): the
    kernels converge, ‖I_h w_h − w_{h/2}‖/‖w_{h/2}‖ decreasing."""
    ref = _space(32)
    law = FieldLaw(variance=1.0, correlation_length=0.3, smoothness=2)
    nets = [ContinuumNetwork(_space(n), 2, 2, layers=1) for n in (4, 8, 16)]
    W = [field_controls(net, law, 0, RestrictedNoise(net.space, ref))["W"][0] for net in nets]
    diffs = []
    for i in range(2):
        P = Prolongation(nets[i].space, nets[i + 1].space)
        sp = nets[i + 1].space
        diffs.append(_kernel_norm(sp, P.kernel(W[i]) - W[i + 1]) / _kernel_norm(sp, W[i + 1]))
    assert diffs[1] < 0.7 * diffs[0] and diffs[1] < 0.5, diffs


def test_depth_correlation():
    """τ = null: one draw for all layers; τ = 0: independent layers; τ > 0: the
    correlation of neighbouring layers is exp(−Δt/τ)."""
    net = ContinuumNetwork(_space(8), 2, 2, kernel="lowrank", kernel_options={"rank": 8}, layers=4)
    same = field_controls(net, FieldLaw(bias_variance=1.0), 0)
    assert all(np.array_equal(same["A"][0], same["A"][n]) for n in range(4))
    assert np.any(same["b"][0] != 0)

    def corr(tau):
        A = to_canonical(net, field_controls(net, FieldLaw(depth_correlation=tau), 0))["A"]
        a, b = A[:-1].ravel(), A[1:].ravel()
        return float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))

    assert abs(corr(0.0)) < 0.15
    assert corr(0.5) == pytest.approx(np.exp(-net.dt / 0.5), abs=0.15)


@pytest.mark.parametrize("kernel,options", KERNELS)
def test_same_draws_on_any_number_of_ranks(kernel, options):
    law = FieldLaw(bias_variance=0.5, depth_correlation=0.3)

    def draw(comm):
        net = ContinuumNetwork(
            _space(4, comm=comm), 2, 2, kernel=kernel, kernel_options=dict(options), layers=3
        )
        out = to_canonical(net, net.init_controls(seed=3, law=law))
        net.destroy()
        return out

    serial = draw(Layout.create(MPI.COMM_SELF).width)
    parallel = draw(MPI.COMM_WORLD)
    for k, v in serial.items():
        assert np.allclose(v, parallel[k], rtol=0, atol=1e-12 * max(1.0, np.abs(v).max())), k


def test_errors_are_keyed():
    sp = _space(2)
    with pytest.raises(InputError, match=r"^correlation_length: "):
        MaternField(sp, 0.0)
    with pytest.raises(InputError, match=r"^smoothness: "):
        MaternField(sp, 0.3, 0)
    with pytest.raises(InputError, match=r"^variance: "):
        FieldLaw(variance=-1.0)
    with pytest.raises(InputError, match=r"^depth_correlation: "):
        FieldLaw(depth_correlation=-1.0)


def test_matern_parameters_checked_in_one_place():
    """fields.matern serves the initial law and the noise: NumPy scalars are numbers,
    β an integer in 1 … 32, and a scale outside the float range is refused (it was
    an OverflowError); the usual values are those of the closed form."""
    import math

    from pontryx.solver.model.fields import matern

    beta, nu, kappa, sigma = matern(2, np.float64(0.3), np.int64(2))
    assert (beta, nu) == (2, 3.0) and kappa == math.sqrt(24) / 0.3
    assert sigma == math.sqrt(math.gamma(3) / (math.gamma(4) * 4 * math.pi * kappa**6))
    assert matern(3, 0.3, 32)[3] > 0  # κ^{2ν} overflows: σ_M from logarithms
    for rho, b, key in [(0.3, 2.0, "smoothness"), (0.3, 33, "smoothness"),
                        (0.3, True, "smoothness"), (-1.0, 1, "correlation_length"),
                        (1e-300, 2, "correlation_length")]:  # fmt: skip
        with pytest.raises(InputError) as e:
            matern(2, rho, b)
        assert e.value.key == key
