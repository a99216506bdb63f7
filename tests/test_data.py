"""Data sets: built-ins, CSV/NPZ files, seeded splits, shards, errors."""

import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

from pontryx.meshes import InputError
from pontryx.solver.data import DATASET_KEYS, DATASETS, Dataset, load_dataset, shard
from pontryx.solver.data.synthetic import PEAKS_THRESHOLDS, peaks

SYNTHETIC = ("ellipses", "swiss_roll", "peaks", "spirals", "sine")
N_CLASSES = {"ellipses": 2, "swiss_roll": 2, "peaks": 5, "spirals": 2, "digits": 10, "sine": 0}


def _write(comm, path, writer):
    """Write a file on rank 0 only, then let every rank see it."""
    if comm.rank == 0:
        writer(path)
    comm.barrier()
    return path


def _write_text(comm, path, text):
    return _write(comm, path, lambda p: p.write_text(text))


def _same(a: Dataset, b: Dataset) -> bool:
    return all(
        np.array_equal(getattr(a, k), getattr(b, k))
        for k in ("X_train", "y_train", "X_test", "y_test")
    )


def test_registry():
    assert set(DATASETS) | {"file"} == set(DATASET_KEYS)
    assert DATASET_KEYS["file"]["path"] is ...
    assert DATASET_KEYS["digits"]["n_train"] == 898


@pytest.mark.parametrize("name", DATASETS)
def test_builtin_shapes_and_labels(name):
    d = load_dataset({"name": name})
    k = N_CLASSES[name]
    assert d.name == name and d.n_classes == k
    assert d.X_train.dtype == np.float64 and d.X_train.ndim == 2
    assert d.X_test.shape[1] == d.n_in == int(np.prod(d.input_shape))
    assert len(d.y_train) == d.n_train and len(d.y_test) == d.n_test
    assert np.isfinite(d.X_train).all() and np.isfinite(d.X_test).all()
    lo, hi = d.feature_range
    assert lo <= d.X_train.min() and d.X_train.max() <= hi
    if k:
        assert d.task == "classification" and d.n_outputs == k
        assert d.y_train.dtype == np.int64 and d.classes == tuple(range(k))
        for y in (d.y_train, d.y_test):
            assert y.min() >= 0 and y.max() <= k - 1
        assert set(np.unique(d.y_train)) == set(range(k))
    else:
        assert d.task == "regression" and d.n_outputs == 1
        assert d.y_train.dtype == np.float64 and d.y_train.shape == (d.n_train, 1)
    with pytest.raises(ValueError):
        d.X_train[0, 0] = 1.0  # read-only


@pytest.mark.parametrize("name", SYNTHETIC)
def test_synthetic_sizes_and_determinism(name):
    desc = {"name": name, "n_train": 101, "n_test": 37, "seed": 3, "noise": 0.01}
    a, b = load_dataset(desc), load_dataset(dict(desc))
    assert (a.n_train, a.n_test) == (101, 37)
    assert _same(a, b)
    assert not np.array_equal(load_dataset({**desc, "seed": 4}).X_train, a.X_train)
    # train and test come from independent streams: n_test does not move the train set
    c = load_dataset({**desc, "n_test": 5})
    assert np.array_equal(c.X_train, a.X_train) and np.array_equal(c.y_train, a.y_train)
    assert not np.array_equal(a.X_train[:37], a.X_test)


@pytest.mark.parametrize("name", ["ellipses", "swiss_roll", "spirals"])
def test_balanced_classes(name):
    d = load_dataset({"name": name, "n_train": 11, "n_test": 10})
    assert list(np.bincount(d.y_train)) == [6, 5] and list(np.bincount(d.y_test)) == [5, 5]


def test_ellipses_definition():
    d = load_dataset({"name": "ellipses", "n_train": 500, "n_test": 300, "seed": 1})
    for X, y in ((d.X_train, d.y_train), (d.X_test, d.y_test)):
        r = np.hypot(X[:, 0], X[:, 1] / 0.4)
        assert np.all((r >= y) & (r < y + 1))
    noisy = load_dataset({"name": "ellipses", "n_train": 500, "n_test": 300, "noise": 0.1})
    assert not np.array_equal(noisy.X_train, d.X_train)


def test_swiss_roll_and_spirals_radii():
    d = load_dataset({"name": "swiss_roll", "n_train": 400})
    r = np.hypot(*d.X_train.T) * 1.2 - 0.2 * d.y_train
    theta = np.arctan2(d.X_train[:, 1], d.X_train[:, 0])
    # r·4π ≡ θ (mod 2π) on each arm
    assert np.allclose(np.cos(4 * np.pi * r - theta), 1.0)
    s = load_dataset({"name": "spirals", "n_train": 400})
    r = np.hypot(*s.X_train.T)
    assert np.all((r >= 0.1) & (r <= 1.0))
    t = (r - 0.1) / 0.9
    theta = np.arctan2(s.X_train[:, 1], s.X_train[:, 0])
    assert np.allclose(np.cos(4 * np.pi * t + np.pi * s.y_train - theta), 1.0)


def test_peaks_levels():
    assert peaks(0.0, 0.0) == pytest.approx(3 * np.exp(-1) - np.exp(-1) / 3)
    d = load_dataset({"name": "peaks", "n_train": 4000, "n_test": 10})
    z = peaks(d.X_train[:, 0], d.X_train[:, 1])
    edges = (-np.inf, *PEAKS_THRESHOLDS, np.inf)
    assert np.all((z >= np.take(edges, d.y_train)) & (z < np.take(edges, d.y_train + 1)))
    frac = np.bincount(d.y_train, minlength=5) / 4000
    assert np.all(np.abs(frac - 0.2) < 0.03)


def test_sine_values():
    d = load_dataset({"name": "sine", "n_train": 50, "n_test": 20})
    for X, y in ((d.X_train, d.y_train), (d.X_test, d.y_test)):
        assert np.all(np.abs(X) <= np.pi)
        assert np.array_equal(y, np.sin(X))
    noisy = load_dataset({"name": "sine", "n_train": 50, "n_test": 20, "noise": 0.1})
    assert np.array_equal(noisy.X_train, d.X_train)
    assert 0 < np.abs(noisy.y_train - d.y_train).max() < 1.0


# --------------------------------------------------------------------------- files


def test_csv_with_header_string_labels(comm, mpi_tmp_path):
    rows = [f"{i / 10},{-i},{['cat', 'dog', 'ant'][i % 3]}" for i in range(20)]
    path = _write_text(comm, mpi_tmp_path / "d.csv", "a, b, kind\n" + "\n".join(rows) + "\n")
    d = load_dataset({"name": "file", "path": str(path), "target": "kind", "test_fraction": 0.25})
    assert (d.n_train, d.n_test, d.n_in, d.n_classes) == (15, 5, 2, 3)
    assert d.classes == ("ant", "cat", "dog")
    X = np.concatenate([d.X_train, d.X_test])
    y = np.concatenate([d.y_train, d.y_test])
    order = np.argsort(-X[:, 1])
    assert np.allclose(X[order, 0], np.arange(20) / 10)
    assert [d.classes[c] for c in y[order]] == [["cat", "dog", "ant"][i % 3] for i in range(20)]
    # default target is the last column, header detected
    e = load_dataset({"name": "file", "path": str(path), "test_fraction": 0.25})
    assert _same(d, e)
    f = load_dataset({"name": "file", "path": str(path), "test_fraction": 0.25, "seed": 1})
    assert not np.array_equal(f.X_train, d.X_train)


def test_csv_target_named_twice_in_the_header_is_refused(comm, mpi_tmp_path):
    """target: b where the header reads a,b,b: which column is meant? (the first was
    taken, a feature column, and the labels then failed as "not an integer")."""
    rows = [f"{i / 10},{-i / 7},{i % 2}" for i in range(10)]
    path = _write_text(comm, mpi_tmp_path / "d.csv", "a,b,b\n" + "\n".join(rows) + "\n")
    with pytest.raises(InputError, match="column 'b' appears 2 times") as e:
        load_dataset({"name": "file", "path": str(path), "target": "b"})
    assert e.value.key == "target"


def test_csv_without_header_numeric_labels(comm, mpi_tmp_path):
    rows = [f"{[10, 2, 7][i % 3]},{i},{i * i}" for i in range(30)]
    path = _write_text(comm, mpi_tmp_path / "d.csv", "\n".join(rows))
    d = load_dataset({"name": "file", "path": str(path), "target": 0})
    assert (d.n_train, d.n_test, d.n_in) == (24, 6, 2)
    assert d.classes == (2, 7, 10)  # numeric order, not string order
    X = np.concatenate([d.X_train, d.X_test])
    y = np.concatenate([d.y_train, d.y_test])
    i = X[:, 0].astype(int)
    assert np.array_equal(X[:, 1], i**2)
    assert np.array_equal(np.take(d.classes, y), np.take([10, 2, 7], i % 3))
    r = load_dataset({"name": "file", "path": str(path), "target": [-1], "task": "regression"})
    assert r.task == "regression" and r.n_outputs == 1 and r.n_classes == 0
    assert np.array_equal(r.y_train[:, 0], r.X_train[:, 1] ** 2)


def test_npz_round_trips(comm, mpi_tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = (X[:, 0] > 0).astype(int) * 5 + 1
    one = _write(comm, mpi_tmp_path / "xy.npz", lambda p: np.savez(p, X=X, y=y))
    d = load_dataset({"name": "file", "path": str(one), "test_fraction": 0.5, "seed": 2})
    assert (d.n_train, d.n_test, d.classes) == (20, 20, (1, 6))
    Xall = np.concatenate([d.X_train, d.X_test])
    yall = np.take(d.classes, np.concatenate([d.y_train, d.y_test]))
    order = np.lexsort(Xall.T[::-1])
    ref = np.lexsort(X.T[::-1])
    assert np.array_equal(Xall[order], X[ref]) and np.array_equal(yall[order], y[ref])

    imgs = rng.random((12, 4, 4))
    two = _write(
        comm,
        mpi_tmp_path / "split.npz",
        lambda p: np.savez(
            p, X_train=imgs[:8], y_train=imgs[:8, :2, 0], X_test=imgs[8:], y_test=imgs[8:, :2, 0]
        ),
    )
    r = load_dataset({"name": "file", "path": str(two), "task": "regression"})
    assert (r.n_train, r.n_test, r.input_shape, r.n_outputs) == (8, 4, (4, 4), 2)
    assert np.array_equal(r.X_test, imgs[8:].reshape(4, 16))
    assert np.array_equal(r.y_train, imgs[:8, :2, 0])


def test_relative_path_and_input_shape(comm, mpi_tmp_path):
    rows = "\n".join(",".join(str((i + j) % 5) for j in range(5)) for i in range(10))
    _write_text(comm, mpi_tmp_path / "img.csv", rows)
    d = load_dataset(
        {"name": "file", "path": "img.csv", "input_shape": [2, 2], "header": False},
        base_dir=mpi_tmp_path,
    )
    assert d.input_shape == (2, 2) and d.n_in == 4 and d.n_train + d.n_test == 10


def test_npz_samples_give_the_input_shape(comm, mpi_tmp_path):
    """An NPZ's X of S×d₁×d₂… gives the input shape [d₁, d₂, …] (features flattened
    row-major; S×h×w are images, S×2×2×2 three-entry samples); a given input_shape
    must be that shape (``[2, 8]`` or ``[16]`` for 4×4 images contradicts it)."""
    rng = np.random.default_rng(0)
    imgs, cubes, y = rng.random((10, 4, 4)), rng.random((10, 2, 2, 2)), np.arange(10) % 2
    path = _write(comm, mpi_tmp_path / "imgs.npz", lambda p: np.savez(p, X=imgs, y=y))
    cube = _write(comm, mpi_tmp_path / "cubes.npz", lambda p: np.savez(p, X=cubes, y=y))
    assert load_dataset({"name": "file", "path": str(path)}).input_shape == (4, 4)
    given = load_dataset({"name": "file", "path": str(path), "input_shape": [4, 4]})
    assert given.input_shape == (4, 4)
    d = load_dataset({"name": "file", "path": str(cube)})
    assert d.input_shape == (2, 2, 2) and d.n_in == 8
    for shape in ([2, 8], [16]):
        with pytest.raises(InputError, match=r"contradicts the samples of shape \[4, 4\]") as e:
            load_dataset({"name": "file", "path": str(path), "input_shape": shape})
        assert e.value.key == "input_shape"


def test_exponent_numbers_in_a_description(comm, mpi_tmp_path):
    """``1e-1`` (a string to YAML 1.1) is a number for the loader too: noise and
    test_fraction."""
    X, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 2
    path = _write(comm, mpi_tmp_path / "xy.npz", lambda p: np.savez(p, X=X, y=y))
    d = load_dataset({"name": "file", "path": str(path), "test_fraction": "5e-1"})
    assert d.n_test == 5
    noisy = load_dataset({"name": "ellipses", "n_train": 4, "n_test": 4, "noise": "1e-1"})
    assert _same(noisy, load_dataset({"name": "ellipses", "n_train": 4, "n_test": 4, "noise": 0.1}))


# --------------------------------------------------------------------------- shards


def test_shard_partition():
    for n in (0, 1, 7, 10, 101):
        for size in (1, 2, 3, 4, 8):
            blocks = [shard(n, r, size) for r in range(size)]
            covered = np.concatenate([np.arange(n)[b] for b in blocks])
            assert np.array_equal(covered, np.arange(n))
            lengths = [b.stop - b.start for b in blocks]
            assert max(lengths) - min(lengths) <= 1 and lengths == sorted(lengths, reverse=True)


def test_shard_on_comm(comm):
    n = 1000 + 3
    counts = comm.allgather(len(range(n)[shard(n, comm.rank, comm.size)]))
    assert sum(counts) == n


def test_shard_bad():
    for args in [(5, 2, 2), (5, -1, 2), (5, 0, 0), (-1, 0, 1)]:
        with pytest.raises(ValueError):
            shard(*args)


# --------------------------------------------------------------------------- errors

BAD = [
    ({"name": "mnist"}, "data.name"),
    ({"n_train": 10}, "data.name"),
    ({"name": "ellipses", "n_samples": 10}, "data.n_samples"),
    ({"name": "digits", "seed": 1}, "data.seed"),
    ({"name": "ellipses", "n_train": 0}, "data.n_train"),
    ({"name": "spirals", "n_train": -5}, "data.n_train"),
    ({"name": "peaks", "n_train": 1.5}, "data.n_train"),
    ({"name": "peaks", "n_train": True}, "data.n_train"),
    ({"name": "swiss_roll", "n_test": 0}, "data.n_test"),
    ({"name": "sine", "seed": -1}, "data.seed"),
    ({"name": "sine", "noise": -0.1}, "data.noise"),
    ({"name": "sine", "noise": "lots"}, "data.noise"),
    ({"name": "digits", "n_train": 1797}, "data.n_train"),
    ({"name": "digits", "n_train": 1000, "n_test": 900}, "data.n_test"),
    ({"name": "file"}, "data.path"),
    ({"name": "file", "path": "missing.csv"}, "data.path"),
    ({"name": "file", "path": "{dir}"}, "data.path"),
    ({"name": "file", "path": "{dir}/data.json"}, "data.path"),
    ({"name": "file", "path": "{dir}/good.csv", "test_fraction": 0.0}, "data.test_fraction"),
    ({"name": "file", "path": "{dir}/good.csv", "test_fraction": 1.0}, "data.test_fraction"),
    ({"name": "file", "path": "{dir}/good.csv", "task": "ranking"}, "data.task"),
    ({"name": "file", "path": "{dir}/good.csv", "target": "nope"}, "data.target"),
    ({"name": "file", "path": "{dir}/good.csv", "target": 3}, "data.target"),
    ({"name": "file", "path": "{dir}/good.csv", "target": [0, 1]}, "data.target"),
    ({"name": "file", "path": "{dir}/good.csv", "input_shape": [3, 3]}, "data.input_shape"),
    ({"name": "file", "path": "{dir}/good.csv", "header": "yes"}, "data.header"),
    ({"name": "file", "path": "{dir}/good.csv", "delimiter": ";"}, "data.delimiter"),
    ({"name": "file", "path": "{dir}/text.csv"}, "data.path"),
    ({"name": "file", "path": "{dir}/nan.csv"}, "data.path"),
    ({"name": "file", "path": "{dir}/inflabel.csv"}, "data.target"),
    ({"name": "file", "path": "{dir}/ragged.csv"}, "data.path"),
    ({"name": "file", "path": "{dir}/empty.csv"}, "data.path"),
    ({"name": "file", "path": "{dir}/strtarget.csv", "task": "regression"}, "data.target"),
    ({"name": "file", "path": "{dir}/noheader.csv", "target": "label"}, "data.target"),
    ({"name": "file", "path": "{dir}/notzip.npz"}, "data.path"),
    ({"name": "file", "path": "{dir}/damaged.npz"}, "data.path"),
    ({"name": "file", "path": "{dir}/bytes.npz"}, "data.path"),
    ({"name": "file", "path": "{dir}/wrongnames.npz"}, "data.path"),
    ({"name": "file", "path": "{dir}/shape.npz"}, "data.path"),
    ({"name": "file", "path": "{dir}/inf.npz"}, "data.path"),
    ({"name": "file", "path": "{dir}/fraclabels.npz"}, "data.path"),
    ({"name": "file", "path": "{dir}/good.npz", "target": 0}, "data.target"),
]


@pytest.fixture(scope="module")
def bad_dir(comm):
    """One shared directory of bad (and a few good) files for the whole error table."""
    path = tempfile.mkdtemp(prefix="pontryx-data-") if comm.rank == 0 else None
    path = Path(comm.bcast(path, root=0))
    _write(comm, path, _bad_files)
    yield path
    comm.barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)


def _bad_files(d):
    d.joinpath("good.csv").write_text("a,b,c\n1,2,0\n3,4,1\n5,6,0\n")
    d.joinpath("data.json").write_text("{}")
    d.joinpath("text.csv").write_text("a,b,c\n1,x,0\n3,4,1\n")
    d.joinpath("nan.csv").write_text("1,nan,0\n3,4,1\n")
    d.joinpath("inflabel.csv").write_text("a,b\n1,inf\n2,3\n")
    d.joinpath("ragged.csv").write_text("1,2,0\n3,4\n")
    d.joinpath("empty.csv").write_text("\n")
    d.joinpath("strtarget.csv").write_text("a,b,c\n1,2,x\n3,4,y\n")
    d.joinpath("noheader.csv").write_text("1,2,0\n3,4,1\n")
    d.joinpath("notzip.npz").write_text("not a zip")
    np.savez_compressed(d / "damaged.npz", X=np.ones((300, 2)), y=np.zeros(300))
    whole = bytearray(d.joinpath("damaged.npz").read_bytes())
    whole[60:200] = bytes(b ^ 0x55 for b in whole[60:200])  # the compressed stream of X
    d.joinpath("damaged.npz").write_bytes(whole)
    with zipfile.ZipFile(d / "bytes.npz", "w") as z:  # members that are not .npy arrays
        z.writestr("X.npy", b"not an array")
        z.writestr("y.npy", b"0 1")
    np.savez(d / "wrongnames.npz", A=np.zeros((3, 2)), b=np.zeros(3))
    np.savez(d / "shape.npz", X=np.zeros((3, 2)), y=np.zeros(4))
    np.savez(d / "inf.npz", X=np.array([[1.0, np.inf], [0.0, 0.0]]), y=np.zeros(2))
    np.savez(d / "fraclabels.npz", X=np.zeros((3, 2)), y=np.array([0.5, 1.0, 2.0]))
    np.savez(d / "good.npz", X=np.zeros((3, 2)), y=np.zeros(3))


@pytest.mark.parametrize(("desc", "key"), BAD, ids=[f"{i}-{k}" for i, (_, k) in enumerate(BAD)])
def test_bad_descriptions(bad_dir, desc, key):
    desc = {k: v.replace("{dir}", str(bad_dir)) if k == "path" else v for k, v in desc.items()}
    with pytest.raises(InputError) as exc:
        load_dataset(desc)
    msg = str(exc.value)
    key = key.removeprefix("data.")  # keyed by the description's own key
    assert exc.value.key == key and msg.startswith(key + ":") and "\n" not in msg
    assert isinstance(exc.value, ValueError)


def test_not_a_mapping():
    with pytest.raises(InputError, match=r"^expected a mapping") as exc:
        load_dataset(["ellipses"])
    assert exc.value.key is None


# last: importing sklearn makes the garbage collection between tests slower
@pytest.mark.serial
def test_digits_split_matches_sklearn():
    from sklearn.datasets import load_digits

    ref = load_digits()
    d = load_dataset({"name": "digits"})
    assert (d.n_train, d.n_test, d.input_shape, d.n_in) == (898, 899, (8, 8), 64)
    assert np.array_equal(d.X_train, ref.data[:898] / 16.0)
    assert np.array_equal(d.X_test, ref.data[898:] / 16.0)
    assert np.array_equal(d.y_train, ref.target[:898]) and np.array_equal(
        d.y_test, ref.target[898:]
    )
    assert np.array_equal(d.X_train[5].reshape(8, 8), ref.images[5] / 16.0)
    small = load_dataset({"name": "digits", "n_train": 100, "n_test": 50})
    assert np.array_equal(small.X_test, ref.data[100:150] / 16.0)


def _readme_data_block() -> dict:
    """README's "The data sets, exactly" block, run as printed; its namespace."""
    import re

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- data-sets -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no <!-- data-sets --> python block"
    ns: dict = {}
    exec(m.group(1), ns)
    return ns


def _equal_parts(d: Dataset, parts) -> bool:
    (Xtr, ytr), (Xte, yte) = parts
    return all(
        np.array_equal(a, np.asarray(b, dtype=a.dtype).reshape(a.shape))
        for a, b in ((d.X_train, Xtr), (d.y_train, ytr), (d.X_test, Xte), (d.y_test, yte))
    )


@pytest.mark.parametrize("name", SYNTHETIC)
@pytest.mark.parametrize("noise", [0.0, 0.1])
def test_readme_rebuilds_the_synthetic_sets_bit_for_bit(name, noise):
    """README's NumPy block gives pontryx's arrays exactly (an outsider's anchor)."""
    ns = _readme_data_block()
    d = load_dataset({"name": name, "n_train": 37, "n_test": 23, "seed": 5, "noise": noise})
    assert _equal_parts(d, ns["synthetic"](name, 37, 23, seed=5, noise=noise))


def test_readme_rebuilds_digits_and_the_file_split(mpi_tmp_path):
    from mpi4py import MPI

    ns = _readme_data_block()
    assert _equal_parts(load_dataset({"name": "digits"}), ns["digits"]())
    d = load_dataset({"name": "digits", "n_train": 500, "n_test": 100})
    assert _equal_parts(d, ns["digits"](500, 100))
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((203, 3)), np.arange(203) % 3
    path = _write(MPI.COMM_WORLD, mpi_tmp_path / "xy.npz", lambda p: np.savez(p, X=X, y=y))
    for frac, seed in ((0.5, 0), (0.25, 7)):
        d = load_dataset({"name": "file", "path": str(path), "test_fraction": frac, "seed": seed})
        assert _equal_parts(d, ns["file_split"](X, y, frac, seed))


def test_npz_with_both_x_y_and_a_split_is_refused(mpi_tmp_path):
    from mpi4py import MPI

    X, y = np.zeros((6, 2)), np.arange(6) % 2

    def write(p):
        np.savez(p, X=X, y=y, X_train=X, y_train=y, X_test=X, y_test=y)

    path = _write(MPI.COMM_WORLD, mpi_tmp_path / "both.npz", write)
    with pytest.raises(InputError, match="both X, y and X_train"):
        load_dataset({"name": "file", "path": str(path)})


def test_huge_csv_class_label_is_called_too_large_in_a_short_line(mpi_tmp_path):
    """A class label of 401 digits is a finite integer beyond a float: the message
    says so (not "non-finite") and echoes at most 60 characters of it; "inf" and
    "nan" are still non-finite."""
    from mpi4py import MPI

    huge = "1" + "0" * 400

    def write(p):
        p.write_text("".join(f"0.{i},0.5,{huge if i % 2 else 0}\n" for i in range(1, 7)))

    path = _write(MPI.COMM_WORLD, mpi_tmp_path / "huge.csv", write)
    with pytest.raises(InputError) as exc:
        load_dataset({"name": "file", "path": str(path)})
    msg = str(exc.value)
    assert exc.value.key == "target" and "\n" not in msg
    assert "too large" in msg and "non-finite" not in msg and "(401 characters)" in msg, msg
    assert huge[:80] not in msg and "line 1 of" in msg, msg

    def write_nan(p):
        p.write_text("0.1,0.5,0\n0.2,0.5,-nan\n")

    path = _write(MPI.COMM_WORLD, mpi_tmp_path / "nan.csv", write_nan)
    with pytest.raises(InputError, match="non-finite class label '-nan' in column '2', line 2"):
        load_dataset({"name": "file", "path": str(path)})


def test_missing_csv_class_label_is_refused(mpi_tmp_path):
    """An empty label cell is refused with its line, as an empty feature is (it had
    become a class '' of its own, and the model one output more)."""
    from mpi4py import MPI

    def write(p):
        p.write_text("".join(f"0.{i},0.5,{i % 2}\n" for i in range(1, 7)) + "0.1,0.2,\n")

    path = _write(MPI.COMM_WORLD, mpi_tmp_path / "empty_label.csv", write)
    with pytest.raises(InputError, match="missing class label in column '2', line 7 of") as e:
        load_dataset({"name": "file", "path": str(path)})
    assert e.value.key == "target"

    def write_npz(p):  # '' among string labels of an NPZ file, refused the same way
        np.savez(p, X=np.arange(12.0).reshape(6, 2), y=np.array(["a", "b", "", "a", "b", "a"]))

    path = _write(MPI.COMM_WORLD, mpi_tmp_path / "empty_label.npz", write_npz)
    with pytest.raises(InputError, match=r"empty class label in y of .* \(sample 2\)") as e:
        load_dataset({"name": "file", "path": str(path)})
    assert e.value.key == "path"


def test_huge_csv_feature_and_a_label_beyond_2_53_are_one_line_errors(mpi_tmp_path):
    """A feature of 401 digits is "too large", shown in at most 60 characters; a
    class label of 1e19 would wrap in int64 (from 2⁶³) and float64 no longer
    separates neighbouring integers from 2⁵³: refused."""
    from mpi4py import MPI

    huge = "1" + "0" * 400

    def write(p):
        p.write_text(f"{huge},0.5,0\n0.1,0.2,1\n")

    path = _write(MPI.COMM_WORLD, mpi_tmp_path / "feature.csv", write)
    with pytest.raises(InputError, match=r"feature too large '1000.*line 1 of") as exc:
        load_dataset({"name": "file", "path": str(path)})
    assert huge[:80] not in str(exc.value)

    def write_label(p):
        p.write_text("0.1,0.5,1e19\n0.1,0.2,1\n")

    path = _write(MPI.COMM_WORLD, mpi_tmp_path / "label.csv", write_label)
    with pytest.raises(InputError, match=r"class label 1e\+19 is not an integer below 2⁵³"):
        load_dataset({"name": "file", "path": str(path)})


@pytest.mark.parametrize("name", ["ellipses", "sine"])
def test_noise_is_bounded_where_it_is_read(name):
    """data.noise above 1e150 is refused keyed data.noise (1e308 overflowed the draws:
    a RuntimeWarning, then an error keyed training.X)."""
    base = {"name": name, "n_train": 8, "n_test": 4}
    with pytest.raises(InputError, match=r"noise: must be at most 1e\+150"):
        load_dataset({**base, "noise": 1e308})
    assert np.isfinite(load_dataset({**base, "noise": 1e150}).X_train).all()


def test_a_data_path_that_loops_is_one_line(tmp_path):
    """A data.path that is a symbolic link loop (or dangling) is named as such, not a
    RuntimeError traceback from resolving it."""
    from pontryx.solver.config import validate_config

    (tmp_path / "loop.csv").symlink_to("loop.csv")
    (tmp_path / "gone.csv").symlink_to("nowhere.csv")
    for name, why in (("loop.csv", "is a symbolic link that leads nowhere"),
                      ("gone.csv", "does not exist")):  # fmt: skip
        raw = {"data": {"name": "file", "path": name}}
        with pytest.raises(InputError, match=f"^data.path: file '{name}' {why}$"):
            validate_config(raw, base_dir=tmp_path)


def test_a_structured_dtype_is_named_in_a_word(tmp_path):
    """The message printed a structured dtype whole: 547 characters for 30 fields
    (README: at most 60 characters of a value)."""
    dt = np.dtype([(f"f{i}", "<f8") for i in range(30)])
    path = tmp_path / "s.npz"
    np.savez(path, X_train=np.zeros((3, 2), dt), y_train=np.zeros(3, int),
             X_test=np.zeros((3, 2), dt), y_test=np.zeros(3, int))  # fmt: skip
    with pytest.raises(InputError, match=r"non-numeric features \(structured\)") as e:
        load_dataset({"name": "file", "path": str(path)})
    assert len(str(e.value)) < 150
