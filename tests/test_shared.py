"""Node-shared arrays of the width axis (solver/model/shared.py): the dense
kernel's gathers and sums through them give the same numbers (bit for bit on 2
ranks) as the MPI collectives (``exchange="mpi"``) — J, ∇J, ∇²J·v, with and without
checkpointing, with the pool's caps and without room; the pool's reuse rule
(only after a fence), its bound on windows, and giving back through a workspace."""

from mpi4py import MPI

import numpy as np
import pytest

from pontryx.meshes import create_mesh
from pontryx.solver import ContinuumNetwork, ReducedFunctional, WidthSpace, Workspace
from pontryx.solver.model import shared


def _problem(exchange, layers=5, checkpoint=None, scheme="imex_euler", epsilon=0.0):
    sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 5}, MPI.COMM_WORLD), exchange=exchange)
    net = ContinuumNetwork(sp, 3, 3, layers=layers, scheme=scheme, epsilon=epsilon)
    theta = net.init_controls(seed=0, gain=1.0)
    rng = np.random.default_rng(1)  # the same samples on every rank
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 3, 40)
    rf = ReducedFunctional(net, X, y, alpha=1e-2, beta=1e-2, checkpoint=checkpoint)
    return sp, theta, rf


def _results(rf, theta):
    J, g = rf.value_and_gradient(theta)
    g = g.copy()
    direction = {k: np.cos(np.arange(v.size)).reshape(v.shape) for k, v in theta.items()}
    H = rf.hessian_action(theta, direction)
    return J, rf(theta), g, H


def _same(a, b):
    """Bit for bit on up to 2 ranks; with more, MPI's Reduce_scatter may add the
    partial sums in another order than the shared arrays' rank order."""
    if MPI.COMM_WORLD.size > 2:
        assert a[0] == pytest.approx(b[0], rel=1e-13) and a[1] == pytest.approx(b[1], rel=1e-13)
        for x, y in zip(a[2:], b[2:], strict=True):
            for k in x:
                assert np.allclose(x[k], y[k], rtol=1e-12, atol=1e-14 * np.abs(x[k]).max()), k
        return
    assert a[0] == b[0] and a[1] == b[1]
    for x, y in zip(a[2:], b[2:], strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert np.array_equal(x[k], y[k]), k


@pytest.mark.parametrize(
    "scheme,epsilon,checkpoint",
    [("imex_euler", 0.0, None), ("imex_euler", 0.0, "sqrt"), ("midpoint", 0.1, None)],
)
def test_shared_exchange_gives_the_numbers_of_the_collectives(scheme, epsilon, checkpoint):
    out = {}
    for exchange in ("mpi", "shared"):
        sp, theta, rf = _problem(exchange, scheme=scheme, epsilon=epsilon, checkpoint=checkpoint)
        assert (sp.shared is None) == (exchange == "mpi" or sp.comm.size == 1)
        out[exchange] = _results(rf, theta)
        out[exchange + " again"] = _results(rf, theta)  # arrays reused from the pool
        sp.destroy()
    _same(out["mpi"], out["shared"])
    _same(out["shared"], out["shared again"])


@pytest.mark.parallel
def test_pool_is_bounded_and_gives_everything_back():
    sp, theta, rf = _problem("shared")
    pool = sp.shared
    assert pool is shared.SharedRows.of(sp.comm)  # one pool per group of ranks
    rf.value_and_gradient(theta)
    held = pool.windows
    assert held > 0 and not pool._lent
    for _ in range(3):
        rf.value_and_gradient(theta)
        rf(theta)
        assert pool.windows == held and not pool._lent
    sp.destroy()
    assert pool.windows < held  # this space's arrays freed


@pytest.mark.parallel
@pytest.mark.parametrize("limit", ["windows", "room"])
def test_without_room_the_collectives_take_over(monkeypatch, limit):
    """Past the cap on windows, or without room in /dev/shm, the kernel takes the
    MPI collectives for what does not fit: the same numbers."""
    _, theta, rf = _problem("mpi")
    ref = _results(rf, theta)
    shared.SharedRows.of(MPI.COMM_WORLD).clear()  # nothing free to evict
    if limit == "windows":
        monkeypatch.setattr(shared, "MAX_WINDOWS", 3)
    else:
        monkeypatch.setattr(shared, "free_bytes", lambda: 0)
    sp, theta, rf = _problem("shared")
    _same(ref, _results(rf, theta))
    assert sp.shared.windows <= (3 if limit == "windows" else 0)
    assert not sp.shared._lent
    sp.destroy()


@pytest.mark.parallel
def test_arrays_are_reused_only_after_a_fence():
    pool = shared.SharedRows.of(MPI.COMM_WORLD)
    counts = [2] * pool.comm.size
    G = pool.rows(counts, 3)
    assert G.shape == (2 * pool.comm.size, 3) and pool.owns(G)
    rank = pool.comm.rank
    G[2 * rank : 2 * rank + 2] = rank
    pool.fence()
    assert np.array_equal(G[:, 0], np.repeat(np.arange(pool.comm.size), 2))  # all rows seen
    pool.give(G)
    assert not pool.owns(G)
    H = pool.rows(counts, 3)
    assert H is not G  # given back after the last fence: another rank may still read it
    pool.fence()
    pool.give(H)
    assert pool.rows(counts, 3) is G  # given back before a fence: reused
    P = pool.partials(5, 2)
    assert len(P) == pool.comm.size and pool.owns(P[rank]) and not pool.owns(P[0 if rank else 1])
    P[rank][...] = rank + 1
    pool.fence()
    assert [float(p[0, 0]) for p in P] == [r + 1.0 for r in range(pool.comm.size)]
    pool.give(P[rank])
    pool.give(G)
    pool.clear(counts)
    pool.clear((5,))  # N = 5: the partials


def test_a_workspace_gives_adopted_arrays_back_to_their_owner():
    class Owner:
        def __init__(self):
            self.back = []

        def give(self, a):
            self.back.append(a)

    ws, owner, a = Workspace(), Owner(), np.zeros(3)
    ws.adopt(a, owner)
    assert ws.lent == 1
    ws.give(a)
    assert owner.back == [a] and ws.lent == 0 and ws.nbytes == 0
    b = np.zeros(2)
    ws.adopt(b, owner)
    ws.end()  # the sweep is over: back to its owner
    assert owner.back == [a, b] and ws.lent == 0
    ws.give(b)  # no longer lent here: ignored
    assert owner.back == [a, b]


def test_exchange_is_checked():
    from pontryx.meshes.errors import InputError

    with pytest.raises(InputError, match="exchange"):
        WidthSpace(create_mesh({"kind": "unit_square", "n": 2}, MPI.COMM_WORLD), exchange="x")


def test_across_nodes_the_collectives(monkeypatch):
    """A width group that spans nodes (faked here) has no pool: the collectives."""
    monkeypatch.setattr(shared, "on_one_node", lambda comm: False)
    sp = WidthSpace(create_mesh({"kind": "unit_square", "n": 2}, MPI.COMM_WORLD))
    assert sp.shared is None and sp.exchange == "shared"
