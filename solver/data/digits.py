"""scikit-learn's 8×8 digits (1797 images, pixels/16 in [0, 1]): the first
``n_train`` images train, the next ``n_test`` (default: the rest) test — with the
default 898 the split of scikit-learn's own digits example."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pontryx.solver.data.dataset import DIGITS_SHAPE, Dataset, _error, check_int

__all__ = ["digits"]


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (1797×64 pixels 0..16, labels), in its order, through
    its public API ``sklearn.datasets.load_digits``."""
    from sklearn.datasets import load_digits

    pixels, labels = load_digits(return_X_y=True)
    return np.asarray(pixels, dtype=np.float64), np.asarray(labels, dtype=np.int64)


def digits(desc: Mapping) -> Dataset:
    pixels, y = _digits_arrays()
    total = len(y)
    n_train = check_int(desc, "n_train", minimum=1)
    if n_train >= total:
        raise _error("n_train", f"must be < {total} (the number of digits images)")
    n_test = total - n_train if desc["n_test"] is None else check_int(desc, "n_test", minimum=1)
    if n_train + n_test > total:
        raise _error(
            "n_test", f"n_train + n_test = {n_train + n_test} exceeds the {total} digits images"
        )
    X = pixels / 16.0
    return Dataset(
        name="digits",
        task="classification",
        X_train=X[:n_train],
        y_train=y[:n_train],
        X_test=X[n_train : n_train + n_test],
        y_test=y[n_train : n_train + n_test],
        n_classes=10,
        n_outputs=10,
        input_shape=DIGITS_SHAPE,
        feature_range=(0.0, 1.0),
        description=(
            f"scikit-learn 8x8 digits, pixels/16 in [0,1]: images 0..{n_train - 1} train, "
            f"{n_train}..{n_train + n_test - 1} test"
        ),
        classes=tuple(range(10)),
    )
