"""The data-set registry, the :class:`Dataset` record, the sample shards and the
argument checks shared by the data sources.

A data set is described by the ``data:`` section of the YAML configuration, a
mapping such as ``{name: ellipses, n_train: 1000, n_test: 1000, seed: 0}``
(accepted keys and defaults in :data:`DATASET_KEYS`). Bad descriptions raise
:class:`~pontryx.meshes.errors.InputError` keyed by the description's own key
(``n_train``, ``path``); the configuration layer puts it under ``data``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pontryx.meshes.errors import InputError, show

__all__ = [
    "DATASETS",
    "DATASET_KEYS",
    "DIGITS_SHAPE",
    "DIGITS_SPLIT",
    "TASKS",
    "Dataset",
    "shard",
]

#: Names of the built-in data sets (``file`` is the user's own data).
DATASETS: tuple[str, ...] = ("ellipses", "swiss_roll", "peaks", "spirals", "digits", "sine")

#: Default digits split: the first 898 of scikit-learn's 1797 images train, the other
#: 899 test (``train_test_split(..., test_size=0.5, shuffle=False)`` in its example).
DIGITS_SPLIT = 898
#: The digits images' shape (8 × 8 pixels).
DIGITS_SHAPE = (8, 8)

_SYNTHETIC = {"n_train": 1000, "n_test": 1000, "seed": 0, "noise": 0.0}

#: Accepted keys of ``data:`` besides ``name``, with their defaults, per data set.
#: ``...`` (Ellipsis) marks a required key, ``None`` "automatic".
DATASET_KEYS: dict[str, dict[str, Any]] = {
    "ellipses": dict(_SYNTHETIC),
    "swiss_roll": dict(_SYNTHETIC),
    "peaks": dict(_SYNTHETIC),
    "spirals": dict(_SYNTHETIC),
    "digits": {"n_train": DIGITS_SPLIT, "n_test": None, "augment": None},
    "sine": {"n_train": 200, "n_test": 200, "seed": 0, "noise": 0.0},
    "file": {
        "path": ...,
        "target": -1,
        "task": "classification",
        "test_fraction": 0.2,
        "seed": 0,
        "header": None,
        "input_shape": None,
        "augment": None,
    },
}

TASKS = ("classification", "regression")


def _error(key: str, message: str) -> InputError:
    """The error for a bad ``data:`` description, keyed by the description's key."""
    return InputError(message, key or None)


def _frozen(a: np.ndarray, dtype) -> np.ndarray:
    a = np.array(a, dtype=dtype, order="C", copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Dataset:
    """A train/test data set; samples are rows.

    ``X_train`` (S×n_in float64); ``y_train`` int64 labels in 0..K−1
    (classification) or float64 S×n_out targets (regression); same for the test
    set. ``classes`` holds the original label of each class index (file data) or
    ``0..K−1``; ``input_shape`` is ``(8, 8)`` for digits (rows flattened
    row-major), ``(n_in,)`` otherwise; ``feature_range`` bounds the features
    (nominal for built-ins, the data's min/max for files). Arrays are read-only.
    """

    name: str
    task: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    n_outputs: int
    input_shape: tuple[int, ...]
    feature_range: tuple[float, float]
    description: str
    classes: tuple = field(default=())

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        ydtype = np.int64 if self.task == "classification" else np.float64
        for nm, dt in (("X_train", np.float64), ("X_test", np.float64)):
            object.__setattr__(self, nm, _frozen(getattr(self, nm), dt))
        for nm in ("y_train", "y_test"):
            object.__setattr__(self, nm, _frozen(getattr(self, nm), ydtype))
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        object.__setattr__(self, "classes", tuple(self.classes))
        n_in = self.X_train.shape[1]
        if self.X_test.ndim != 2 or self.X_train.ndim != 2 or self.X_test.shape[1] != n_in:
            raise ValueError("X_train and X_test must be 2D with the same number of columns")
        if math.prod(self.input_shape) != n_in:
            raise ValueError(f"input_shape {self.input_shape} does not hold {n_in} features")
        if len(self.y_train) != len(self.X_train) or len(self.y_test) != len(self.X_test):
            raise ValueError("X and y must have the same number of samples")

    @property
    def n_in(self) -> int:
        """Number of input features."""
        return int(self.X_train.shape[1])

    @property
    def n_train(self) -> int:
        return int(self.X_train.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.X_test.shape[0])


def shard(n: int, rank: int, size: int) -> slice:
    """The contiguous block of ``n`` samples that rank ``rank`` of ``size`` owns:
    blocks differ in length by at most one, the first ``n % size`` ranks take one
    more; the blocks of ranks 0..size−1 cover ``range(n)`` exactly once, in order."""
    if size < 1 or not 0 <= rank < size or n < 0:
        raise ValueError(f"shard: need n >= 0 and 0 <= rank < size, got {n=}, {rank=}, {size=}")
    q, r = divmod(n, size)
    start = rank * q + min(rank, r)
    return slice(start, start + q + (rank < r))


def check_int(desc, key, *, minimum: int) -> int:
    v = desc[key]
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise _error(key, f"expected an integer, got {show(v)}")
    if v < minimum:
        raise _error(key, f"must be >= {minimum}, got {v}")
    return int(v)


def check_float(desc, key) -> float:
    v = desc[key]
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise _error(key, f"expected a number, got {show(v)}")
    return float(v)


#: the largest ``noise`` std: noisy values stay below about 10¹⁵¹, so their squares
#: (norms, the loss) stay finite
MAX_NOISE = 1e150


def check_noise(desc) -> float:
    v = check_float(desc, "noise")
    if not (math.isfinite(v) and v >= 0.0):
        raise _error("noise", f"must be a finite number >= 0, got {v}")
    if v > MAX_NOISE:
        raise _error(
            "noise",
            f"must be at most {MAX_NOISE:g} (the noisy values must stay finite), got {show(v)}",
        )
    return v
