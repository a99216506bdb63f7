"""NPZ archives read without pickle (:mod:`pontryx.solver.npz`): every member's
``.npy`` header is read and checked before any data — a malformed header, one
claiming a shape its member does not hold (a huge one included), an object array
are one-line reasons naming the member — and every command that reads an NPZ file
(the data set, the memory check's row count, ``evaluate --data``,
``inverse.observations.file``, ``check-gradient``, ``model.npz``) says so in one
line, exit 2."""

import io
import zipfile
from pathlib import Path

from mpi4py import MPI

import numpy as np
import pytest
from test_cli import cli
from test_evaluate import SMALL

from pontryx.meshes.errors import InputError
from pontryx.solver.app.memory import _rows
from pontryx.solver.npz import npz_headers, read_npz


def _npy(header: str, data: bytes = b"\0" * 64) -> bytes:
    """A version 1.0 ``.npy`` member with the given header text (padded)."""
    h = header.encode("latin1")
    h = h + b" " * (118 - len(h)) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(h).to_bytes(2, "little") + h + data


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    if MPI.COMM_WORLD.rank == 0:
        with zipfile.ZipFile(path, "w") as z:
            for name, raw in members.items():
                z.writestr(name, raw)
    MPI.COMM_WORLD.Barrier()
    return path


def _member(a) -> bytes:
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


Y = _member(np.arange(4) % 2)
BAD = {
    "unclosed": ("{'descr': '<f8', 'fortran_order': False, 'shape': (4, 2, }", "malformed .npy"),
    "huge": ("{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000, 2), }", "holds 64"),
    "negative": ("{'descr': '<f8', 'fortran_order': False, 'shape': (-1, 2), }", "shape (-1, 2)"),
    "short": ("{'descr': '<f8', 'fortran_order': False, 'shape': (40, 2), }", "640 bytes"),
    "not a dict": ("[1, 2, 3]", "malformed .npy header"),
    "bad descr": ("{'descr': 'zz', 'fortran_order': False, 'shape': (4, 2), }", "malformed"),
    "object": ("{'descr': '|O', 'fortran_order': False, 'shape': (8,), }", "object array"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_header_is_one_reason_naming_the_member(case, mpi_tmp_path):
    header, needle = BAD[case]
    path = _zip(mpi_tmp_path / "bad.npz", {"X.npy": _npy(header), "y.npy": Y})
    for read in (read_npz, npz_headers):
        with pytest.raises(ValueError) as exc:
            read(path)
        msg = str(exc.value)
        assert msg.startswith("its member 'X' ") and needle in msg and "\n" not in msg, msg
        assert len(msg) < 200, msg
    assert _rows(path) == 0  # the memory check leaves the reason to the data reader


def test_arrays_round_trip_and_headers_read_alone(mpi_tmp_path):
    """Every dtype and order np.savez writes comes back as np.load reads it;
    npz_headers gives the shapes without the data (the memory check's rows)."""
    arrays = {
        "X": np.arange(12.0).reshape(6, 2),
        "F": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "s": np.array(["a", "bc"]),
        "z": np.zeros((0, 3)),
        "c": np.array(2.5),
        "r": np.zeros(3, dtype=[("a", "<f8"), ("b", "<i2")]),
    }
    for save in (np.savez, np.savez_compressed):
        path = mpi_tmp_path / f"{save.__name__}.npz"
        if MPI.COMM_WORLD.rank == 0:
            save(path, **arrays)
        MPI.COMM_WORLD.Barrier()
        back = read_npz(path)
        assert back.keys() == arrays.keys()
        for k, a in arrays.items():
            assert back[k].dtype == a.dtype and back[k].shape == a.shape
            assert np.array_equal(back[k], a) and back[k].flags.writeable
        headers = npz_headers(path)
        assert {k: h.shape for k, h in headers.items()} == {k: a.shape for k, a in arrays.items()}
        assert _rows(path) == 6
        MPI.COMM_WORLD.Barrier()


def test_not_an_npz_archive(mpi_tmp_path):
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        (mpi_tmp_path / "text.npz").write_text("hello")
        b = io.BytesIO()
        with zipfile.ZipFile(b, "w") as z:
            z.writestr("X.npy", _member(np.zeros(2)))
        (mpi_tmp_path / "prefixed.npz").write_bytes(b"junk" + b.getvalue())
    comm.Barrier()
    with pytest.raises(ValueError, match=r"^not a zip archive$"):
        read_npz(mpi_tmp_path / "text.npz")
    with pytest.raises(ValueError, match=r"^not an NPZ archive$"):
        read_npz(mpi_tmp_path / "prefixed.npz")
    path = _zip(mpi_tmp_path / "raw.npz", {"X": b"\0" * 8})
    with pytest.raises(ValueError, match="its member 'X' is not a NumPy array"):
        read_npz(path)
    path = _zip(mpi_tmp_path / "junk.npz", {"X.npy": b"\0" * 8})
    with pytest.raises(ValueError, match=r"its member 'X' is not a NumPy array \(no .npy magic"):
        read_npz(path)


def test_observations_file_with_a_bad_header(mpi_tmp_path):
    from pontryx.solver.inverse.observations import read_observations

    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (10000000000, 2), }"
    path = _zip(mpi_tmp_path / "obs.npz", {"points.npy": _npy(header), "values.npy": Y})
    with pytest.raises(InputError) as exc:
        read_observations(path, 2)
    msg = str(exc.value)
    assert exc.value.key == "file" and "obs.npz" in msg and "its member 'points'" in msg, msg
    assert "\n" not in msg


@pytest.mark.parametrize("case", ["unclosed", "huge"])
def test_commands_refuse_a_bad_header_in_one_line(case, capsys, mpi_tmp_path):
    """train, check-gradient and evaluate --data with a data file, and evaluate of a
    model.npz, whose member has a malformed or huge header: exit 2, one line naming
    the file and the member, nothing written."""
    comm = MPI.COMM_WORLD
    header = BAD[case][0]
    bad = _zip(mpi_tmp_path / "bad.npz", {"X.npy": _npy(header), "y.npy": Y})
    config = mpi_tmp_path / "small.yaml"
    if comm.rank == 0:
        config.write_text(SMALL)
    comm.Barrier()
    data = f"data={{name: file, path: {bad}}}"
    for args in (
        ["train", config, "--output", mpi_tmp_path / "out", "--set", data],
        ["check-gradient", config, "--set", data],
    ):
        code, out, err = cli(capsys, *args)
        assert code == 2 and err.count("\n") == 1 and "bad.npz" in err, err
        assert "its member 'X'" in err and "Error" not in err, err
    assert not (mpi_tmp_path / "out").exists()
    run = mpi_tmp_path / "run"
    assert cli(capsys, "train", config, "--output", run, "--quiet")[0] == 0
    code, out, err = cli(capsys, "evaluate", run, "--data", bad)
    assert code == 2 and err.count("\n") == 1 and "bad.npz" in err and "its member 'X'" in err
    with np.load(run / "model.npz") as f:
        members = {f"{k}.npy": _member(f[k]) for k in f.files}
    comm.Barrier()
    members["W.npy"] = _npy(header.replace("(", "(2, ", 1), b"\0" * 4096)
    _zip(run / "model.npz", members)
    code, out, err = cli(capsys, "evaluate", run)
    assert code == 2 and err.count("\n") == 1 and not out, err
    assert f"{run / 'model.npz'}" in err and "its member 'W'" in err, err
