"""The user's own data: CSV and NPZ files, with seeded train/test splits.

CSV: comma separated, one sample a row, a header row detected automatically
(``header: true/false`` to force it); ``target`` is the name or index of the
label column (default the last; a list of columns for multi-output regression),
all other columns are features. NPZ: arrays ``X``, ``y`` (split like CSV) or
``X_train``, ``y_train``, ``X_test``, ``y_test`` (used as given); ``X`` may be
S×d₁×d₂… (then ``input_shape`` is d₁×d₂…, features flattened row-major; a
given one must be that shape). Data without a split is split with a
``default_rng(seed)`` permutation, ``round(test_fraction·S)`` test samples.
``task``: ``classification`` maps the sorted distinct labels (numbers or
strings) to 0..K−1, kept in ``Dataset.classes``; ``regression`` wants numeric
targets.
"""

from __future__ import annotations

import csv
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from pontryx.meshes.errors import show, show_dtype
from pontryx.solver.data.dataset import DATASET_KEYS, TASKS, Dataset, _error, check_float, check_int
from pontryx.solver.npz import read_npz

__all__ = ["file_dataset", "file_kind", "read_samples"]


def file_kind(path) -> str | None:
    """``"csv"`` (a ``.csv`` or ``.txt`` file), ``"npz"`` or None (by the suffix)."""
    suffix = Path(path).suffix.lower()
    return "csv" if suffix in (".csv", ".txt") else "npz" if suffix == ".npz" else None


def _numeric_columns(rows, cols, names, shown, key, what, what_nonfinite) -> np.ndarray:
    """The columns ``cols`` of CSV ``rows`` as floats; a non-numeric or non-finite
    cell is an InputError keyed ``key``, the column and the line."""
    out = np.empty((len(rows), len(cols)))
    for i, (line, row) in enumerate(rows):
        for jj, j in enumerate(cols):
            v = _number(row[j])
            if v is None:
                raise _error(
                    key,
                    f"non-numeric {what} {show(row[j])} in column {names[j]!r}, "
                    f"line {line} of {shown!r}",
                )
            if not math.isfinite(v):
                spelled = "nan" in row[j].lower() or "inf" in row[j].lower()
                kind = f"non-finite {what_nonfinite}" if spelled else f"{what_nonfinite} too large"
                raise _error(
                    key,
                    f"{kind} {show(row[j])} in column {names[j]!r}, line {line} of {shown!r}"
                    + ("" if spelled else " (beyond ±1.8e308, the largest float)"),
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
        raise _error("path", f"cannot read {shown!r}: {e}") from None
    if not rows:
        raise _error("path", f"file {shown!r} is empty")
    width = len(rows[0][1])
    for line, row in rows:
        if len(row) != width:
            raise _error(
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
            raise _error(
                "target", f"column {show(target)} given by name but {shown!r} has no header"
            )
        if target not in header:
            raise _error("target", f"no column {show(target)} in {shown!r} (columns: {header})")
        if header.count(target) > 1:
            raise _error(
                "target", f"column {show(target)} appears {header.count(target)} times in {shown!r}"
            )
        return header.index(target)
    if not -width <= target < width:
        raise _error("target", f"column {target} out of range for {width} columns of {shown!r}")
    return target % width


def _csv_arrays(path, shown, desc, task):
    targets = desc["target"]
    targets = list(targets) if isinstance(targets, list | tuple) else [targets]
    by_name = any(isinstance(t, str) for t in targets)
    header, rows = _read_csv(path, shown, desc["header"], by_name)
    if by_name and desc["header"] is None and all(_number(c) is not None for c in header):
        raise _error("target", f"column given by name but {shown!r} has no header row")
    width = len(header) if header is not None else len(rows[0][1])
    if not targets:
        raise _error("target", "no target column given")
    if task == "classification" and len(targets) != 1:
        raise _error("target", "classification takes exactly one target column")
    for t in targets:
        if isinstance(t, bool) or not isinstance(t, str | numbers.Integral):
            raise _error("target", f"expected a column name or index, got {show(t)}")
    tcols = [_column_index(t, header, width, shown) for t in targets]
    if len(set(tcols)) != len(tcols):
        raise _error("target", "a target column is given twice")
    fcols = [j for j in range(width) if j not in tcols]
    if not fcols:
        raise _error("target", f"no feature columns left in {shown!r}")
    if not rows:  # (a split needs 2: file_dataset; evaluate --data takes 1)
        raise _error("path", f"{shown!r} has no samples")
    names = header if header is not None else [str(j) for j in range(width)]
    X = _numeric_columns(rows, fcols, names, shown, "path", "feature", "feature")
    if task == "regression":
        Y = _numeric_columns(rows, tcols, names, shown, "target", "regression target", "target")
    else:
        for line, row in rows:
            label = row[tcols[0]]
            if not label:  # (a missing feature is refused too; "" was a class of its own)
                raise _error(
                    "target",
                    f"missing class label in column {show(names[tcols[0]])}, line {line} "
                    f"of {shown!r}",
                )
            v = _number(label)
            if v is not None and not math.isfinite(v):
                if any(word in label.lower() for word in ("nan", "inf")):
                    what = f"non-finite class label {show(label)}"
                else:  # finite, but beyond a float (1e400, or an integer of 309 digits)
                    what = (
                        f"class label {show(label)} ({len(label)} characters) is too large "
                        "(beyond ±1.8e308, the largest float)"
                    )
                raise _error(
                    "target",
                    f"{what} in column {show(names[tcols[0]])}, line {line} of {shown!r}",
                )
        Y = np.array([row[tcols[0]] for _, row in rows], dtype=str)
    return X, Y


def _npz_arrays(path, shown):
    try:
        arrays = read_npz(path)
    except (OSError, ValueError) as e:
        raise _error("path", f"cannot read {shown!r} as NPZ: {e}") from None
    split = {"X_train", "y_train", "X_test", "y_test"}
    if split <= arrays.keys():
        if {"X", "y"} & arrays.keys():
            raise _error(
                "path",
                f"{shown!r} holds both X, y and X_train, y_train, X_test, y_test: "
                "keep one (X, y to be split, or the split given)",
            )
        return (arrays["X_train"], arrays["y_train"]), (arrays["X_test"], arrays["y_test"])
    if {"X", "y"} <= arrays.keys():
        return (arrays["X"], arrays["y"]), None
    raise _error(
        "path",
        f"{shown!r} must hold arrays X, y or X_train, y_train, X_test, y_test "
        f"(found: {', '.join(sorted(arrays)) or 'none'})",
    )


def _check_X(X, shown, part):
    X = np.asarray(X)
    if X.ndim < 2 or X.shape[0] == 0 or math.prod(X.shape[1:]) == 0:
        raise _error("path", f"{part} in {shown!r} must be samples × features, has shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise _error("path", f"non-numeric features ({show_dtype(X.dtype)}) in {part} of {shown!r}")
    X = X.astype(np.float64).reshape(X.shape[0], -1)
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise _error("path", f"NaN or inf in {part} of {shown!r} (sample {i}, feature {j})")
    return X


def _check_y(y, n, task, shown, part):
    y = np.asarray(y)
    if task == "classification" and y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.shape[:1] != (n,) or y.ndim > 2 or (task == "classification" and y.ndim != 1):
        want = "(S,)" if task == "classification" else "(S,) or (S, n_out)"
        raise _error("path", f"{part} in {shown!r} has shape {y.shape}, expected {want}, S={n}")
    if task == "regression":
        if y.dtype.kind not in "biuf":
            raise _error(
                "path", f"non-numeric regression targets ({show_dtype(y.dtype)}) in {shown!r}"
            )
        y = y.astype(np.float64).reshape(n, -1)
        if not np.isfinite(y).all():
            raise _error("path", f"NaN or inf in {part} of {shown!r}")
    elif y.dtype.kind not in "biuUS" and not (
        y.dtype.kind == "f" and np.isfinite(y).all() and np.all(y == np.round(y))
    ):
        raise _error(
            "path",
            f"class labels in {part} of {shown!r} must be integers or strings "
            f"({show_dtype(y.dtype)})",
        )
    elif y.dtype.kind == "b":  # False, True: the classes 0, 1 (model.npz stores numbers)
        y = y.astype(np.int64)
    elif y.dtype.kind == "S":  # bytes: their text, as evaluate compares labels to classes
        try:
            y = y.astype(str)
        except UnicodeDecodeError:
            raise _error(
                "path", f"class labels in {part} of {shown!r} are bytes that are not text"
            ) from None
    if task == "classification" and y.dtype.kind == "U" and y.size:
        empty = np.flatnonzero(np.char.strip(y) == "")
        if empty.size:  # as an empty CSV cell: not a class of its own
            raise _error("path", f"empty class label in {part} of {shown!r} (sample {empty[0]})")
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
    if any(y.dtype.kind == "f" for y in raw):
        if not all(np.all(y == np.round(y)) for y in raw):
            bad = next(v for y in raw for v in np.ravel(y) if v != np.round(v))
            raise _error(
                "target", f"class label {bad:g} is not an integer (labels: integers or strings)"
            )
        big = next((v for y in raw for v in np.ravel(y) if abs(v) >= 2.0**53), None)
        if big is not None:  # int64 would wrap from 2⁶³, and float64 no longer tells
            raise _error(  # neighbouring integers apart from 2⁵³
                "target", f"class label {big:g} is not an integer below 2⁵³ in magnitude"
            )
        raw = [y.astype(np.int64) for y in raw]
    classes, codes = np.unique(np.concatenate(raw), return_inverse=True)
    parts = np.split(codes.astype(np.int64), np.cumsum([len(y) for y in raw])[:-1])
    return tuple(c.item() for c in classes), parts


def _read_parts(desc: Mapping, base_dir):
    """The checked (X, y, input shape) parts of a file (one, or train and test) and
    the file's shown name."""
    p = desc["path"]
    if p is ... or p is None:
        raise _error("path", "missing: the data file to read")
    if not isinstance(p, str | os.PathLike):
        raise _error("path", f"expected a file name, got {show(p)}")
    shown = os.fspath(p)
    path = Path(p).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.exists():
        raise _error("path", f"file {shown!r} does not exist")
    if not path.is_file():
        raise _error("path", f"{shown!r} is not a file")
    task = desc["task"]
    if task not in TASKS:
        raise _error("task", f"must be one of {', '.join(TASKS)}, got {show(task)}")
    frac = check_float(desc, "test_fraction")
    if not 0.0 < frac < 1.0:
        raise _error("test_fraction", f"must lie in (0, 1), got {frac}")
    check_int(desc, "seed", minimum=0)
    header = desc["header"]
    if header is not None and not isinstance(header, bool):
        raise _error("header", f"expected true, false or null (auto), got {show(header)}")
    t = desc["target"]
    if isinstance(t, bool) or not isinstance(t, str | numbers.Integral | list | tuple):
        raise _error("target", f"expected a column name or index, got {show(t)}")

    kind = file_kind(path)
    if kind == "csv":
        split = None
        X, y = _csv_arrays(path, shown, desc, task)
        parts = [(X, y)]
    elif kind == "npz":
        if t != DATASET_KEYS["file"]["target"]:
            raise _error("target", "applies to CSV files only (NPZ files hold X and y)")
        if header is not None:
            raise _error("header", "applies to CSV files only")
        first, split = _npz_arrays(path, shown)
        parts = [first] if split is None else [first, split]
    else:
        suffix = path.suffix.lower()
        raise _error("path", f"unsupported file type {suffix!r} of {shown!r} (.csv or .npz)")

    names = ("X", "y") if len(parts) == 1 else None
    checked = []
    for i, (X, y) in enumerate(parts):
        xn, yn = names or (("X_train", "y_train"), ("X_test", "y_test"))[i]
        shape = np.asarray(X).shape[1:]
        Xc = _check_X(X, shown, xn)
        checked.append((Xc, _check_y(y, len(Xc), task, shown, yn), shape))
    if len(checked) == 2 and checked[0][0].shape[1] != checked[1][0].shape[1]:
        raise _error("path", f"X_train and X_test in {shown!r} have different feature counts")
    if (
        task == "regression"
        and len(checked) == 2
        and checked[0][1].shape[1:] != checked[1][1].shape[1:]
    ):
        raise _error("path", f"y_train and y_test in {shown!r} have different target counts")
    return checked, shown


def _label_codes(y: np.ndarray, classes: tuple, shown: str) -> np.ndarray:
    """Labels as indices into a model's ``classes`` (numbers or strings, spelled
    either way); a label that is not a class is an error naming it."""
    numeric = all(isinstance(c, int | float) for c in classes)
    index = {c: i for i, c in enumerate(classes)}
    codes = np.empty(len(y), dtype=np.int64)
    for i, v in enumerate(np.asarray(y).tolist()):
        key = v
        if numeric:
            num = _number(str(v))
            key = int(num) if num is not None and num == round(num) else num
        elif not isinstance(v, str):
            key = str(v)
        if key not in index:
            raise _error(
                "target",
                f"label {v!r} (sample {i}) of {shown!r} is not a class of the model "
                f"(classes: {', '.join(map(str, classes))})",
            )
        codes[i] = index[key]
    return codes


def read_samples(desc: Mapping, base_dir, classes: tuple = ()):
    """Every sample of a CSV/NPZ file (all parts, no split): X (S × n_in), y —
    for classification the indices of the labels in ``classes`` (a trained
    model's classes; an unknown label is an error), for regression the targets —
    and the shape of one sample as the file holds it (``input_shape`` if given,
    (n_in,) for flat features)."""
    checked, shown = _read_parts(desc, base_dir)
    X = np.concatenate([c[0] for c in checked])
    y = np.concatenate([c[1] for c in checked])
    if desc["task"] == "classification":
        y = _label_codes(y, tuple(classes), shown)
    shape = tuple(desc.get("input_shape") or ()) or checked[0][2]
    return X, y, tuple(int(n) for n in shape)


def file_dataset(desc: Mapping, base_dir) -> Dataset:
    checked, shown = _read_parts(desc, base_dir)
    task = desc["task"]
    frac, seed = check_float(desc, "test_fraction"), check_int(desc, "seed", minimum=0)
    in_shape = checked[0][2]

    if len(checked) == 1:
        X, y, _ = checked[0]
        n = len(X)
        if n < 2:
            raise _error("path", f"{shown!r} needs at least 2 samples to split, has {n}")
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
        if k < 2:
            raise _error(
                "target", f"only one class ({classes[0]!r}) in {shown!r}: classification needs two"
            )
        missing = sorted(set(range(k)) - set(np.unique(y_train).tolist()))
        if missing:
            raise _error(
                "target",
                f"class {classes[missing[0]]!r} occurs in the test part of {shown!r} only "
                "(a split with every class in the training part: a larger file or another seed)",
            )
        n_out = k
    else:
        classes, k, n_out = (), 0, y_train.shape[1]

    shape_opt = desc["input_shape"]
    if shape_opt is not None:
        if not isinstance(shape_opt, list | tuple) or not all(
            isinstance(d, numbers.Integral) and not isinstance(d, bool) and d > 0 for d in shape_opt
        ):
            raise _error(
                "input_shape", f"expected a list of positive integers, got {show(shape_opt)}"
            )
        if math.prod(shape_opt) != X_train.shape[1]:
            raise _error(
                "input_shape",
                f"{list(shape_opt)} does not hold the {X_train.shape[1]} features of {shown!r}",
            )
        if len(in_shape) > 1 and tuple(shape_opt) != in_shape:
            raise _error(
                "input_shape",
                f"{list(shape_opt)} contradicts the samples of shape {list(in_shape)} of "
                f"{shown!r} (leave it out: the file's shape is taken)",
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
