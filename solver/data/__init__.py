"""pontryx.solver.data — data sets: the built-in sets of DESIGN §6, the user's
CSV/NPZ files, seeded splits, shards over the data ranks and minibatches.

:mod:`.dataset` (the registry :data:`DATASET_KEYS`, :class:`Dataset`,
:func:`shard`), :mod:`.synthetic` (ellipses, swiss_roll, peaks, spirals, sine),
:mod:`.digits` (scikit-learn's digits), :mod:`.files` (CSV, NPZ),
:mod:`.sampler` (minibatches), :mod:`.augment` (shifted and rotated copies of
training images). :func:`load_dataset` is the entry point.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from pontryx.meshes.errors import InputError, resolve
from pontryx.solver.data.augment import augmentation, augmented
from pontryx.solver.data.dataset import (
    DATASET_KEYS,
    DATASETS,
    DIGITS_SPLIT,
    TASKS,
    Dataset,
    shard,
)
from pontryx.solver.data.sampler import Minibatches

__all__ = [
    "DATASETS",
    "DATASET_KEYS",
    "DIGITS_SPLIT",
    "TASKS",
    "Dataset",
    "Minibatches",
    "load_dataset",
    "shard",
]


def load_dataset(desc: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> Dataset:
    """Build the data set described by the ``data:`` section ``desc``.

    Missing keys take the defaults of :data:`DATASET_KEYS`; an unknown name or key,
    a wrong type or value, or a bad file raises
    :class:`~pontryx.meshes.errors.InputError` keyed by the description's key.

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
    d₁×d₂…, features flattened row-major; a given one must be that shape; S×h×w
    are images). Data without a split is split with a ``default_rng(seed)``
    permutation, ``round(test_fraction·S)`` test samples.
    ``task``: ``classification`` maps the sorted distinct labels (numbers or
    strings) to 0..K−1, kept in ``Dataset.classes``; ``regression`` wants
    numeric targets. ``input_shape`` optionally reshapes the features (e.g.
    ``[8, 8]`` for images).

    ``augment`` (``digits`` and image files): ``{shifts: k, rotations: [φ, …]}``
    adds shifted and rotated copies of the training images
    (:mod:`pontryx.solver.data.augment`); the test set is never augmented.
    """
    full = resolve(desc, DATASET_KEYS, "name", what="data set")
    name = full["name"]
    if name == "digits":
        from pontryx.solver.data.digits import digits

        return _augment(digits(full), full["augment"])
    if name == "file":
        from pontryx.solver.data.files import file_dataset

        return _augment(file_dataset(full, base_dir), full["augment"])
    from pontryx.solver.data.synthetic import synthetic

    return synthetic(name, full)


def _augment(data: Dataset, spec) -> Dataset:
    """``data`` with the training set augmented by ``spec`` (the ``augment`` key)."""
    try:
        spec = augmentation(spec, data.input_shape)
    except InputError as e:
        raise e.under("augment") from None
    if spec is None:
        return data
    X, y = augmented(data.X_train, data.y_train, data.input_shape, spec)
    parts = [f"shifts up to {spec['shifts']} px"] if spec["shifts"] else []
    if (angles := list(spec["rotations"])) and len(angles) <= 6:
        parts.append(f"rotations {angles} deg")
    elif angles:  # a summary line, not thousands of angles
        parts.append(f"{len(angles)} rotations from {min(angles):g} to {max(angles):g} deg")
    copies = len(X) // data.n_train - 1
    text = f"{data.description}; training set augmented ({', '.join(parts) or 'no copies'}: "
    text += f"{copies} copies of each image, {len(X)} samples)"
    lo, hi = data.feature_range  # the zero fill may lie outside a file's range
    bounds = (min(lo, float(X.min())), max(hi, float(X.max())))
    return dataclasses.replace(data, X_train=X, y_train=y, feature_range=bounds, description=text)
