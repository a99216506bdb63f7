"""Data augmentation (``data.augment``): shifted and rotated copies of the
training images, their definition, the checks of the key, the test set left
alone, and the same training problem on any number of ranks."""

from mpi4py import MPI

import numpy as np
import pytest

from pontryx.meshes import InputError
from pontryx.solver.app.problem import build_problem
from pontryx.solver.config import validate_config
from pontryx.solver.data import load_dataset
from pontryx.solver.data.augment import augmentation, augmented


def _images(S=3, H=4, W=5):
    return np.arange(S * H * W, dtype=np.float64).reshape(S, H, W) + 1.0


def test_shifts_move_the_pixels_and_fill_with_zeros():
    """k = 1: the originals, then the 8 moves (dx right, dy down; dy outermost)."""
    imgs = _images()
    S, H, W = imgs.shape
    y = np.arange(S)
    X, Y = augmented(imgs.reshape(S, -1), y, (H, W), augmentation({"shifts": 1}))
    assert X.shape == (9 * S, H * W) and np.array_equal(Y, np.tile(y, 9))
    blocks = X.reshape(9, S, H, W)
    assert np.array_equal(blocks[0], imgs)
    moves = [(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)]
    for block, (dx, dy) in zip(blocks[1:], moves):
        for i in range(H):
            for j in range(W):
                src = (i - dy, j - dx)
                inside = 0 <= src[0] < H and 0 <= src[1] < W
                expect = imgs[:, src[0], src[1]] if inside else 0.0
                assert np.array_equal(block[:, i, j], expect * np.ones(S)), (dx, dy, i, j)


def test_rotations_turn_about_the_centre():
    """±90° are exact quarter turns (counter-clockwise for φ > 0, row 0 on top);
    a small angle keeps the centre pixel's neighbourhood and fills corners with 0."""
    imgs = _images(2, 5, 5)
    X, _ = augmented(
        imgs.reshape(2, -1), np.zeros(2), (5, 5), augmentation({"rotations": [90, -90, 10]})
    )
    turned = X.reshape(4, 2, 5, 5)
    assert np.allclose(turned[1], np.rot90(imgs, 1, axes=(1, 2)), rtol=0, atol=1e-12)
    assert np.allclose(turned[2], np.rot90(imgs, -1, axes=(1, 2)), rtol=0, atol=1e-12)
    assert np.allclose(turned[3][:, 2, 2], imgs[:, 2, 2])


def test_digits_augmented_train_only_and_deterministic():
    plain = load_dataset({"name": "digits", "n_train": 50, "n_test": 20})
    desc = {
        "name": "digits",
        "n_train": 50,
        "n_test": 20,
        "augment": {"shifts": 1, "rotations": [-10, 10]},
    }
    a, b = load_dataset(desc), load_dataset(desc)
    assert a.n_train == 50 * 11 and np.array_equal(a.X_train, b.X_train)
    assert np.array_equal(a.X_train[:50], plain.X_train) and np.array_equal(
        a.y_train, np.tile(plain.y_train, 11)
    )
    assert np.array_equal(a.X_test, plain.X_test) and np.array_equal(a.y_test, plain.y_test)
    assert "augmented" in a.description and a.X_train.min() >= 0.0 and a.X_train.max() <= 1.0
    assert load_dataset({**desc, "augment": {}}).n_train == 50  # no copies


BAD = [
    ({"shifts": -1}, "augment.shifts", "expected an integer >= 0, got -1"),
    ({"shifts": 1.5}, "augment.shifts", "expected an integer >= 0, got 1.5"),
    ({"shifts": True}, "augment.shifts", "expected an integer >= 0, got true"),
    ({"shifts": 8}, "augment.shifts", "must be < 8, the image's smaller side, got 8"),
    ({"rotations": 10}, "augment.rotations", "expected a list of angles in degrees, got 10"),
    ({"rotations": [1, "x"]}, "augment.rotations", "expected finite angles in degrees"),
    ({"rotations": [181]}, "augment.rotations", "expected angles in [-180, 180]"),
    ({"flips": 1}, "augment.flips", "unknown key (allowed: shifts, rotations)"),
    ([1], "augment", "expected a mapping with keys shifts, rotations"),
]


@pytest.mark.parametrize(("spec", "key", "text"), BAD, ids=[k for _, k, _ in BAD])
def test_bad_augment_is_one_line_keyed_by_the_yaml_key(spec, key, text):
    """The schema refuses a bad ``data.augment`` (before anything is built), and
    the data layer keys the same error by the description's key."""
    raw = {"data": {"name": "digits", "augment": spec}, "model": {"embedding": {"type": "image"}}}
    with pytest.raises(InputError) as info:
        validate_config(raw, ranks=1)
    assert info.value.key == f"data.{key}"
    assert str(info.value).startswith(f"data.{key}: {text}") and "\n" not in str(info.value)
    with pytest.raises(InputError) as info:
        load_dataset({"name": "digits", "augment": spec})
    assert info.value.key == key and info.value.message.startswith(text)


def test_augment_needs_images():
    with pytest.raises(InputError, match="unknown key"):
        load_dataset({"name": "ellipses", "augment": {"shifts": 1}})
    raw = {"data": {"name": "file", "path": __file__, "input_shape": [64]}}
    with pytest.raises(InputError) as info:
        validate_config({**raw, "data": {**raw["data"], "augment": {"shifts": 1}}}, ranks=1)
    assert info.value.key == "data.augment" and "2-entry input_shape" in info.value.message


def _config(comm):
    return validate_config(
        {
            "mesh": {"kind": "unit_square", "n": 3},
            "model": {"embedding": {"type": "image"}, "layers": 2, "init": {"variance": 1.0}},
            "data": {
                "name": "digits",
                "n_train": 7,
                "n_test": 5,
                "augment": {"shifts": 1, "rotations": [12]},
            },
            "parallel": {"width": 1},
        },
        ranks=comm.size,
    )


def test_same_training_problem_on_any_number_of_ranks(comm):
    """J and ∇J of the augmented set (70 samples sharded over the data ranks)
    equal one rank's to round-off."""
    from pontryx.solver.outputs.canonical import to_canonical

    values = []
    for c in (MPI.COMM_SELF, comm):
        p = build_problem(_config(c), c)
        try:
            assert p.rf.S == 70
            J, g = p.rf.value_and_gradient(p.controls)
            values.append((J, to_canonical(p.net, g)))
        finally:
            p.destroy()
    (J1, g1), (J, g) = values
    assert np.isclose(J, J1, rtol=1e-12, atol=0)
    for name in g1:
        scale = np.max(np.abs(g1[name])) or 1.0
        assert np.max(np.abs(g[name] - g1[name])) <= 1e-10 * scale, name


def test_image_file_augmented(comm, mpi_tmp_path):
    """An NPZ of S×4×4 images with a given split: the training part is augmented
    like digits, the test part is left alone."""
    path = mpi_tmp_path / "images.npz"
    imgs = _images(6, 4, 4)  # pixels 1 … 96: the zero fill widens the feature range
    if comm.rank == 0:
        np.savez(path, X_train=imgs[:4], y_train=[0, 1, 0, 1], X_test=imgs[4:], y_test=[1, 0])
    comm.barrier()
    d = load_dataset({"name": "file", "path": str(path), "augment": {"shifts": 1}})
    assert d.input_shape == (4, 4) and d.n_train == 36 and d.n_test == 2
    assert d.feature_range == (0.0, 96.0)
    X, _ = augmented(imgs[:4].reshape(4, -1), np.zeros(4), (4, 4), augmentation({"shifts": 1}))
    assert np.array_equal(d.X_train, X) and np.array_equal(d.X_test, imgs[4:].reshape(2, -1))
