"""Data sets: the built-in sets of DESIGN §6, the user's CSV/NPZ files, seeded splits.

A data set is described by the ``data:`` section of the YAML configuration, a
mapping such as ``{name: ellipses, n_train: 1000, n_test: 1000, seed: 0}``;
:func:`load_dataset` turns it into an immutable :class:`Dataset`.

Built-in sets (:data:`DATASETS`; accepted keys and defaults in :data:`DATASET_KEYS`):

- ``ellipses``   2 classes in R²: class 0 has r ~ U[0,1), class 1 r ~ U[1,2),
  φ ~ U[0,2π), point (r cos φ, 0.4 r sin φ).
- ``swiss_roll`` 2 interleaved Swiss-roll arms in [−1,1]² (Haber & Ruthotto 2017).
- ``peaks``      points of [−3,3]² labelled by level sets of MATLAB's peaks, 5 classes.
- ``spirals``    2 intertwined spirals in [−1,1]².
- ``digits``     scikit-learn's 8×8 digits (1797 images, pixels /16 in [0,1]); first
  half train, second half test, the split of scikit-learn's own digits example.
- ``sine``       1D regression, x ~ U[−π,π], y = sin x.
- ``file``       the user's CSV or NPZ file (see :func:`load_dataset`).

Everything is deterministic: the same description gives bit-identical arrays on
every MPI rank, so each rank generates the whole set and keeps its
:func:`shard`. Synthetic train and test sets are drawn from independent streams
spawned from ``numpy.random.SeedSequence(seed)``. Invalid descriptions raise
:class:`DataError` with a one-line message naming the key, e.g.
``data.path: file 'foo.csv' does not exist``.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DATASETS",
    "DATASET_KEYS",
    "DIGITS_SPLIT",
    "PEAKS_THRESHOLDS",
    "DataError",
    "Dataset",
    "load_dataset",
    "peaks",
    "shard",
]

#: Names of the built-in data sets (``file`` is the user's own data).
DATASETS: tuple[str, ...] = ("ellipses", "swiss_roll", "peaks", "spirals", "digits", "sine")

#: Default digits split: the first 898 of scikit-learn's 1797 images train, the other
#: 899 test (``train_test_split(..., test_size=0.5, shuffle=False)`` in its example).
DIGITS_SPLIT = 898

_SYNTHETIC = {"n_train": 1000, "n_test": 1000, "seed": 0, "noise": 0.0}

#: Accepted keys of ``data:`` besides ``name``, with their defaults, per data set.
#: ``...`` (Ellipsis) marks a required key, ``None`` "automatic".
DATASET_KEYS: dict[str, dict[str, Any]] = {
    "ellipses": dict(_SYNTHETIC),
    "swiss_roll": dict(_SYNTHETIC),
    "peaks": dict(_SYNTHETIC),
    "spirals": dict(_SYNTHETIC),
    "digits": {"n_train": DIGITS_SPLIT, "n_test": None},
    "sine": {"n_train": 200, "n_test": 200, "seed": 0, "noise": 0.0},
    "file": {
        "path": ...,
        "target": -1,
        "task": "classification",
        "test_fraction": 0.2,
        "seed": 0,
        "header": None,
        "input_shape": None,
    },
}

#: Level-set thresholds of :func:`peaks` for the 5 classes of the ``peaks`` set:
#: the 20/40/60/80 % quantiles of peaks(x, y) for (x, y) uniform on [−3,3]²
#: (midpoint rule on an 8000² grid), so the classes are about equally likely.
#: Class k holds the points with t_{k-1} ≤ peaks(x, y) < t_k.
PEAKS_THRESHOLDS: tuple[float, ...] = (-0.3079, 0.0017, 0.1536, 1.3136)

_TASKS = ("classification", "regression")


class DataError(ValueError):
    """An invalid ``data:`` description or data file; the message is one line that
    starts with the offending key, ``data.<key>: ...``."""

    def __init__(self, key: str, message: str):
        text = f"data.{key}: {message}" if key else f"data: {message}"
        super().__init__(" ".join(text.split()))
        self.key = key


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
        if self.task not in _TASKS:
            raise ValueError(f"task must be one of {_TASKS}, got {self.task!r}")
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


def peaks(x, y):
    """MATLAB's peaks function, 3(1−x)² e^{−x²−(y+1)²} − 10(x/5 − x³ − y⁵) e^{−x²−y²}
    − e^{−(x+1)²−y²}/3."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return (
        3.0 * (1.0 - x) ** 2 * np.exp(-(x**2) - (y + 1.0) ** 2)
        - 10.0 * (x / 5.0 - x**3 - y**5) * np.exp(-(x**2) - y**2)
        - np.exp(-((x + 1.0) ** 2) - y**2) / 3.0
    )


# --------------------------------------------------------------------------- checks


def _int(desc, key, *, minimum: int) -> int:
    v = desc[key]
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise DataError(key, f"expected an integer, got {v!r}")
    if v < minimum:
        raise DataError(key, f"must be >= {minimum}, got {v}")
    return int(v)


def _float(desc, key) -> float:
    v = desc[key]
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise DataError(key, f"expected a number, got {v!r}")
    return float(v)


def _noise(desc) -> float:
    v = _float(desc, "noise")
    if not (math.isfinite(v) and v >= 0.0):
        raise DataError("noise", f"must be a finite number >= 0, got {v}")
    return v


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent train and test generators from one seed."""
    train, test = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(train), np.random.default_rng(test)


# --------------------------------------------------------------------------- synthetic


def _balanced_labels(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """n labels, class c occurring n//k + (c < n % k) times, in random order."""
    counts = [n // k + (c < n % k) for c in range(k)]
    return rng.permutation(np.repeat(np.arange(k, dtype=np.int64), counts))


def _ellipses(rng, n):
    y = _balanced_labels(rng, n, 2)
    r = y + rng.random(n)
    phi = 2.0 * np.pi * rng.random(n)
    return np.column_stack([r * np.cos(phi), 0.4 * r * np.sin(phi)]), y


def _swiss_roll(rng, n):
    y = _balanced_labels(rng, n, 2)
    theta = 4.0 * np.pi * rng.random(n)
    r = (theta / (4.0 * np.pi) + 0.2 * y) / 1.2
    return np.column_stack([r * np.cos(theta), r * np.sin(theta)]), y


def _spirals(rng, n):
    y = _balanced_labels(rng, n, 2)
    t = rng.random(n)
    r = 0.1 + 0.9 * t
    theta = 4.0 * np.pi * t + np.pi * y
    return np.column_stack([r * np.cos(theta), r * np.sin(theta)]), y


def _peaks(rng, n):
    X = rng.uniform(-3.0, 3.0, size=(n, 2))
    y = np.searchsorted(PEAKS_THRESHOLDS, peaks(X[:, 0], X[:, 1]), side="right")
    return X, y.astype(np.int64)


def _sine(rng, n):
    x = rng.uniform(-np.pi, np.pi, size=(n, 1))
    return x, np.sin(x)


# name: (sampler, task, n_classes, feature_range, description)
_GENERATORS: dict[str, tuple[Callable, str, int, tuple[float, float], str]] = {
    "ellipses": (
        _ellipses,
        "classification",
        2,
        (-2.0, 2.0),
        "concentric ellipses: class 0 r~U[0,1), class 1 r~U[1,2), φ~U[0,2π), "
        "x=(r cos φ, 0.4 r sin φ)",
    ),
    "swiss_roll": (
        _swiss_roll,
        "classification",
        2,
        (-1.0, 1.0),
        "Swiss roll (Haber–Ruthotto 2017): θ~U[0,4π), class c radius (θ/4π + 0.2c)/1.2, "
        "x=r(cos θ, sin θ)",
    ),
    "peaks": (
        _peaks,
        "classification",
        5,
        (-3.0, 3.0),
        f"peaks: x~U[-3,3]², class = level set of MATLAB peaks(x) at {PEAKS_THRESHOLDS}",
    ),
    "spirals": (
        _spirals,
        "classification",
        2,
        (-1.0, 1.0),
        "two spirals: t~U[0,1), r=0.1+0.9t, θ=4πt+πc, x=r(cos θ, sin θ)",
    ),
    "sine": (_sine, "regression", 0, (-np.pi, np.pi), "sine: x~U[-π,π], y=sin x"),
}


def _synthetic(name: str, desc: Mapping) -> Dataset:
    sampler, task, k, frange, text = _GENERATORS[name]
    n_train = _int(desc, "n_train", minimum=1)
    n_test = _int(desc, "n_test", minimum=1)
    seed = _int(desc, "seed", minimum=0)
    noise = _noise(desc)
    rng_train, rng_test = _streams(seed)
    sets = []
    for rng, n in ((rng_train, n_train), (rng_test, n_test)):
        X, y = sampler(rng, n)
        if noise > 0.0 and task == "regression":
            y = y + noise * rng.standard_normal(y.shape)
        elif noise > 0.0:
            X = X + noise * rng.standard_normal(X.shape)
        sets.append((X, y))
    if noise > 0.0:
        text += f", Gaussian noise std {noise} on {'y' if task == 'regression' else 'x'}"
    n_out = k if task == "classification" else 1
    return Dataset(
        name=name,
        task=task,
        X_train=sets[0][0],
        y_train=sets[0][1],
        X_test=sets[1][0],
        y_test=sets[1][1],
        n_classes=k,
        n_outputs=n_out,
        input_shape=(sets[0][0].shape[1],),
        feature_range=frange,
        description=f"{text}; seed {seed}, {n_train} train / {n_test} test",
        classes=tuple(range(k)),
    )


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as (1797×64 pixels 0..16, labels), in its order, through
    its public API ``sklearn.datasets.load_digits``."""
    from sklearn.datasets import load_digits

    pixels, labels = load_digits(return_X_y=True)
    return np.asarray(pixels, dtype=np.float64), np.asarray(labels, dtype=np.int64)


def _digits(desc: Mapping) -> Dataset:
    pixels, y = _digits_arrays()
    total = len(y)
    n_train = _int(desc, "n_train", minimum=1)
    if n_train >= total:
        raise DataError("n_train", f"must be < {total} (the number of digits images)")
    n_test = total - n_train if desc["n_test"] is None else _int(desc, "n_test", minimum=1)
    if n_train + n_test > total:
        raise DataError(
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
        input_shape=(8, 8),
        feature_range=(0.0, 1.0),
        description=(
            f"scikit-learn 8x8 digits, pixels/16 in [0,1]: images 0..{n_train - 1} train, "
            f"{n_train}..{n_train + n_test - 1} test"
        ),
        classes=tuple(range(10)),
    )


# --------------------------------------------------------------------------- files


def _numeric_columns(rows, cols, names, shown, key, what, what_nonfinite) -> np.ndarray:
    """The columns ``cols`` of CSV ``rows`` as floats; a non-numeric or non-finite
    cell is a DataError naming ``key``, the column and the line."""
    out = np.empty((len(rows), len(cols)))
    for i, (line, row) in enumerate(rows):
        for jj, j in enumerate(cols):
            v = _number(row[j])
            if v is None:
                raise DataError(
                    key,
                    f"non-numeric {what} {row[j]!r} in column {names[j]!r}, "
                    f"line {line} of {shown!r}",
                )
            if not math.isfinite(v):
                raise DataError(
                    key,
                    f"non-finite {what_nonfinite} {row[j]!r} in column {names[j]!r}, "
                    f"line {line} of {shown!r}",
                )
            out[i, jj] = v
    return out


def _number(s: str) -> float | None:
    try:
        return float(s)
    except ValueError:
        return None


def _read_csv(
    path: Path, shown: str, header_opt, by_name: bool
) -> tuple[list[str] | None, list[list[str]]]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = [
                (i, [c.strip() for c in row])
                for i, row in enumerate(csv.reader(f), start=1)
                if row and any(c.strip() for c in row)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError("path", f"cannot read {shown!r}: {e}") from None
    if not rows:
        raise DataError("path", f"file {shown!r} is empty")
    width = len(rows[0][1])
    for line, row in rows:
        if len(row) != width:
            raise DataError(
                "path", f"line {line} of {shown!r} has {len(row)} fields, expected {width}"
            )
    if header_opt is None and by_name:
        has_header = True
    elif header_opt is None:
        # A header is a first row with a non-numeric cell where the second row is numeric.
        first = rows[0][1]
        second = rows[1][1] if len(rows) > 1 else [""] * width
        has_header = any(
            _number(a) is None and _number(b) is not None for a, b in zip(first, second)
        ) or (len(rows) == 1 and any(_number(a) is None for a in first))
    else:
        has_header = header_opt
    header = rows[0][1] if has_header else None
    return header, (rows[1:] if has_header else rows)


def _column_index(target, header, width, shown) -> int:
    if isinstance(target, str):
        if header is None:
            raise DataError(
                "target", f"column {target!r} given by name but {shown!r} has no header"
            )
        if target not in header:
            raise DataError("target", f"no column {target!r} in {shown!r} (columns: {header})")
        return header.index(target)
    if not -width <= target < width:
        raise DataError("target", f"column {target} out of range for {width} columns of {shown!r}")
    return target % width


def _csv_arrays(path, shown, desc, task):
    targets = desc["target"]
    targets = list(targets) if isinstance(targets, list | tuple) else [targets]
    by_name = any(isinstance(t, str) for t in targets)
    header, rows = _read_csv(path, shown, desc["header"], by_name)
    if by_name and desc["header"] is None and all(_number(c) is not None for c in header):
        raise DataError("target", f"column given by name but {shown!r} has no header row")
    width = len(header) if header is not None else len(rows[0][1])
    if not targets:
        raise DataError("target", "no target column given")
    if task == "classification" and len(targets) != 1:
        raise DataError("target", "classification takes exactly one target column")
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, str | numbers.Integral):
            raise DataError("target", f"expected a column name or index, got {t!r}")
    tcols = [_column_index(t, header, width, shown) for t in targets]
    if len(set(tcols)) != len(tcols):
        raise DataError("target", "a target column is given twice")
    fcols = [j for j in range(width) if j not in tcols]
    if not fcols:
        raise DataError("target", f"no feature columns left in {shown!r}")
    if len(rows) < 2:
        raise DataError("path", f"{shown!r} needs at least 2 samples, has {len(rows)}")
    names = header if header is not None else [str(j) for j in range(width)]
    X = _numeric_columns(rows, fcols, names, shown, "path", "feature", "feature")
    if task == "regression":
        Y = _numeric_columns(rows, tcols, names, shown, "target", "regression target", "target")
    else:
        for line, row in rows:
            v = _number(row[tcols[0]])
            if v is not None and not math.isfinite(v):
                raise DataError(
                    "target",
                    f"non-finite class label {row[tcols[0]]!r}, line {line} of {shown!r}",
                )
        Y = np.array([row[tcols[0]] for _, row in rows], dtype=str)
    return X, Y


def _npz_arrays(path, shown):
    if not zipfile.is_zipfile(path):
        raise DataError("path", f"cannot read {shown!r} as NPZ: not a zip archive")
    try:
        f = np.load(path, allow_pickle=False)
        if not isinstance(f, np.lib.npyio.NpzFile):
            raise ValueError("not an NPZ archive")
        with f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError("path", f"cannot read {shown!r} as NPZ: {e}") from None
    if {"X_train", "y_train", "X_test", "y_test"} <= arrays.keys():
        return (arrays["X_train"], arrays["y_train"]), (arrays["X_test"], arrays["y_test"])
    if {"X", "y"} <= arrays.keys():
        return (arrays["X"], arrays["y"]), None
    raise DataError(
        "path",
        f"{shown!r} must hold arrays X, y or X_train, y_train, X_test, y_test "
        f"(found: {', '.join(sorted(arrays)) or 'none'})",
    )


def _check_X(X, shown, part):
    X = np.asarray(X)
    if X.ndim < 2 or X.shape[0] == 0 or math.prod(X.shape[1:]) == 0:
        raise DataError(
            "path", f"{part} in {shown!r} must be samples × features, has shape {X.shape}"
        )
    if X.dtype.kind not in "biuf":
        raise DataError("path", f"non-numeric features ({X.dtype}) in {part} of {shown!r}")
    X = X.astype(np.float64).reshape(X.shape[0], -1)
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise DataError("path", f"NaN or inf in {part} of {shown!r} (sample {i}, feature {j})")
    return X


def _check_y(y, n, task, shown, part):
    y = np.asarray(y)
    if task == "classification" and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape[:1] != (n,) or y.ndim > 2 or (task == "classification" and y.ndim != 1):
        want = "(S,)" if task == "classification" else "(S,) or (S, n_out)"
        raise DataError("path", f"{part} in {shown!r} has shape {y.shape}, expected {want}, S={n}")
    if task == "regression":
        if y.dtype.kind not in "biuf":
            raise DataError("path", f"non-numeric regression targets ({y.dtype}) in {shown!r}")
        y = y.astype(np.float64).reshape(n, -1)
        if not np.isfinite(y).all():
            raise DataError("path", f"NaN or inf in {part} of {shown!r}")
    elif y.dtype.kind not in "biuUS" and not (
        y.dtype.kind == "f" and np.isfinite(y).all() and np.all(y == np.round(y))
    ):
        raise DataError(
            "path", f"class labels in {part} of {shown!r} must be integers or strings ({y.dtype})"
        )
    return y


def _encode_labels(ys: Sequence[np.ndarray]) -> tuple[tuple, list[np.ndarray]]:
    """Map arbitrary labels (numbers, or strings that may spell numbers) to 0..K−1
    in sorted order of the original values; returns (classes, codes)."""
    raw = [np.asarray(y) for y in ys]
    if all(y.dtype.kind in "US" for y in raw):
        strs = [y.astype(str) for y in raw]
        nums = [np.array([_number(s) for s in y], dtype=object) for y in strs]
        if all(all(v is not None and math.isfinite(v) for v in y) for y in nums):
            raw = [y.astype(np.float64) for y in nums]
        else:
            raw = strs
    if any(y.dtype.kind == "f" for y in raw) and all(np.all(y == np.round(y)) for y in raw):
        raw = [y.astype(np.int64) for y in raw]
    classes, codes = np.unique(np.concatenate(raw), return_inverse=True)
    parts = np.split(codes.astype(np.int64), np.cumsum([len(y) for y in raw])[:-1])
    return tuple(c.item() for c in classes), parts


def _file(desc: Mapping, base_dir) -> Dataset:
    p = desc["path"]
    if p is ... or p is None:
        raise DataError("path", "missing: the data file to read")
    if not isinstance(p, str | os.PathLike):
        raise DataError("path", f"expected a file name, got {p!r}")
    shown = os.fspath(p)
    path = Path(p).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise DataError("path", f"file {shown!r} does not exist")
    if not path.is_file():
        raise DataError("path", f"{shown!r} is not a file")
    task = desc["task"]
    if task not in _TASKS:
        raise DataError("task", f"must be one of {', '.join(_TASKS)}, got {task!r}")
    frac = _float(desc, "test_fraction")
    if not 0.0 < frac < 1.0:
        raise DataError("test_fraction", f"must lie in (0, 1), got {frac}")
    seed = _int(desc, "seed", minimum=0)
    header = desc["header"]
    if header is not None and not isinstance(header, bool):
        raise DataError("header", f"expected true, false or null (auto), got {header!r}")
    t = desc["target"]
    if isinstance(t, bool) or not isinstance(t, str | numbers.Integral | list | tuple):
        raise DataError("target", f"expected a column name or index, got {t!r}")

    suffix = path.suffix.lower()
    if suffix in (".csv", ".txt"):
        split = None
        X, y = _csv_arrays(path, shown, desc, task)
        parts = [(X, y)]
    elif suffix == ".npz":
        if t != DATASET_KEYS["file"]["target"]:
            raise DataError("target", "applies to CSV files only (NPZ files hold X and y)")
        if header is not None:
            raise DataError("header", "applies to CSV files only")
        first, split = _npz_arrays(path, shown)
        parts = [first] if split is None else [first, split]
    else:
        raise DataError("path", f"unsupported file type {suffix!r} of {shown!r} (.csv or .npz)")

    names = ("X", "y") if len(parts) == 1 else None
    checked = []
    for i, (X, y) in enumerate(parts):
        xn, yn = names or (("X_train", "y_train"), ("X_test", "y_test"))[i]
        shape = np.asarray(X).shape[1:]
        Xc = _check_X(X, shown, xn)
        checked.append((Xc, _check_y(y, len(Xc), task, shown, yn), shape))
    if len(checked) == 2 and checked[0][0].shape[1] != checked[1][0].shape[1]:
        raise DataError("path", f"X_train and X_test in {shown!r} have different feature counts")
    if (
        task == "regression"
        and len(checked) == 2
        and checked[0][1].shape[1:] != checked[1][1].shape[1:]
    ):
        raise DataError("path", f"y_train and y_test in {shown!r} have different target counts")
    in_shape = checked[0][2]

    if len(checked) == 1:
        X, y, _ = checked[0]
        n = len(X)
        if n < 2:
            raise DataError("path", f"{shown!r} needs at least 2 samples to split, has {n}")
        n_test = min(max(round(frac * n), 1), n - 1)
        perm = np.random.default_rng(seed).permutation(n)
        tr, te = perm[n_test:], perm[:n_test]
        (X_train, y_train), (X_test, y_test) = (X[tr], y[tr]), (X[te], y[te])
        how = f"seeded split (seed {seed}, test_fraction {frac})"
    else:
        (X_train, y_train, _), (X_test, y_test, _) = checked
        how = "split given in file"

    if task == "classification":
        classes, (y_train, y_test) = _encode_labels([y_train, y_test])
        k = len(classes)
        n_out = k
    else:
        classes, k, n_out = (), 0, y_train.shape[1]

    shape_opt = desc["input_shape"]
    if shape_opt is not None:
        if not isinstance(shape_opt, list | tuple) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in shape_opt
        ):
            raise DataError(
                "input_shape", f"expected a list of positive integers, got {shape_opt!r}"
            )
        if math.prod(shape_opt) != X_train.shape[1]:
            raise DataError(
                "input_shape",
                f"{list(shape_opt)} does not hold the {X_train.shape[1]} features of {shown!r}",
            )
        in_shape = tuple(shape_opt)

    allX = np.concatenate([X_train, X_test])
    return Dataset(
        name="file",
        task=task,
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        n_classes=k,
        n_outputs=n_out,
        input_shape=in_shape,
        feature_range=(float(allX.min()), float(allX.max())),
        description=(f"file {shown} ({task}, {len(X_train)} train / {len(X_test)} test, {how})"),
        classes=classes,
    )


# --------------------------------------------------------------------------- entry point


def load_dataset(desc: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> Dataset:
    """Build the data set described by the ``data:`` section ``desc``.

    Missing keys take the defaults of :data:`DATASET_KEYS`; an unknown name or key,
    a wrong type or value, or a bad file raises :class:`DataError`.

    Synthetic sets (``ellipses``, ``swiss_roll``, ``peaks``, ``spirals``, ``sine``):
    ``n_train`` and ``n_test`` samples (classes balanced up to one sample, except
    ``peaks`` whose classes are balanced in probability), ``seed``, and ``noise``,
    the std of Gaussian noise added to the inputs (to the targets for ``sine``).

    ``digits``: images ``0..n_train−1`` train, the next ``n_test`` (default: all
    the rest) test, in scikit-learn's order.

    ``file``: ``path`` to a ``.csv`` (or ``.txt``) or ``.npz`` file, relative paths
    taken from ``base_dir`` if given. CSV: comma separated, one sample a row, a
    header row detected automatically (``header: true/false`` to force it);
    ``target`` is the name or index of the label column (default the last; a list
    of columns for multi-output regression), all other columns are features. NPZ:
    arrays ``X``, ``y`` (split like CSV) or ``X_train``, ``y_train``, ``X_test``,
    ``y_test`` (used as given); ``X`` may be S×d₁×d₂… (then ``input_shape`` is
    d₁×d₂…, features flattened row-major). Data without a split is split with a
    ``default_rng(seed)`` permutation, ``round(test_fraction·S)`` test samples.
    ``task``: ``classification`` maps the sorted distinct labels (numbers or
    strings) to 0..K−1, kept in ``Dataset.classes``; ``regression`` wants
    numeric targets. ``input_shape`` optionally reshapes the features (e.g.
    ``[8, 8]`` for images).
    """
    if not isinstance(desc, Mapping):
        raise DataError("", f"expected a mapping with a 'name' key, got {type(desc).__name__}")
    name = desc.get("name")
    if name is None:
        raise DataError("name", f"missing; one of {', '.join((*DATASETS, 'file'))}")
    if not isinstance(name, str) or name not in DATASET_KEYS:
        raise DataError(
            "name", f"unknown data set {name!r}; one of {', '.join((*DATASETS, 'file'))}"
        )
    accepted = DATASET_KEYS[name]
    for key in desc:
        if key != "name" and key not in accepted:
            raise DataError(
                str(key),
                f"unknown key for data set {name!r} (accepted: {', '.join(['name', *accepted])})",
            )
    full = {**accepted, **desc}
    if name == "digits":
        return _digits(full)
    if name == "file":
        return _file(full, base_dir)
    return _synthetic(name, full)
