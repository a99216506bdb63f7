"""Checkpoints (solver/outputs/checkpoint.py): atomic, pruned, verified on load with
a fallback to the newest intact one, and readable on any number of ranks."""

import json
import shutil

from mpi4py import MPI

import numpy as np
import pytest

from pontryx.meshes import InputError, create_mesh
from pontryx.solver import ContinuumNetwork, Layout, WidthSpace
from pontryx.solver.outputs import Checkpoints
from pontryx.solver.outputs.canonical import to_canonical


def _setup(path, layout, kernel="dense", keep=2):
    space = WidthSpace(create_mesh({"kind": "unit_square", "n": 3}, layout.width))
    opts = {"rank": 3} if kernel == "lowrank" else None
    net = ContinuumNetwork(space, 2, 2, kernel=kernel, kernel_options=opts, layers=3)
    return net, Checkpoints(path / "checkpoints", net, layout, keep=keep)


def _state(net, iteration):
    theta = net.init_controls(seed=iteration)
    flat = theta.subset(net.trainable).to_flat() * 2.0
    state = {f"controls/{k}": v for k, v in theta.items()}
    state.update(iteration=np.array(iteration), rho=np.array(0.5), **{"moments/m": flat})
    kinds = {f"controls/{k}": ("control", k) for k in theta}
    kinds["moments/m"] = ("flat", tuple(net.trainable))
    return theta, state, kinds


def _say(messages):
    return lambda text: messages.append(text)


@pytest.mark.parametrize("kernel", ["dense", "lowrank"])
def test_save_latest_load_prune(mpi_tmp_path, comm, kernel):
    layout = Layout.create(comm)
    net, ck = _setup(mpi_tmp_path, layout, kernel)
    assert ck.latest() is None
    for it in (5, 10, 15):
        theta, state, kinds = _state(net, it)
        ck.save(it, state, kinds, method="adam")
    if comm.rank == 0:  # an incomplete newer one (no manifest, as after SIGKILL): ignored
        (mpi_tmp_path / "checkpoints" / "iter-00000020").mkdir()
    comm.Barrier()
    latest = ck.latest()
    assert latest["iteration"] == 15 and latest["method"] == "adam"
    loaded, complete = ck.load(latest)
    assert complete and int(loaded["iteration"]) == 15 and float(loaded["rho"]) == 0.5
    for k, v in theta.items():
        assert np.array_equal(loaded[f"controls/{k}"], v), k
    assert np.array_equal(loaded["moments/m"], state["moments/m"])
    assert [it for it, _ in ck.list()] == [10, 15]
    assert not list((mpi_tmp_path / "checkpoints").rglob("*.tmp"))


def test_a_checkpoint_loads_on_another_layout(mpi_tmp_path, comm):
    """Written on all ranks (width axis), read on one rank per process and on a
    data split: the same canonical values."""
    net, ck = _setup(mpi_tmp_path, Layout.create(comm))
    theta, state, kinds = _state(net, 7)
    ck.save(7, state, kinds)
    want = to_canonical(net, theta)
    for layout in (Layout.create(MPI.COMM_SELF), Layout.create(comm, width=1)):
        other, ck2 = _setup(mpi_tmp_path, layout)
        loaded, _ = ck2.load(ck2.latest())
        controls = other.init_controls()
        for k in controls:
            controls[k][...] = loaded[f"controls/{k}"]
        got = to_canonical(other, controls)
        for k in want:
            assert np.array_equal(got[k], want[k]), k
        template = controls.subset(other.trainable).zeros_like().set_flat(loaded["moments/m"])
        doubled = to_canonical(other, template)
        for k in doubled:
            assert np.array_equal(doubled[k], 2.0 * want[k]), k


DAMAGE = {
    "truncated": lambda d: (d / "rows-0000.npz").write_bytes(
        (d / "rows-0000.npz").read_bytes()[:50]
    ),
    "emptied": lambda d: (d / "shared.npz").write_bytes(b""),
    "deleted": lambda d: (d / "rows-0000.npz").unlink(),
    "pickled": lambda d: (d / "shared.npz").write_bytes(b"\x80\x04\x95pickle"),
    "manifest invalid": lambda d: (d / "manifest.json").write_text("{not json"),
    "manifest edited": lambda d: (d / "manifest.json").write_text(
        (d / "manifest.json").read_text().replace('"iteration": 10', '"iteration": 9')
    ),
    "manifest not a mapping": lambda d: (d / "manifest.json").write_text("[1, 2]"),
    "wrong iteration": lambda d: shutil.copy(d.parent / "iter-00000005" / "shared.npz", d),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_falls_back_to_an_intact_one(mpi_tmp_path, comm, damage):
    net, ck = _setup(mpi_tmp_path, Layout.create(comm), keep=3)
    for it in (5, 10):
        ck.save(it, *_state(net, it)[1:])
    if comm.rank == 0:
        DAMAGE[damage](mpi_tmp_path / "checkpoints" / "iter-00000010")
    comm.Barrier()
    messages = []
    latest = ck.latest(warn=_say(messages))
    assert latest["iteration"] == 5
    if comm.rank == 0:
        assert len(messages) == 1 and "iter-00000010 is damaged" in messages[0]
        assert "\n" not in messages[0]


def test_none_intact_is_a_one_line_error(mpi_tmp_path, comm):
    """No warnings then: one line naming the newest, why, and how many more."""
    net, ck = _setup(mpi_tmp_path, Layout.create(comm))
    for it in (5, 10):
        ck.save(it, *_state(net, it)[1:])
    if comm.rank == 0:
        for it in (5, 10):
            path = mpi_tmp_path / "checkpoints" / f"iter-{it:08d}" / "manifest.json"
            manifest = json.loads(path.read_text())
            manifest["iteration"] = 25
            path.write_text(json.dumps(manifest))
    comm.Barrier()
    messages = []
    with pytest.raises(
        InputError,
        match=r"^--resume: no intact checkpoint .*the newest, iter-00000010, is damaged "
        r"\(manifest.json was edited.*\) and 1 older one damaged too",
    ) as e:
        ck.latest(warn=_say(messages))
    assert messages == [] and "\n" not in str(e.value)


def test_an_entry_of_a_checkpoints_name_that_is_no_folder_is_damaged(mpi_tmp_path, comm):
    """A file named like a checkpoint is none pontryx wrote: alone it is a one-line
    error (--resume does not start afresh over it); beside an older intact one it
    is skipped with a warning. A folder without a manifest (cut while written) is
    no checkpoint at all."""
    net, ck = _setup(mpi_tmp_path, Layout.create(comm))
    folder = mpi_tmp_path / "checkpoints"
    if comm.rank == 0:
        folder.mkdir()
        (folder / "iter-00000005").write_text("x")
        (folder / "iter-00000007").mkdir()
    comm.Barrier()
    with pytest.raises(InputError, match=r"the newest, iter-00000005, is damaged \(not a folder"):
        ck.latest(warn=_say([]))
    ck.save(3, *_state(net, 3)[1:])
    messages = []
    assert ck.latest(warn=_say(messages))["iteration"] == 3
    if comm.rank == 0:
        assert len(messages) == 1 and "iter-00000005 is damaged (not a folder)" in messages[0]


def test_the_shapes_of_another_network_are_named(mpi_tmp_path, comm):
    """A checkpoint of 3 layers onto 2: the message shows the two different shapes."""
    net, ck = _setup(mpi_tmp_path, Layout.create(comm))
    ck.save(5, *_state(net, 5)[1:])
    space = WidthSpace(create_mesh({"kind": "unit_square", "n": 3}, comm))
    two = ContinuumNetwork(space, 2, 2, layers=2)
    ck2 = Checkpoints(mpi_tmp_path / "checkpoints", two, Layout.create(comm))
    with pytest.raises(InputError, match=r"has shape \(3, 16(, 16)?\), this network needs \(2, 16"):
        ck2.load(ck2.latest())


def test_another_model_is_refused(mpi_tmp_path, comm):
    net, ck = _setup(mpi_tmp_path, Layout.create(comm))
    ck.save(5, *_state(net, 5)[1:])
    _, ck2 = _setup(mpi_tmp_path, Layout.create(comm), kernel="lowrank")
    with pytest.raises(InputError, match="another model"):
        ck2.load(ck2.latest())
