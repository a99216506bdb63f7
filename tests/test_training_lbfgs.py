"""pontryx's L-BFGS (solver/training/lbfgs.py): the strong-Wolfe line search, the
two-loop recursion in the L²(M_L) metric, convergence, failure, and resumption
after any iteration (through a checkpoint file, on 1 and 2 ranks)."""

from __future__ import annotations

import itertools
import math
import re

import pytest
from test_training_gradient import _all, _problem, _roundtrip, _same

from pontryx.solver.training import make_trainer, method_class, minimize
from pontryx.solver.training.lbfgs import strong_wolfe


def _wolfe(phi, f0, g0, a, f, c1=1e-4, c2=0.9):
    _, g = phi(a)
    return f <= f0 + c1 * a * g0 and abs(g) <= -c2 * g0


@pytest.mark.parametrize(
    "phi",
    [
        lambda a: ((a - 3.0) ** 2, 2 * (a - 3.0)),  # minimum beyond the first trial
        lambda a: ((a - 0.01) ** 2, 2 * (a - 0.01)),  # far shorter than the first trial
        lambda a: (math.cos(a + 0.5) + 0.05 * a, -math.sin(a + 0.5) + 0.05),  # non-convex
        lambda a: (math.inf, 0.0) if a > 0.5 else ((a - 0.4) ** 2, 2 * (a - 0.4)),  # overflow
    ],
)
def test_strong_wolfe_finds_a_wolfe_point(phi):
    f0, g0 = phi(0.0)
    a, f, evals, ok = strong_wolfe(phi, f0, g0, 1.0)
    assert ok and a > 0 and evals <= 20
    assert _wolfe(phi, f0, g0, a, f)
    assert f == phi(a)[0]  # the last evaluated point is the one returned


def test_strong_wolfe_reports_failure():
    phi = lambda a: (a, 1.0)  # noqa: E731  (φ'(0) claims descent, φ increases)
    _, _, evals, ok = strong_wolfe(phi, 0.0, -1.0, 1.0, max_evals=5)
    assert not ok and evals == 5


def test_options_and_memory():
    rf, theta, _ = _problem()
    for opts, key in (
        ({"history": 0}, "history"),
        ({"history": 2.5}, "history"),
        ({"c1": 0.0}, "c1"),
        ({"c2": 1e-5}, "c2"),
        ({"max_evals": 0}, "max_evals"),
        ({"gatol": -1.0}, "gatol"),
        ({"metric": "h1"}, "metric"),
        ({"m": 3}, "m"),
    ):
        with pytest.raises(ValueError, match=rf"^{key}: "):
            make_trainer("lbfgs", rf, theta, opts)
    cls = method_class("lbfgs")
    assert cls.copies({}) == 14 and cls.copies({"history": 3}) == 10


def test_converges_to_the_minimum_lmvm_finds():
    """With α = 1 (a well-posed minimum) lbfgs and TAO's lmvm reach ‖∇J‖ ≤ 1e-8 at
    the same minimum, in a similar number of iterations."""
    rf, theta, _ = _problem(alpha=1.0, train_readout=False)
    res = minimize(rf, theta, "lbfgs", {"gatol": 1e-8}, max_iterations=200)
    assert res.converged and res.reason == "converged: CONVERGED_GATOL"
    assert res.history[-1].grad_norm <= 1e-8
    rf2, theta2, _ = _problem(alpha=1.0, train_readout=False)
    ref = minimize(rf2, theta2, "lmvm", {"gatol": 1e-8}, max_iterations=200)
    assert abs(res.history[-1].loss - ref.history[-1].loss) < 1e-10
    assert res.trainer.iteration <= 1.5 * ref.trainer.iteration + 5
    # the Wolfe step: J decreases at every iteration, ⟨y, s⟩ > 0 kept
    losses = [r.loss for r in res.history]
    assert all(b < a for a, b in itertools.pairwise(losses))
    assert all(r > 0 for r in res.trainer.rho) and len(res.trainer.pairs) <= 5


def test_history_size_is_respected():
    rf, theta, _ = _problem()
    res = minimize(rf, theta, "lbfgs", {"history": 2}, max_iterations=6)
    assert len(res.trainer.pairs) == 2 and len(res.trainer.rho) == 2


def test_line_search_failure_stops_at_the_last_iterate(comm):
    """No Wolfe point within max_evals = 1 and c₂ tiny: restart from steepest
    descent, then stop (``stopped: DIVERGED_LS_FAILURE``) with θ back at θₖ."""
    rf, theta, _ = _problem()
    start = theta.copy()
    res = minimize(rf, theta, "lbfgs", {"max_evals": 1, "c1": 1e-10, "c2": 2e-10}, max_iterations=5)
    assert res.reason == "stopped: DIVERGED_LS_FAILURE" and not res.history
    assert _all(comm, _same(theta, start))


@pytest.mark.parametrize("cut", [1, 4])
def test_resumes_bit_for_bit_after_any_iteration(cut, mpi_tmp_path, comm):
    """7 iterations straight = ``cut`` iterations, state through a file, the rest:
    the pairs are in the checkpoint (unlike TAO's memory), so any iteration will do."""
    rf, straight, _ = _problem()
    whole = minimize(rf, straight, "lbfgs", max_iterations=7)
    rf, theta, _ = _problem()
    saved = {}
    minimize(rf, theta, "lbfgs", max_iterations=cut, on_chunk=lambda t, *_: saved.update(t.state()))
    pairs = [k for k in saved if re.match(r"lbfgs/s\d", k)]
    assert len(pairs) == min(cut, 5) * len(rf.net.trainable)
    state = _roundtrip(saved, mpi_tmp_path / f"lbfgs{comm.rank}.npz")
    rf, fresh, _ = _problem()
    res = minimize(rf, fresh, "lbfgs", max_iterations=7, state=state)
    assert [r.iteration for r in res.history] == list(range(cut + 1, 8))
    assert [r.loss for r in res.history] == [r.loss for r in whole.history[cut:]]
    sweeps = [r.extra["sweeps"] for r in res.history]  # the count goes on (metrics.csv),
    assert sweeps == [r.extra["sweeps"] + 1 for r in whole.history[cut:]]  # + the restart's
    assert _all(comm, _same(fresh, straight))


def test_metric_l2_needs_fewer_iterations_than_euclidean():
    """The L²(M_L) Riesz map as initial metric: to ‖∇J‖ ≤ 1e-6 on n = 8 and n = 32
    interval meshes, fewer iterations than with ``metric: euclidean`` (measured:
    16 and 33 against 57 and 115), as TAO's lmvm in the same metric (16 and 37)."""
    its = {}
    for metric in ("l2", "euclidean"):
        for n in (8, 32):
            rf, theta, _ = _problem(
                mesh={"kind": "unit_interval", "n": n}, alpha=1.0, train_readout=False
            )
            opts = {"gatol": 1e-6, "metric": metric}
            res = minimize(rf, theta, "lbfgs", opts, max_iterations=400)
            assert res.converged, (metric, n, res.reason)
            its[metric, n] = res.trainer.iteration
    assert its["l2", 8] < its["euclidean", 8] and its["l2", 32] < its["euclidean", 32], its
